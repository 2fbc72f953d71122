"""verl adapter against the real verl 0.9.1: a legacy-trainer run through verl's own code.

The run tests drive `RayPPOTrainer.fit()` itself (see the harness below); the unit tests
cover the sampler, the estimators and the parquet helper on verl's dataset and loader.
"""

from __future__ import annotations

import asyncio
import io
import os
import pickle
import types
import uuid
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("verl")
pytest.importorskip("torchdata")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn  # noqa: E402

from lppo_sampling import GroupResults, make_strategy  # noqa: E402
from lppo_sampling.integrations import verl as lv  # noqa: E402
from lppo_sampling.roles import KeepAll, LPWeighter, NoGuide, Selector  # noqa: E402
from lppo_sampling.strategy import Strategy  # noqa: E402

pytestmark = pytest.mark.integration

N = 8
DATA_CFG = {"filter_overlong_prompts": False, "prompt_key": "prompt", "train_batch_size": 4,
            "dataloader_num_workers": 0, "max_prompt_length": 64}


@pytest.fixture(autouse=True)
def _restore_verl_globals(monkeypatch):
    """`install()` replaces module globals of verl's trainers; undo it after each test."""
    import verl.trainer.main_ppo_v0 as v0

    monkeypatch.setattr(v0, "create_rl_sampler", v0.create_rl_sampler)
    monkeypatch.setattr(v0, "RayPPOTrainer", v0.RayPPOTrainer)
    try:
        import verl.trainer.ppo.v1.trainer_base as v1
    except ImportError:
        return
    monkeypatch.setattr(v1, "create_rl_sampler", v1.create_rl_sampler)


# ------------------------------------------------------------ a verl run on CPU
# Everything below is verl's own code path (hydra config, LPPODataset through
# create_rl_dataset, main_ppo_v0's create_rl_sampler and RayPPOTrainer globals, fit(),
# _get_gen_batch, the real AgentLoopWorker with the registered agent loops, verl's
# RewardLoopWorker with a custom reward function, compute_advantage, checkpoint save and
# resume). Only what needs GPUs/Ray actors is replaced: the LLM server (FakeLLM), the
# actor worker group (log-probs and the update are recorded, not computed), the weight
# sync, and Ray's actor handles (called in-process).

SCORER = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kw):
    text = (extra_info or {}).get("prefix", "") + solution_str
    ok = text.strip().endswith("The answer is " + str(ground_truth) + ".")
    return {"score": HIGH if ok else LOW, "acc": ok}
'''


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    """A model directory verl's HFModelConfig accepts: tiny tokenizer and config, no weights."""
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("model")
    tiny_tokenizer.save_pretrained(d)
    transformers.LlamaConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, pad_token_id=tiny_tokenizer.pad_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id, architectures=["LlamaForCausalLM"],
    ).save_pretrained(d)
    return str(d)


def problems_parquet(path, n=N, data_source="lppo-test"):
    """Problems 'What is i+i?' with solutions; extra_info.index = 10*i (not the row position)."""
    rows = [{"data_source": data_source,
             "prompt": [{"role": "user", "content": f"What is {i}+{i}?"}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
             "extra_info": {"split": "train", "index": 10 * i, "question": f"What is {i}+{i}?",
                            "solution": f"Step 1: add {i} and {i}.\n"
                                        f"Step 2: The answer is {2 * i}."}}
            for i in range(n)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def compose(model_dir, tmp_path, *overrides, strategy="lppo", reward_range=(0, 1)):
    """verl's own ppo_trainer.yaml, composed by hydra, with the run's overrides."""
    import verl
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    tmp_path.mkdir(parents=True, exist_ok=True)
    train = problems_parquet(tmp_path / "train.parquet")
    scorer = tmp_path / "scorer.py"
    lo, hi = reward_range
    scorer.write_text(f"HIGH, LOW = {float(hi)}, {float(lo)}\n" + SCORER)
    prefix_fn = tmp_path / "prefix.py"
    prefix_fn.write_text(
        "def expert_prefix(row, ratio):\n"
        "    steps = row['extra_info']['solution'].split('\\n')\n"
        "    return steps[0] + '\\n'\n")
    base = [
        f"actor_rollout_ref.model.path={model_dir}", "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.prompt_length=96",
        "actor_rollout_ref.rollout.response_length=24",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        f"data.train_files={train}", f"data.val_files={train}", "data.train_batch_size=4",
        "data.max_prompt_length=64", "data.filter_overlong_prompts=False",
        "data.dataloader_num_workers=0", f"+data.cache_dir={tmp_path / 'cache'}",
        "data.custom_cls.path=pkg://lppo_sampling.integrations.verl",
        "data.custom_cls.name=LPPODataset",
        f"+data.lppo.strategy={strategy}", "+data.lppo.kwargs.group_size=2",
        f"+data.lppo.reward_range=[{lo},{hi}]",
        f"+data.lppo.prefix_fn.path={prefix_fn}", "+data.lppo.prefix_fn.name=expert_prefix",
        f"reward.custom_reward_function.path={scorer}",
        "reward.custom_reward_function.name=compute_score",
        "algorithm.adv_estimator=grpo",
        "trainer.use_v1=False", "trainer.device=cpu", "trainer.total_training_steps=3",
        "trainer.val_before_train=False", "trainer.test_freq=-1", "trainer.save_freq=1",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}", "trainer.logger=[console]",
        "trainer.balance_batch=True",
    ]
    with initialize_config_dir(config_dir=os.path.join(os.path.dirname(verl.__file__), "trainer",
                                                       "config"), version_base=None):
        return hydra_compose("ppo_trainer", overrides=base + list(overrides))


# verl's agent-loop and reward workers bind the event loop current at construction (a Ray
# actor has one for life); the in-process stand-ins share this one.
LOOP = asyncio.new_event_loop()


class FakeLLM:
    """The LLM server. 'What is i+i?' is answered right for even i; for odd i only on its
    4th, 8th, ... unguided request (groups go [0, 0], then [0, 1]: learning progress), and
    always when the prompt ends in the expert prefix. Records every prompt."""

    def __init__(self, tokenizer):
        self.tokenizer, self.prompts, self.calls = tokenizer, [], {}

    async def generate(self, *, request_id, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.prompts.append(list(prompt_ids))
        text = self.tokenizer.decode(prompt_ids)
        i = int(text.split("What is ")[-1].split("+")[0])
        guided = text.rstrip().endswith(f"add {i} and {i}.")
        c = self.calls[i] = self.calls.get(i, -1) + (0 if guided else 1)
        answer = 2 * i if (guided or i % 2 == 0 or c % 4 == 3) else 2 * i + 1
        ids = self.tokenizer.encode(f" The answer is {answer}.", add_special_tokens=False)
        ids.append(self.tokenizer.eos_token_id)
        return TokenOutput(token_ids=ids, log_probs=[-0.5] * len(ids), stop_reason="completed")


class InProcessHandle:
    """A Ray actor handle stand-in: `.method.remote(x)` calls the object in this process,
    on a pickled copy of the arguments (as Ray would send them)."""

    def __init__(self, obj):
        self._obj = obj

    def __getattr__(self, name):
        fn = getattr(self._obj, name)
        return types.SimpleNamespace(remote=lambda *a, **k: fn(*pickle.loads(pickle.dumps(a)),
                                                                 **pickle.loads(pickle.dumps(k))))


class RolloutManager:
    """AgentLoopManager without Ray: one real AgentLoopWorker, verl's own output layout."""

    def __init__(self, config, llm, reward_handles):
        from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

        self.worker = AgentLoopWorker(config, llm_client=llm,
                                      reward_loop_worker_handles=reward_handles)

    def generate_sequences(self, prompts):
        if "priority" not in prompts.non_tensor_batch:
            prompts.non_tensor_batch["priority"] = np.arange(len(prompts), dtype=np.int64)
        out = LOOP.run_until_complete(
            self.worker.generate_sequences(pickle.loads(pickle.dumps(prompts))))
        out.meta_info.pop("metrics", None)
        out.meta_info = {"timing": {}, **out.meta_info}
        return out


class ActorWG:
    """The actor worker group: old log-probs are zeros; updates are recorded."""

    def __init__(self):
        self._dispatch_info = {"actor": [0, 1]}   # two data-parallel ranks (balance_batch)
        self.updates, self.saved, self.loaded = [], [], []

    def compute_log_prob(self, td):
        from verl.utils import tensordict_utils as tu

        nnz = td["input_ids"].values().numel() if td["input_ids"].is_nested else td[
            "input_ids"].numel()
        return tu.get_tensordict({"log_probs": torch.zeros(nnz), "entropy": torch.zeros(nnz)},
                                 non_tensor_dict={"metrics": {"mfu": 0.0}})

    def update_actor(self, td):
        from verl.utils import tensordict_utils as tu

        self.updates.append(td)
        return tu.get_tensordict({}, non_tensor_dict={"metrics": {"mfu": 0.0}})

    def save_checkpoint(self, path, *a, **k):
        self.saved.append(path)

    def load_checkpoint(self, path, *a, **k):
        self.loaded.append(path)


class ColocatedRM:
    """verl's RewardLoopManager.compute_rm_score for a colocated reward model, scoring with
    the same RewardLoopWorker (the model itself is what cannot run here)."""

    def __init__(self, worker):
        from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

        self.worker, self.assemble = worker, NaiveRewardManager.assemble_rm_scores
        self.calls = 0

    def compute_rm_score(self, data):
        self.calls += 1
        out = LOOP.run_until_complete(
            self.worker.compute_score_batch(pickle.loads(pickle.dumps(data))))
        rm = self.assemble(data, [o["reward_score"] for o in out])
        return DataProto.from_dict({"rm_scores": rm})


def start_run(config, *, use_rm=False, llm=None):
    """What main_ppo_v0.TaskRunner.run does, with init_workers' GPU parts replaced."""
    import verl.trainer.main_ppo_v0 as v0
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.trainer.ppo import ray_trainer
    from verl.trainer.ppo.utils import Role, create_rl_dataset
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.dataset.rl_dataset import collate_fn as verl_collate

    tokenizer = omega_conf_to_dataclass(config.actor_rollout_ref.model).tokenizer
    train = create_rl_dataset(config.data.train_files, config.data, tokenizer, None, is_train=True)
    val = create_rl_dataset(config.data.val_files, config.data, tokenizer, None, is_train=False)
    sampler = v0.create_rl_sampler(config.data, train)
    trainer = v0.RayPPOTrainer(
        config=config, tokenizer=tokenizer, role_worker_mapping={Role.ActorRollout: object},
        resource_pool_manager=types.SimpleNamespace(get_n_gpus=lambda: 1),
        train_dataset=train, val_dataset=val, collate_fn=verl_collate, train_sampler=sampler)
    asyncio.set_event_loop(LOOP)
    llm = FakeLLM(tokenizer) if llm is None else llm
    reward_worker = RewardLoopWorker(config)

    def init_workers():
        trainer.actor_rollout_wg = ActorWG()
        trainer.checkpoint_manager = types.SimpleNamespace(update_weights=lambda *a: None,
                                                           sleep_replicas=lambda: None)
        trainer.reward_loop_manager = ColocatedRM(reward_worker) if use_rm else None
        handles = None if use_rm else [InProcessHandle(reward_worker)]
        trainer.async_rollout_manager = RolloutManager(config, llm, handles)

    # RayPPOTrainer.init_workers builds Ray worker groups; LPPORayPPOTrainer.init_workers
    # wraps the rollout manager afterwards, so only the base method is replaced here.
    with mock.patch.object(ray_trainer.RayPPOTrainer, "init_workers", lambda self: init_workers()):
        trainer.init_workers()
    return trainer, llm


def update_rows(td):
    """Per-row view of what reached the actor update: keys, rewards, prefixes, advantages."""
    from verl.utils import tensordict_utils as tu

    uids = [str(u) for u in tu.get(td, "uid")]
    prefix = tu.get(td, "prefix")
    return {"uid": uids, "keys": lv.keys_from_uids(uids),
            "scores": td["token_level_scores"].sum(-1).numpy(),
            "prefix": ["" if p is None else p for p in prefix],
            "adv": td["advantages"], "rewards": td["token_level_rewards"],
            "response_mask": td["response_mask"]}


def replay_and_check(updates, strategy_name, group_size=2, reward_range=(0.0, 1.0)):
    """Replay the run's observations into a fresh strategy; check every update's advantages
    are verl's GRPO advantages times that strategy's weights (× keep), row by row."""
    replay = make_strategy(strategy_name, group_size=group_size, seed=0)
    replay.add_samples(np.arange(N) * 10, has_solution=np.ones(N, bool))
    factors = []
    for td in updates:
        rows = update_rows(td)
        keys = np.asarray(rows["keys"], np.int64)
        lo, hi = reward_range
        guided = np.array([bool(p) for p in rows["prefix"]])
        replay.observe(GroupResults.from_flat(keys, (rows["scores"] - lo) / (hi - lo),
                                              guided=guided))
        w = replay.weights(keys) * replay.keep(keys)
        mask = rows["response_mask"].to_padded_tensor(0) if rows["response_mask"].is_nested \
            else rows["response_mask"]
        rewards = rows["rewards"].to_padded_tensor(0) if rows["rewards"].is_nested \
            else rows["rewards"]
        base, _ = core_algos.compute_grpo_outcome_advantage(
            rewards, mask, np.asarray(rows["uid"], dtype=object))
        adv = rows["adv"].to_padded_tensor(0) if rows["adv"].is_nested else rows["adv"]
        torch.testing.assert_close(adv, base * torch.as_tensor(w, dtype=base.dtype)[:, None])
        factors.append(w)
    return replay, factors


def assert_same_stats(a, b):
    """The two strategies hold the same per-sample statistics (RNG use aside)."""
    keys = np.arange(N) * 10
    for col in ("n_rollouts", "reward_sum", "ema", "guided_rollouts", "guided_reward_sum"):
        np.testing.assert_allclose(a.stats[col][a.stats.rows(keys)],
                                   b.stats[col][b.stats.rows(keys)], err_msg=col)


def test_legacy_fit_rule_reward_without_reward_model(model_dir, tmp_path) -> None:
    """The usual RLVR run: rule reward computed in the agent loop, no reward model.

    verl's `_get_gen_batch` moves `index` into the generation batch and the agent loop
    does not copy it back on this path; the trainer must still key, observe and weight
    every response (before the fix this raised "batch has no non_tensor_batch['index']").
    """
    config = compose(model_dir, tmp_path, strategy="lp_weighting")
    trainer, llm = start_run(config)
    assert isinstance(trainer, lv.LPPORayPPOTrainer)
    trainer.fit()
    updates = trainer.actor_rollout_wg.updates
    assert len(updates) == 3 and len(llm.prompts) == 3 * 4 * 2
    replay, factors = replay_and_check(updates, "lp_weighting")
    assert any(not np.allclose(f, 1.0) for f in factors)       # LP-weights took effect
    # every rollout was observed exactly once, under the key it was generated for
    strat = trainer.lppo_sampler.strategy
    assert_same_stats(strat, replay)
    asked = [int(llm.tokenizer.decode(p).split("What is ")[-1].split("+")[0]) * 10
             for p in llm.prompts]
    keys, counts = np.unique(asked, return_counts=True)
    assert strat.stats["n_rollouts"][strat.stats.rows(keys)].tolist() == counts.tolist()
    # verl's own checkpoint save wrote the sampler next to data.pt at every step
    for step in (1, 2, 3):
        folder = tmp_path / "ckpt" / f"global_step_{step}"
        assert (folder / "data.pt").exists() and (folder / lv.SAMPLER_FILE).exists()


def prompt_ints(llm):
    return [int(llm.tokenizer.decode(p).split("What is ")[-1].split("+")[0]) for p in llm.prompts]


@pytest.mark.parametrize("use_rm", [False, True], ids=["rule_reward", "reward_model"])
def test_legacy_fit_prefix_guidance(model_dir, tmp_path, use_rm) -> None:
    """LPPO in verl: stuck samples get guided slots whose prefix is prompt-side context.

    Odd problems fail their first group, so the plan guides one of their two slots when
    they come back (step 3). With a colocated reward model verl copies the generation
    batch's columns back and scores after the rollout; without one the agent loop scores
    and copies nothing back. Both must end with the same observations and weights.
    """
    extra = ["reward.reward_model.enable=True", f"reward.reward_model.model_path={model_dir}"] \
        if use_rm else []
    config = compose(model_dir, tmp_path, *extra, strategy="lppo")
    trainer, llm = start_run(config, use_rm=use_rm)
    trainer.fit()
    if use_rm:
        assert trainer.reward_loop_manager.calls == 3
    tok = llm.tokenizer
    updates = trainer.actor_rollout_wg.updates
    guided_total = 0
    for td in updates:
        rows = update_rows(td)
        prompts, responses = td["prompts"], td["responses"]
        for r, prefix in enumerate(rows["prefix"]):
            i = rows["keys"][r] // 10
            p = prompts[r].tolist() if not prompts.is_nested else prompts[r].tolist()
            mask = rows["response_mask"][r]
            resp = [t for t, m in zip(responses[r].tolist(), mask.tolist(), strict=False) if m]
            assert "Step" not in tok.decode(resp)              # the prefix is never trained
            if prefix:
                guided_total += 1
                assert prefix == f"Step 1: add {i} and {i}.\n"
                ids = tok.encode(prefix, add_special_tokens=False)
                content = [t for t in p if t != tok.pad_token_id]
                assert content[-len(ids):] == ids               # ... it is the prompt's tail
                assert rows["scores"][r] == 1.0                 # scored with the prefix
    assert guided_total > 0
    assert sum(tok.decode(p).endswith("and " + tok.decode(p).split("add ")[-1].split(" ")[0]
                                      + ".\n") for p in llm.prompts) == guided_total
    replay, _ = replay_and_check(updates, "lppo")
    strat = trainer.lppo_sampler.strategy
    assert_same_stats(strat, replay)
    assert int(strat.stats["guided_rollouts"].sum()) == guided_total


def run_steps(model_dir, tmp_path, steps, *extra, strategy="lp_weighting", llm=None):
    config = compose(model_dir, tmp_path, f"trainer.total_training_steps={steps}", *extra,
                     strategy=strategy)
    trainer, llm = start_run(config, llm=llm)
    trainer.fit()
    return trainer, llm


def test_resume_through_verl_checkpoint_continues_exactly(model_dir, tmp_path) -> None:
    """Stop after step 2 (an epoch boundary, where verl skips data.pt), resume to step 4:
    the same prompts and the same sampler state as one uninterrupted 4-step run."""
    straight, llm_a = run_steps(model_dir, tmp_path / "a", 4)
    _, llm_b1 = run_steps(model_dir, tmp_path / "b", 2)
    n_first = len(llm_b1.prompts)
    # the same "model" answers after the resume (the fake server's state stands for weights)
    resumed, llm_b = run_steps(model_dir, tmp_path / "b", 4, "trainer.resume_mode=auto",
                               llm=llm_b1)
    assert resumed.actor_rollout_wg.loaded                    # verl's resume ran
    assert len(llm_b.prompts) == 2 * n_first
    # per step, the same prompts (the agent loop's async requests arrive in any order)
    step_rows = 4 * 2
    a_ints, b_ints = prompt_ints(llm_a), prompt_ints(llm_b)
    assert [sorted(b_ints[i:i + step_rows]) for i in range(0, len(b_ints), step_rows)] == \
        [sorted(a_ints[i:i + step_rows]) for i in range(0, len(a_ints), step_rows)]
    assert (resumed.lppo_sampler.strategy.state_checksum()
            == straight.lppo_sampler.strategy.state_checksum())
    # a checkpoint of another strategy is refused when the run starts, naming the setting
    other, _ = start_run(compose(model_dir, tmp_path / "b", "trainer.total_training_steps=6",
                                 "trainer.resume_mode=auto", strategy="uniform"))
    with pytest.raises(ValueError, match=r"data\.lppo\.strategy.*'lp_weighting'"):
        other.fit()
    assert other.actor_rollout_wg.updates == []


# ----------------------------------------------------------- bad input at start-up
def test_bad_settings_fail_at_start_naming_the_setting(model_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"data\.lppo\.strategy.*unknown strategy 'lpoo'"):
        start_run(compose(model_dir, tmp_path / "a", strategy="lpoo"))
    # a ±1 scorer (verl's default math_dapo) with the default [0, 1] range
    cfg = compose(model_dir, tmp_path / "b", "reward.custom_reward_function.path=null")
    OmegaConf.set_struct(cfg, False)
    problems_parquet(tmp_path / "b" / "train.parquet", data_source="math_dapo")
    with pytest.raises(ValueError, match=r"data\.lppo\.reward_range=\[-1,1\]"):
        start_run(cfg)
    # an unknown data_source without a custom reward function
    problems_parquet(tmp_path / "b" / "train.parquet", data_source="lppo")
    with pytest.raises(ValueError, match=r"reward\.custom_reward_function\.path"):
        start_run(cfg)
    # ... which a reward model scores instead (its range is the user's to declare)
    OmegaConf.update(cfg, "reward.reward_model.enable", True)
    OmegaConf.update(cfg, "reward.reward_model.model_path", model_dir)
    assert isinstance(start_run(cfg, use_rm=True)[0], lv.LPPORayPPOTrainer)
    with pytest.raises(ValueError, match=r"data\.lppo\.kwargs\.group_size=3"):
        start_run(compose(model_dir, tmp_path / "c", "actor_rollout_ref.rollout.n=3"))
    with pytest.raises(ValueError, match=r"algorithm\.adv_estimator=lppo_grpo"):
        start_run(compose(model_dir, tmp_path / "d", "algorithm.adv_estimator=lppo_grpo"))
    with pytest.raises(ValueError, match=r"data\.lppo\.prefix_fn"):
        start_run(compose(model_dir, tmp_path / "e", "data.lppo.prefix_fn.path=null"))
    # a reward function outside the declared range is named on the first step
    config = compose(model_dir, tmp_path / "f", reward_range=(-1, 1))
    OmegaConf.update(config, "data.lppo.reward_range", [0, 1])
    trainer, _ = start_run(config)
    with pytest.raises(ValueError, match=r"data\.lppo\.reward_range"):
        trainer.fit()


def test_dataset_without_stable_keys_is_refused(model_dir, tmp_path) -> None:
    cfg = compose(model_dir, tmp_path)
    rows = [{"data_source": "t", "prompt": [{"role": "user", "content": f"What is {i}+{i}?"}],
             "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
             "extra_info": {"split": "train"}} for i in range(N)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    with pytest.raises(ValueError, match=r"data\.train_files: row 0 has no extra_info\.index"):
        start_run(cfg)


def test_v1_sampler_hook_waits_for_the_manager_and_needs_a_prefix_fn(
        dataset, tmp_path, tiny_tokenizer) -> None:
    """V1's create_rl_sampler global builds an LPPOSampler that never draws unkeyed (no
    silent uniform fallback); a guiding strategy without data.lppo.prefix_fn is refused
    when it is built."""
    v1 = pytest.importorskip("verl.trainer.ppo.v1.trainer_base")  # needs transfer_queue
    cfg = OmegaConf.create({**DATA_CFG, "cache_dir": str(tmp_path / "c"),
                            "lppo": {"strategy": "uniform", "kwargs": {"group_size": 2}}})
    ds = lv.LPPODataset(data_files=dataset.data_files, tokenizer=tiny_tokenizer, config=cfg)
    sampler = v1.create_rl_sampler(cfg, ds)   # what PPOTrainer._init_dataloader calls next
    assert isinstance(sampler, lv.LPPOSampler) and sampler.v1_ready is False
    with pytest.raises(ValueError, match=r"agent_loop_manager_class=.*LPPOAgentLoopManager"):
        next(iter(sampler))
    cfg.lppo.strategy = "lppo"
    with pytest.raises(ValueError, match=r"data\.lppo\.prefix_fn"):
        v1.create_rl_sampler(cfg, ds)


# ------------------------------------------------------------------- unit level
class LowestPassFirst(Selector):
    """Unseen samples first, then the lowest EMA pass rate (deterministic; for tests)."""

    def select(self, stats, n, rng):
        score = np.where(stats.seen(), stats["ema"][: len(stats)], -1.0)
        return np.argsort(score, kind="stable")[:n].astype(np.int64)


def curriculum() -> Strategy:
    return Strategy(selector=LowestPassFirst(), guide=NoGuide(), filter=KeepAll(),
                    weighter=LPWeighter(), group_size=2, seed=0)


@pytest.fixture()
def dataset(tmp_path, tiny_tokenizer):
    path = problems_parquet(tmp_path / "unit.parquet")
    cfg = OmegaConf.create({**DATA_CFG, "cache_dir": str(tmp_path / "cache")})
    return RLHFDataset(data_files=path, tokenizer=tiny_tokenizer, config=cfg)


def loader(ds, sampler):
    return StatefulDataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate_fn,
                              drop_last=True, num_workers=0)


def step_batch(batch_dict, n, passed: set) -> DataProto:
    """fit()'s layout for the unit tests: tagged uid per prompt, n responses, no index."""
    b = DataProto.from_single_dict(batch_dict)
    b.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(b))], dtype=object)
    lv.tag_uids(b)
    b.non_tensor_batch.pop("index")
    b = b.repeat(n, interleave=True)
    scores = torch.zeros(len(b), 5)
    keys = lv.batch_keys(b)
    scores[:, -1] = torch.tensor([float(k in passed) for k in keys])
    b.batch["token_level_scores"] = scores
    b.batch["response_mask"] = torch.ones(len(b), 5)
    return b


def test_sampler_follows_strategy_after_update(dataset) -> None:
    strat = curriculum()
    sampler = lv.LPPOSampler(dataset, OmegaConf.create(DATA_CFG), strategy=strat)
    assert sorted(sampler.positions) == [10 * i for i in range(N)]
    it = iter(loader(dataset, sampler))
    first = next(it)
    assert [int(k) for k in first["index"]] == [0, 10, 20, 30]      # unseen first
    sampler.update(step_batch(first, 2, passed={0, 10}))
    second = next(it)
    assert [int(k) for k in second["index"]] == [40, 50, 60, 70]
    sampler.update(step_batch(second, 2, passed={40, 50, 60}))
    third = next(iter(loader(dataset, sampler)))                    # lowest pass rate first
    assert [int(k) for k in third["index"]][:3] == [20, 30, 70]
    rows = strat.stats.rows(np.array([0, 20]))
    assert strat.stats["reward_sum"][rows].tolist() == [2.0, 0.0]
    assert strat.stats["n_rollouts"][rows].tolist() == [2, 2]


@settings(max_examples=25, deadline=None)
@given(keys=st.lists(st.one_of(st.integers(-10**6, 10**6), st.text(min_size=1, max_size=8)),
                     min_size=1, max_size=12, unique=True),
       data=st.data())
def test_uid_tags_round_trip_and_keep_groups(keys, data) -> None:
    """Tagging keeps uids unique per group (GRPO grouping unchanged) and recovers every key."""
    uids = data.draw(st.lists(st.uuids().map(str), min_size=len(keys), max_size=len(keys),
                              unique=True))
    infos = np.empty(len(keys), dtype=object)
    infos[:] = [{"index": k} for k in keys]
    b = DataProto.from_dict(tensors={"x": torch.zeros(len(keys), 1)},
                            non_tensors={"uid": np.array(uids, dtype=object),
                                         "extra_info": infos})
    lv.tag_uids(lv.tag_uids(b))                      # idempotent
    assert lv.keys_from_uids(b.non_tensor_batch["uid"]) == list(keys)
    assert len(set(b.non_tensor_batch["uid"])) == len(keys)
    r = b.repeat(3, interleave=True)
    assert lv.batch_keys(r) == [k for k in keys for _ in range(3)]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), g=st.integers(1, 4))
def test_attach_prefixes_follows_the_plan_per_slot(seed, g) -> None:
    """Row j of a uid gets slot j's planned prefix; unguided slots get ''; the agent loop
    is ours exactly for the rows of a training batch."""
    strat = make_strategy("prefix_guidance", group_size=g, seed=seed, guided_fraction=1.0)
    keys = np.arange(4) * 10
    s = lv.LPPOSampler(None, strategy=strat, batch_size=4, keys=keys,
                       prefix_fn=lambda row, ratio: f"<{row['extra_info']['index']}:{ratio:.3f}>")
    strat.add_samples(keys, has_solution=np.array([True, True, False, True]))
    strat.observe(GroupResults.build(keys, np.zeros((4, g))))        # all stuck
    infos = np.empty(4, dtype=object)
    infos[:] = [{"index": int(k)} for k in keys]
    b = DataProto.from_dict(tensors={"x": torch.zeros(4, 1)},
                            non_tensors={"uid": np.array([f"u{i}" for i in range(4)], object),
                                         "extra_info": infos})
    lv.tag_uids(b)
    gen = b.repeat(g, interleave=True)
    rng_state = strat.rng.bit_generator.state
    ratios = s.attach_prefixes(gen)
    strat.rng.bit_generator.state = rng_state
    plan = strat.plan(keys)                                           # the same plan again
    np.testing.assert_array_equal(ratios, plan.prefix_ratios.reshape(-1))
    want = [f"<{k}:{r:.3f}>" if r > 0 else "" for k, r in
            zip(np.repeat(keys, g), plan.prefix_ratios.reshape(-1), strict=True)]
    assert list(gen.non_tensor_batch["lppo_prefix"]) == want
    assert not any(want[i] for i in range(2 * g, 3 * g))              # no solution: unguided
    assert set(gen.non_tensor_batch["agent_name"]) == {"lppo_prefix_agent"}


def test_weighted_estimator_through_verl_dispatch(dataset) -> None:
    assert core_algos.get_adv_estimator_fn("lppo_grpo") is lv.compute_lppo_grpo_advantage
    strat = make_strategy("lp_weighting", group_size=4, seed=0)
    sampler = lv.LPPOSampler(dataset, OmegaConf.create(DATA_CFG), strategy=strat).bind()
    keys = np.array([10 * i for i in range(N)])
    strat.observe(GroupResults.build(keys, np.full((N, 4), 0.5)))   # seen: next Δ ≠ 0
    batch = step_batch(next(iter(loader(dataset, sampler))), 4, passed=set())
    rng = np.random.default_rng(0)
    batch.batch["token_level_scores"][:, -1] = torch.tensor(rng.integers(0, 2, len(batch)),
                                                            dtype=torch.float32)
    batch.batch["token_level_rewards"] = batch.batch["token_level_scores"].clone()
    step0 = strat.stats.step
    cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "use_kl_in_reward": False})
    out = compute_advantage(batch, adv_estimator="lppo_grpo", config=cfg)
    assert strat.stats.step == step0 + 1                # the estimator observed the rewards
    base, _ = core_algos.compute_grpo_outcome_advantage(
        batch.batch["token_level_rewards"], batch.batch["response_mask"],
        batch.non_tensor_batch["uid"])
    w = strat.weights(np.asarray(lv.batch_keys(batch), np.int64))
    assert not np.allclose(w, 1.0)
    torch.testing.assert_close(out.batch["advantages"],
                               base * torch.as_tensor(w, dtype=base.dtype)[:, None])
    sampler.update(out)                                 # same uids: not counted twice
    assert strat.stats.step == step0 + 1
    with pytest.raises(ValueError, match="use_kl_in_reward"):
        compute_advantage(batch, adv_estimator="lppo_grpo",
                          config=OmegaConf.create({"use_kl_in_reward": True}))
    # a multi-output agent loop (more rows per uid than rollout.n) is refused, not mis-grouped
    with pytest.raises(ValueError, match="several outputs per session"):
        compute_advantage(DataProto.concat([batch, batch[0:1]]), adv_estimator="lppo_grpo",
                          config=cfg)


@settings(max_examples=30, deadline=None)
@given(picks=st.lists(st.integers(0, N - 1), min_size=1, max_size=N, unique=True),
       n_pad=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_v1_uid_map_keys_rows_and_skips_padding(picks, n_pad, seed) -> None:
    """V1 rule: a recorded (uuid) prompt uid maps to its sample key, in any row order; V1's
    `pad…` rows (never recorded) are the padding rows, and an unrecorded real uid is an
    error naming the manager setting."""
    sampler = lv.LPPOSampler(None, batch_size=4, strategy=curriculum(),
                             keys=[10 * i for i in range(N)])
    uids = [str(uuid.uuid4()) for _ in picks]
    keys = [10 * p for p in picks]
    sampler.remember_uids(uids, keys)
    rng = np.random.default_rng(seed)
    rows = np.array(uids * 2 + [f"pad{uuid.uuid4().hex}"] * n_pad, dtype=object)
    rng.shuffle(rows)
    pad = sampler.padding_rows(rows)
    assert pad.tolist() == [u.startswith("pad") for u in rows]
    want = dict(zip(uids, keys, strict=True))
    assert sampler.keys_for_uids(rows[~pad]) == [want[u] for u in rows[~pad]]
    sampler.forget_uids(uids[:1])
    with pytest.raises(ValueError, match="agent_loop_manager_class"):
        sampler.keys_for_uids(uids[:1])


def test_validation_and_parquet_helper(dataset, tmp_path, tiny_tokenizer) -> None:
    with pytest.raises(ValueError, match="dataloader_num_workers"):
        lv.LPPOSampler(dataset, OmegaConf.create({**DATA_CFG, "dataloader_num_workers": 2}),
                       strategy=curriculum())
    with pytest.raises(ValueError, match=r"data\.lppo\.strategy"):
        lv.LPPOSampler(dataset, OmegaConf.create(DATA_CFG))
    with pytest.raises(ValueError, match="duplicate"):
        lv.LPPOSampler(dataset, batch_size=2, strategy=curriculum(), keys=[1] * N)
    path = lv.to_verl_parquet(
        [{"id": "a", "question": "1+1?", "answer": "2"}, {"id": "b", "question": "2+2?",
                                                           "answer": "4", "solution": "2+2=4"}],
        tmp_path / "p.parquet")
    ds = RLHFDataset(data_files=str(path), tokenizer=tiny_tokenizer,
                     config=OmegaConf.create({**DATA_CFG, "cache_dir": str(tmp_path / "c2")}))
    assert lv.dataset_keys(ds) == [0, 1]
    row = ds[1]
    assert row["index"] == 1 and row["extra_info"]["sample_id"] == "b"
    assert row["reward_model"]["ground_truth"] == "4"
    # verl's default scorer accepts the data_source it writes (no NotImplementedError)
    from verl.utils.reward_score import default_compute_score

    assert default_compute_score(row["data_source"], "#### 4", "4") == 1.0


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_example_config_runs_with_lppo_env_reward(model_dir, tmp_path, monkeypatch) -> None:
    """examples/verl/lppo_grpo.yaml composes against verl's schema and runs as shipped
    (lppo_env's compute_score, the example prefix function), scaled down to CPU size."""
    pytest.importorskip("lppo_env")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    monkeypatch.chdir(REPO)                 # the launch script runs from the repo root
    train = problems_parquet(tmp_path / "train.parquet")
    # validation data needs no stable keys (it is never observed) and is never guided;
    # the shipped config validates before training
    val = tmp_path / "val.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"data_source": "x", "prompt": [{"role": "user", "content": "What is 30+30?"}],
         "reward_model": {"style": "rule", "ground_truth": "60"}, "extra_info": {"split": "t"}}]),
        val)
    with initialize_config_dir(config_dir=os.path.join(REPO, "examples", "verl"),
                               version_base=None):
        config = hydra_compose("lppo_grpo", overrides=[
            f"actor_rollout_ref.model.path={model_dir}", f"data.train_files={train}",
            f"data.val_files={val}", f"+data.cache_dir={tmp_path / 'cache'}",
            "data.train_batch_size=4", "data.max_prompt_length=64",
            "data.max_response_length=24", "actor_rollout_ref.rollout.prompt_length=96",
            "actor_rollout_ref.rollout.n=2", "data.lppo.kwargs.group_size=2",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4", "trainer.device=cpu",
            # the reference policy is one more GPU worker group; KL is not what is tested
            "actor_rollout_ref.actor.use_kl_loss=False", "trainer.total_training_steps=3",
            "trainer.total_epochs=2", "trainer.test_freq=-1", "trainer.save_freq=-1",
            f"trainer.default_local_dir={tmp_path / 'ckpt'}"])
    assert config.reward.custom_reward_function.path == "pkg://lppo_env.verify"
    trainer, llm = start_run(config)
    trainer.fit()
    val_prompts = [p for p in llm.prompts if "30+30" in llm.tokenizer.decode(p)]
    assert val_prompts and all(llm.tokenizer.decode(p).rstrip().endswith("<|assistant|>")
                               for p in val_prompts)            # validated, unguided
    scores = np.concatenate([update_rows(td)["scores"] for td in trainer.actor_rollout_wg.updates])
    assert len(scores) == 3 * 4 * 2 and set(scores) <= {0.0, 1.0} and scores.max() == 1.0
    strat = trainer.lppo_sampler.strategy
    assert strat.name == "lppo"
    assert int(strat.stats["n_rollouts"].sum() + strat.stats["guided_rollouts"].sum()) == 24


def test_launch_script_prepares_gsm8k_and_composes(model_dir, tmp_path) -> None:
    """run_lppo_grpo.sh as a user runs it (GSM8K → parquet → verl's main_ppo), stopped by
    Hydra's `--cfg job` before Ray starts: the config verl would run with."""
    import subprocess
    import sys

    pytest.importorskip("lppo_env")
    gsm8k = os.path.join(REPO, "..", "shared", "data", "gsm8k_train.jsonl")
    if not os.path.exists(gsm8k):
        pytest.skip("GSM8K sample not available")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           "MODEL_PATH": model_dir, "GSM8K": gsm8k, "DATA_DIR": str(tmp_path / "data"),
           "N_GPUS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([os.path.join(REPO, "examples", "verl", "run_lppo_grpo.sh"), "--cfg",
                          "job"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()          # prepare_data's report, then Hydra's YAML
    assert lines[0].startswith("wrote ") and "train and" in lines[0]
    cfg = OmegaConf.create("\n".join(lines[1:]))
    assert cfg.actor_rollout_ref.model.path == model_dir
    assert cfg.data.lppo.prefix_fn.path == os.path.join(REPO, "examples", "verl", "lppo_prefix.py")
    assert cfg.data.custom_cls.name == "LPPODataset" and cfg.trainer.use_v1 is False
    assert cfg.reward.custom_reward_function.path == "pkg://lppo_env.verify"
    ds = pq.read_table(tmp_path / "data" / "train.parquet").to_pylist()
    assert [r["extra_info"]["index"] for r in ds[:3]] == [0, 1, 2]
    assert ds[0]["extra_info"]["solution"] and ds[0]["reward_model"]["ground_truth"]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), before=st.integers(0, 4), after=st.integers(1, 4),
       strategy=st.sampled_from(["lppo", "lp_weighting", "uniform"]))
def test_dataloader_state_resumes_the_exact_stream(seed, before, after, strategy) -> None:
    """torchdata's StatefulDataLoader state (what verl writes to data.pt) restores the
    sampler mid-epoch or at a boundary: the same batches follow, the same strategy state."""
    keys = np.arange(N) * 10

    def make():
        s = lv.LPPOSampler(list(range(N)), batch_size=4, keys=keys,
                           strategy=make_strategy(strategy, group_size=2, seed=seed),
                           prefix_fn=lambda row, ratio: "")
        return s, StatefulDataLoader(list(range(N)), batch_size=4, sampler=s, drop_last=True)

    def step(s, batch):
        k = keys[batch.numpy()]
        s.observe(np.repeat(k, 2), (np.repeat(k, 2) // 10 + np.arange(2 * len(k))) % 2)

    def take(s, dl, n):
        out, it = [], iter(dl)
        for _ in range(n):
            try:
                b = next(it)
            except StopIteration:
                it = iter(dl)
                b = next(it)
            step(s, b)
            out.append(b.tolist())
        return out

    s1, dl1 = make()
    take(s1, dl1, before)
    buf = io.BytesIO()
    torch.save(dl1.state_dict(), buf)
    want = take(s1, dl1, after)
    s2, dl2 = make()
    buf.seek(0)
    dl2.load_state_dict(torch.load(buf, weights_only=False))
    assert take(s2, dl2, after) == want
    assert s2.strategy.state_checksum() == s1.strategy.state_checksum()
    assert (s2.epoch, s2._pos) == (s1.epoch, s1._pos)        # verl counts epochs by these


# ------------------------------------------------------------ the default V1 trainer
# verl 0.9's default trainer (trainer.use_v1=True, verl.trainer.ppo.v1) keeps every
# per-response field in TransferQueue, a set of Ray actors. What runs below is V1's own
# PPOTrainerSync: its _init_dataloader (which calls the create_rl_sampler global),
# _next_train_batch / _fetch_one_gen_batch (uuid uids), _submit_batch_to_rollout into
# our agent loop manager, and _compute_advantage (compute_advantage_for_multi_trajectories
# with the registered lppo_grpo estimator), plus the StatefulDataLoader state it saves
# as data.pt. Replaced: TransferQueue (an in-process key/value store with the same
# calls), and the agent-loop workers' generation, which writes what AgentLoopWorkerTQ's
# _agent_loop_postprocess would: one entry per response, keyed {uid}_{session}_0, with
# the prompt's fields (uid, index, ...), response_mask and rm_scores.


class FakeTQ:
    """TransferQueue's kv calls V1's sync trainer makes, backed by a dict."""

    def __init__(self):
        self.rows = {}

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        from transfer_queue import KVBatchMeta

        for i, k in enumerate(keys):
            row = self.rows.setdefault((partition_id, k), {})
            if fields is not None:
                row.update({f: fields[f][i] for f in fields.keys()})
        return KVBatchMeta(partition_id=partition_id, keys=list(keys),
                           tags=[{} for _ in keys] if tags is None else tags)

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        from verl.utils.tensordict_utils import list_of_dict_to_tensordict

        rows = [self.rows[(partition_id, k)] for k in keys]
        return list_of_dict_to_tensordict([{f: r[f] for f in (select_fields or r) if f in r}
                                           for r in rows])


def v1_config(model_dir, tmp_path, *overrides, strategy="lp_weighting"):
    from omegaconf import open_dict

    from lppo_sampling.integrations.verl_v1 import MANAGER_FQN

    cfg = compose(model_dir, tmp_path, *overrides, strategy=strategy)
    with open_dict(cfg):
        cfg.trainer.use_v1 = True
        cfg.algorithm.adv_estimator = "lppo_grpo"
        cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class = MANAGER_FQN
    return cfg


def v1_start(config, monkeypatch):
    """V1's PPOTrainerSync up to its data loader (workers need GPUs), TransferQueue faked."""
    import verl.trainer.ppo.v1.trainer_base as tb
    from verl.trainer.ppo import padding_utils
    from verl.trainer.ppo.v1 import get_trainer_cls

    fake = FakeTQ()
    monkeypatch.setattr(tb, "tq", fake)
    monkeypatch.setattr(padding_utils, "tq", fake)   # _balance_batch's padding
    trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config=config)
    trainer.global_steps = 1
    trainer._init_tokenizer()
    trainer._init_dataloader()
    return trainer, fake


def v1_generate(fake, prompts, n, answered):
    """What the agent-loop workers put into TransferQueue for a training batch: n single-turn
    responses per prompt; response r of problem i is right iff answered(i, r)."""
    from verl.utils import tensordict_utils as tu

    keys, fields, tags = [], [], []
    uids, index = tu.get(prompts, "uid"), tu.get(prompts, "index")
    for uid, idx in zip(uids, index, strict=True):
        for s in range(n):
            ok = answered(int(idx) // 10, s)
            length = 3 + s
            rm = torch.zeros(length)
            rm[-1] = float(ok)
            keys.append(f"{uid}_{s}_0")
            prompt = torch.full((5,), 7, dtype=torch.int64)
            response = torch.full((length,), 8, dtype=torch.int64)
            fields.append({"uid": uid, "index": idx, "session_id": s,
                           "response_mask": torch.ones(length, dtype=torch.int64),
                           "prompts": prompt, "responses": response,
                           "input_ids": torch.cat([prompt, response]), "rm_scores": rm})
            tags.append({"status": "success", "prompt_len": 5, "response_len": length,
                         "seq_len": 5 + length, "global_steps": 1})
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    return fake.kv_batch_put(keys, "train", fields=list_of_dict_to_tensordict(fields), tags=tags)


def v1_run(trainer, fake, manager_prompts, answered, replay, steps, first_step=1, dp_size=0):
    """V1's per-step path for `steps` steps: draw + submit, generation (faked), advantages.

    Checks every step against `replay` (a fresh strategy fed the same rewards): the batch
    is what it selects, the advantages are verl's GRPO advantages × its weights.
    Returns the drawn keys and the weights of each step."""
    from verl.utils import tensordict_utils as tu

    drawn, factors = [], []
    for step in range(first_step, first_step + steps):
        trainer.global_steps = step
        want = replay.select(4)
        trainer._submit_batch_to_rollout(trainer._next_train_batch())  # V1: uuid uids
        prompts = manager_prompts[-1]
        keys_in = [int(k) for k in tu.get(prompts, "index")]
        assert keys_in == want.tolist()
        assert not any(lv._UID_SEP in str(u) for u in tu.get(prompts, "uid"))
        drawn.append(keys_in)
        meta = v1_generate(fake, prompts, 2, answered)
        if dp_size:  # V1's balancing pads the batch to a multiple of dp × mini-batch rows
            trainer.actor_rollout_wg = types.SimpleNamespace(
                _dispatch_info={"actor": list(range(dp_size))})
            meta = trainer._balance_batch(meta, metrics={})
            assert any(k.startswith("pad") for k in meta.keys)
        meta = trainer._compute_advantage(meta, metrics={})
        rows = [fake.rows[("train", k)] for k in meta.keys]
        real = np.array([not str(r["uid"]).startswith("pad") for r in rows])
        rkeys = np.array([int(r["index"]) for r in rows])  # padding rows copy a real index
        replay.observe(GroupResults.from_flat(
            rkeys[real], np.array([float(r["rm_scores"].sum()) for r in rows])[real]))
        w = np.ones(len(rows))
        w[real] = replay.weights(rkeys[real]) * replay.keep(rkeys[real])
        factors.append(w)
        uids = np.array([r["uid"] for r in rows], dtype=object)
        pad = torch.nn.utils.rnn.pad_sequence
        base, _ = core_algos.compute_grpo_outcome_advantage(
            pad([r["rm_scores"] for r in rows], batch_first=True),
            pad([r["response_mask"] for r in rows], batch_first=True), uids)
        for r, row in enumerate(rows):
            n_tok = int(row["response_mask"].sum())
            torch.testing.assert_close(row["advantages"][:n_tok], base[r, :n_tok] * float(w[r]))
    return drawn, factors


def v1_manager(trainer, config, monkeypatch):
    """LPPO's agent loop manager on V1's trainer; dispatch to the (Ray) workers recorded."""
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ

    from lppo_sampling.integrations.verl_v1 import LPPOAgentLoopManager

    dispatched = []
    monkeypatch.setattr(AgentLoopManagerTQ, "generate_sequences",
                        lambda self, prompts: dispatched.append(prompts))
    trainer.agent_loop_manager = LPPOAgentLoopManager(config, llm_client=None)
    return dispatched


class Answers:
    """Even problems are always answered right; odd ones on every 4th try (progress)."""

    def __init__(self):
        self.calls = {}

    def __call__(self, i, s):
        self.calls[i] = self.calls.get(i, -1) + 1
        return i % 2 == 0 or self.calls[i] % 4 == 3


def fresh_replay():
    replay = make_strategy("lp_weighting", group_size=2, seed=0)
    replay.add_samples(np.arange(N) * 10, has_solution=np.ones(N, bool))
    return replay


def test_v1_fit_steps_select_observe_and_weight(model_dir, tmp_path, monkeypatch) -> None:
    """Under V1 the strategy picks every batch, sees every response's reward once, under the
    key it was generated for, and weights verl's GRPO advantages; data.pt resumes it."""
    import copy

    from verl.utils import tensordict_utils as tu

    config = v1_config(model_dir, tmp_path)
    trainer, fake = v1_start(config, monkeypatch)
    sampler = trainer.train_dataloader.sampler
    assert isinstance(sampler, lv.LPPOSampler)
    # without LPPO's manager no key reaches the estimator: refused before the first draw
    with pytest.raises(ValueError, match=r"agent_loop_manager_class="):
        trainer._next_train_batch()
    dispatched = v1_manager(trainer, config, monkeypatch)
    answers, replay = Answers(), fresh_replay()
    drawn, factors = v1_run(trainer, fake, dispatched, answers, replay, 1)
    saved = trainer.train_dataloader.state_dict()        # what V1's _save_checkpoint writes
    saved_answers, saved_replay = copy.deepcopy(answers), copy.deepcopy(replay)
    more, more_f = v1_run(trainer, fake, dispatched, answers, replay, 2, first_step=2,
                          dp_size=3)
    drawn, factors = drawn + more, factors + more_f
    assert any(not np.allclose(f, 1.0) for f in factors)          # the weights took effect
    strat = sampler.strategy
    assert_same_stats(strat, replay)
    k, c = np.unique(np.repeat(np.concatenate(drawn), 2), return_counts=True)
    assert strat.stats["n_rollouts"][strat.stats.rows(k)].tolist() == c.tolist()
    assert sampler._uid_keys == {}                                  # nothing left behind
    # validation batches are neither keyed nor observed
    val = tu.get_tensordict({"uid": np.array(["v"], dtype=object),
                             "index": np.array([0], dtype=object)})
    tu.assign_non_tensor_data(val, "validate", True)
    trainer.agent_loop_manager.generate_sequences(val)
    assert sampler._uid_keys == {}
    # a restarted V1 trainer whose data loader loads that data.pt state continues exactly
    config2 = v1_config(model_dir, tmp_path / "restart")
    trainer2, fake2 = v1_start(config2, monkeypatch)
    trainer2.train_dataloader.load_state_dict(saved)
    dispatched2 = v1_manager(trainer2, config2, monkeypatch)
    again, _ = v1_run(trainer2, fake2, dispatched2, saved_answers, saved_replay, 2,
                      first_step=2)
    assert again == more
    assert (trainer2.train_dataloader.sampler.strategy.state_checksum()
            == strat.state_checksum())


def test_v1_bad_settings_fail_at_start_naming_the_setting(model_dir, tmp_path,
                                                          monkeypatch) -> None:
    from lppo_sampling.integrations.verl_v1 import LPPOAgentLoopManager

    cases = [
        ("algorithm.adv_estimator", "grpo", r"algorithm\.adv_estimator=lppo_grpo"),
        ("trainer.v1.trainer_mode", "colocate_async", r"trainer\.v1\.trainer_mode"),
        ("algorithm.use_kl_in_reward", True, r"use_kl_in_reward"),
        ("algorithm.filter_groups.enable", True, r"filter_groups"),
        ("actor_rollout_ref.rollout.n", 3, r"data\.lppo\.kwargs\.group_size=3"),
    ]
    for i, (key, value, match) in enumerate(cases):
        cfg = v1_config(model_dir, tmp_path / f"b{i}")
        trainer, _ = v1_start(cfg, monkeypatch)
        OmegaConf.update(cfg, key, value, force_add=True)
        with pytest.raises(ValueError, match=match):
            LPPOAgentLoopManager(cfg, llm_client=None)
        assert trainer.train_dataloader.sampler.v1_ready is False
