"""verl 0.9.1's default (V1) trainer: its real `fit()` with LPPO, on local Ray and the real
TransferQueue, resumed from verl's own checkpoint.

What runs is verl's code: `TaskRunnerV1.run` (in this process, playing the Ray TaskRunner
actor), `PPOTrainerSync.fit()` / `step()` (`ReplayBuffer.sample`, `_balance_batch`,
`_compute_old_log_prob`, `_compute_advantage` with the `lppo_grpo` estimator,
`_update_actor`, `_compute_metrics`, `_save_checkpoint`, `_load_checkpoint`), the
`create_rl_sampler` global and `StatefulDataLoader`, TransferQueue (controller and storage
unit as Ray actors), LPPO's `LPPOAgentLoopManager` built by `TaskRunnerV1` from
`agent_loop_manager_class`, verl's `AgentLoopWorkerTQ` and `RewardLoopWorker` Ray actors
(single-turn agent loop, chat template, tokenization, the test's rule scorer), and verl's
load balancer and `LLMServerClient`.

Replaced, because they need GPUs: the LLM server (`verl_fake_llm.FakeLLMServer`, a Ray
actor the load balancer routes to in place of a vLLM replica), the FSDP actor worker group
(`ActorWG`: its methods go through verl's own `tqbridge`, so they read and write
TransferQueue as the real workers do; log-probs are zeros and the update records what it
was given instead of training) and the weight sync to the LLM servers (`WeightSync`, a
recorder). These are built by `cpu_setup`, which replaces `PPOTrainer._setup`'s worker
group, LLM server and checkpoint-engine steps and keeps its other steps.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("verl")
pytest.importorskip("transfer_queue")
ray = pytest.importorskip("ray")

import torch  # noqa: E402
from test_verl import (  # noqa: E402,F401  (_restore_verl_globals, model_dir: fixtures)
    N,
    _restore_verl_globals,
    assert_same_stats,
    model_dir,
    v1_config,
)
from verl.trainer.ppo import core_algos  # noqa: E402

from lppo_sampling import GroupResults, make_strategy  # noqa: E402
from lppo_sampling.integrations import verl as lv  # noqa: E402
from lppo_sampling.roles import NoGuide  # noqa: E402

pytestmark = pytest.mark.integration

GROUP = 2      # actor_rollout_ref.rollout.n (test_verl.compose)
BATCH = 4      # data.train_batch_size


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 logical CPUs (TransferQueue's controller and its one storage unit
    take one each; verl's worker actors ask for none), no dashboard, a small object store."""
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    if ray.is_initialized():
        pytest.skip("Ray is already running in this process")
    env = dict(get_ppo_ray_runtime_env()["env_vars"])
    env.update(TRANSFER_QUEUE_ENABLE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                        os.environ.get("PYTHONPATH")])))
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False,
             object_store_memory=96 * 2**20, runtime_env={"env_vars": env},
             log_to_driver=False)
    yield
    ray.shutdown()


class ActorWG:
    """The actor worker group on CPU: zero log-probs; the update records its input.

    Both methods are wrapped in verl's `tqbridge` (what `@register` puts on the real
    worker methods), so a `KVBatchMeta` comes in, the fields are read from TransferQueue,
    and the log-probs are written back to it."""

    def __init__(self):
        from verl.utils.transferqueue_utils import tqbridge

        self._dispatch_info = {"actor": [0, 1]}   # two data-parallel ranks for _balance_batch
        self.updates, self.saved, self.loaded = [], [], []
        self.compute_log_prob = tqbridge()(self._log_prob)
        self.update_actor = tqbridge()(self._update)

    @staticmethod
    def _log_prob(data):
        from tensordict import TensorDict

        ids = data["input_ids"]
        zeros = torch.nested.as_nested_tensor([torch.zeros(len(r)) for r in ids.unbind()],
                                              layout=torch.jagged)
        return TensorDict({"log_probs": zeros, "entropy": zeros.clone()}, batch_size=len(ids))

    def _update(self, data):
        from verl.utils import tensordict_utils as tu

        self.updates.append(data)
        return tu.get_tensordict({}, non_tensor_dict={"metrics": {"mfu": 0.0}})

    def save_checkpoint(self, local_path, *a, **k):
        self.saved.append(local_path)

    def load_checkpoint(self, local_path, *a, **k):
        self.loaded.append(local_path)


class WeightSync:
    """CheckpointEngineManager stand-in: no weights move; like the real rollout update, it
    tells the server its new weight version (`set_global_steps`). Calls are recorded."""

    def __init__(self, server):
        self.server, self.updates = server, []

    def update_weights(self, global_steps=None):
        self.updates.append(global_steps)
        ray.get(self.server.set_global_steps.remote(global_steps))

    def sleep_replicas(self):
        pass


def cpu_setup(server, wg, sync):
    """`PPOTrainer._setup` with its GPU steps replaced (see the module docstring)."""
    import types

    from verl.experimental.reward_loop import RewardLoopManager
    from verl.workers.rollout.llm_server import LLMServerManager

    class OneFakeServer(LLMServerManager):
        rollout_replica_class = None   # (the real one resolves vLLM's replica class)

        async def _initialize_llm_servers(self, start_rank=None):
            self.rollout_replicas, self.server_handles = [], [server]
            self.server_addresses = ["fake-llm:0"]

    def setup(self):
        self._init_tokenizer()
        self._init_dataloader()
        self._init_dump_executor()
        self.resource_pool_manager = types.SimpleNamespace(get_n_gpus=lambda: 1)
        self.ref_in_actor = False
        assert not (self.use_critic or self.use_reference_policy or self.use_teacher_policy)
        self.actor_rollout_wg = wg
        self.reward_loop_manager = RewardLoopManager(config=self.config, rm_resource_pool=None)
        self.teacher_model_manager = self.distillation_config = None
        self.llm_server_manager = OneFakeServer.create(config=self.config, worker_group=wg)
        self.checkpoint_manager = sync
        self.checkpoint_manager.sleep_replicas()
        self._load_checkpoint()

    return setup


def run_v1(config, server):
    """verl's TaskRunnerV1.run, in this process, on the CPU setup; its actors are then
    stopped. Returns (runner, actor worker group, weight sync)."""
    import verl.trainer.main_ppo as main_ppo
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    wg, sync = ActorWG(), WeightSync(server)
    runner = main_ppo.TaskRunnerV1.__ray_metadata__.modified_class()
    try:
        with mock.patch.object(PPOTrainer, "_setup", cpu_setup(server, wg, sync)):
            runner.run(config)
    finally:
        handles = []
        if runner.agent_loop_manager is not None:
            handles += runner.agent_loop_manager.agent_loop_workers
        if runner.trainer is not None and hasattr(runner.trainer, "reward_loop_manager"):
            handles += runner.trainer.reward_loop_manager.reward_loop_workers
            handles.append(runner.trainer.llm_server_manager.global_load_balancer)
        for h in handles:
            ray.kill(h)
    return runner, wg, sync


def update_rows(td):
    """Per-row view of what reached the actor update."""
    from verl.utils import tensordict_utils as tu

    uids = [str(u) for u in tu.get(td, "uid")]
    return {"uid": uids, "keys": np.array([int(k) for k in tu.get(td, "index")]),
            "scores": np.array([float(r.sum()) for r in td["rm_scores"].unbind()]),
            "prefix": [(e or {}).get("prefix", "") for e in tu.get(td, "extra_fields")],
            "rm": td["rm_scores"], "mask": td["response_mask"], "adv": td["advantages"]}


def fresh_replay(name="lp_weighting"):
    """The strategy the run's sampler builds from its config, fresh."""
    replay = make_strategy(name, group_size=GROUP, seed=0)
    replay.add_samples(np.arange(N) * 10, has_solution=np.ones(N, bool))
    return replay


def sampler_state(state):
    """The LPPOSampler state inside the StatefulDataLoader state V1 saves as data.pt."""
    if isinstance(state, dict):
        if "strategy" in state and "batch_size" in state:
            return state
        for v in state.values():
            found = sampler_state(v)
            if found is not None:
                return found
    return None


def check_steps(updates, replay, llm_prompts, tokenizer, first_step=1):
    """Each update: the batch is what `replay` (a fresh strategy fed the same rewards)
    selects, the prompts the LLM saw are that batch's, the guided slots are the ones its
    plan guides (prefix on the prompt side, observed as guided), and the advantages are
    GRPO's × replay's weights. Returns the weights of each step."""
    pad = torch.nn.utils.rnn.pad_sequence
    factors = []
    for n, td in enumerate(updates):
        step = first_step + n
        rows = update_rows(td)
        picked = replay.select(BATCH)
        want = np.repeat(picked, GROUP)
        assert sorted(rows["keys"].tolist()) == sorted(want.tolist()), f"step {step}"
        sent = [tokenizer.decode(p)
                for p in llm_prompts[n * BATCH * GROUP:(n + 1) * BATCH * GROUP]]
        asked = [10 * int(t.split("What is ")[-1].split("+")[0]) for t in sent]
        assert sorted(asked) == sorted(want.tolist())
        # V1's own prompt uids (uuid4), never tagged: the key came from the manager's map
        assert not any(lv._UID_SEP in u for u in rows["uid"])
        guided = np.array([bool(p) for p in rows["prefix"]])
        if not isinstance(replay.guide, NoGuide):
            ratios = replay.plan(picked).prefix_ratios
            plan = {int(k): int((ratios[b] > 0).sum()) for b, k in enumerate(picked)}
            got = {k: int(guided[rows["keys"] == k].sum()) for k in plan}
            assert got == plan, f"step {step}: guided slots {got}, plan {plan}"
            assert sum("Step 1: add" in t for t in sent) == int(guided.sum())  # what the LLM got
        for r in np.flatnonzero(guided):
            i = rows["keys"][r] // 10
            prefix = rows["prefix"][r]
            assert prefix == f"Step 1: add {i} and {i}.\n"
            ids = tokenizer.encode(prefix, add_special_tokens=False)
            assert td["prompts"][r].tolist()[-len(ids):] == ids    # context: the prompt's tail
            resp = td["responses"][r].tolist()
            assert len(resp) == int(td["response_mask"][r].sum())
            assert "Step" not in tokenizer.decode(resp)            # ... never a trained token
            assert rows["scores"][r] == 1.0
        replay.observe(GroupResults.from_flat(rows["keys"], rows["scores"], guided=guided))
        w = replay.weights(rows["keys"]) * replay.keep(rows["keys"])
        rm = pad(list(rows["rm"].unbind()), batch_first=True)
        mask = pad(list(rows["mask"].unbind()), batch_first=True)
        base, _ = core_algos.compute_grpo_outcome_advantage(
            rm, mask, np.asarray(rows["uid"], dtype=object))
        adv = pad(list(rows["adv"].unbind()), batch_first=True)
        torch.testing.assert_close(adv, base * torch.as_tensor(w, dtype=base.dtype)[:, None])
        factors.append(w)
    return factors


def test_v1_fit_runs_lppo_and_resumes_from_verl_checkpoint(model_dir, tmp_path,  # noqa: F811
                                                            local_ray) -> None:
    """V1's fit() for 3 steps: the strategy picks each batch, observes every response's
    reward under its sample key, and its weights scale the advantages the actor is given;
    verl's checkpoint holds the sampler, and a resumed fit() continues it exactly."""
    from transformers import AutoTokenizer
    from verl_fake_llm import FakeLLMServer

    overrides = ["actor_rollout_ref.rollout.agent.num_workers=1", "reward.num_workers=1",
                 "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
                 "trainer.resume_mode=auto"]
    config = v1_config(model_dir, tmp_path, *overrides, "trainer.total_training_steps=3")
    server = FakeLLMServer.remote(model_dir)
    runner, wg, sync = run_v1(config, server)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = runner.trainer
    sampler = trainer.train_dataloader.sampler
    assert isinstance(sampler, lv.LPPOSampler) and sampler.v1_ready
    assert trainer.global_steps == 4 and len(wg.updates) == 3 and sync.updates == [0, 1, 2, 3]
    replay = fresh_replay()
    factors = check_steps(wg.updates, replay, ray.get(server.recorded.remote()), tokenizer)
    assert any(not np.allclose(f, 1.0) for f in factors)       # the weights took effect
    strat = sampler.strategy
    assert_same_stats(strat, replay)                             # each reward seen once
    k, c = np.unique(np.concatenate([update_rows(td)["keys"] for td in wg.updates]),
                     return_counts=True)
    assert strat.stats["n_rollouts"][strat.stats.rows(k)].tolist() == c.tolist()
    assert sampler._uid_keys == {}
    # verl's _save_checkpoint wrote the sampler with the data loader state (data.pt)
    ckpt = tmp_path / "ckpt"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "3"
    saved = sampler_state(torch.load(ckpt / "global_step_3" / "data.pt", weights_only=False))
    probe = fresh_replay()
    probe.load_state_dict(saved["strategy"])
    assert probe.state_checksum() == strat.state_checksum()

    # a new run on the same checkpoint dir: verl's _load_checkpoint resumes at step 3 and the
    # sampler continues where it stopped (its statistics and RNG came from data.pt)
    config2 = v1_config(model_dir, tmp_path, *overrides, "trainer.total_training_steps=5")
    runner2, wg2, _ = run_v1(config2, server)
    assert wg2.loaded == [str(ckpt / "global_step_3" / "actor")]
    assert runner2.trainer.global_steps == 6 and len(wg2.updates) == 2
    prompts = ray.get(server.recorded.remote())[3 * BATCH * GROUP:]
    check_steps(wg2.updates, replay, prompts, tokenizer, first_step=4)  # same replay
    strat2 = runner2.trainer.train_dataloader.sampler.strategy
    assert_same_stats(strat2, replay)
    assert strat2.stats["n_rollouts"].sum() == 5 * BATCH * GROUP


def test_v1_fit_guides_planned_slots_with_prompt_side_prefixes(model_dir, tmp_path,  # noqa: F811
                                                                local_ray) -> None:
    """LPPO with prefix guidance under V1's fit(): odd problems fail their first group, so
    the plan guides slots when they come back; each guided session (and only those) starts
    from the expert prefix as prompt context, is scored and observed as guided."""
    from transformers import AutoTokenizer
    from verl_fake_llm import FakeLLMServer

    config = v1_config(model_dir, tmp_path, "actor_rollout_ref.rollout.agent.num_workers=1",
                       "reward.num_workers=1", "trainer.save_freq=-1",
                       "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
                       "trainer.total_training_steps=3", strategy="lppo")
    server = FakeLLMServer.remote(model_dir)
    runner, wg, _ = run_v1(config, server)
    assert len(wg.updates) == 3
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    replay = fresh_replay("lppo")
    check_steps(wg.updates, replay, ray.get(server.recorded.remote()), tokenizer)
    strat = runner.trainer.train_dataloader.sampler.strategy
    assert_same_stats(strat, replay)
    guided = sum(bool(p) for td in wg.updates for p in update_rows(td)["prefix"])
    assert guided > 0 and int(strat.stats["guided_rollouts"].sum()) == guided
