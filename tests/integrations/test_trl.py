"""LPPOGRPOTrainer against the real trl (1.16) on CPU with a tiny random Llama."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

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


def test_with_prefix_renders_partial_assistant_turn() -> None:
    assert with_prefix("Q?", "Step 1\n") == "Q?Step 1\n"
    conv = [{"role": "user", "content": "Q?"}]
    assert with_prefix(conv, "S\n")[-1] == {"role": "assistant", "content": "S\n"}
    assert with_prefix(conv, "") is conv
    with pytest.raises(ValueError):
        with_prefix(3, "x")


def test_lppo_env_prefix_fn_cuts_at_steps() -> None:
    pytest.importorskip("lppo_env.prefix")
    from lppo_sampling.integrations.trl import lppo_env_prefix_fn

    f = lppo_env_prefix_fn()
    row = {"answer": "9", "solution": "First add 2 and 3 to get 5.\nThen add 4.\nSo 9."}
    text = f(row, 0.5)
    assert text.startswith("First add 2 and 3") and "9" not in text
    assert f({"answer": "9", "solution": ""}, 0.5) == ""


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


def test_constructor_validation(tok, tmp_path) -> None:
    kw = dict(model=tiny_model(tok), reward_funcs=Log(), processing_class=tok,
              train_dataset=dataset())
    with pytest.raises(ValueError, match="ignore_data_skip"):
        LPPOGRPOTrainer(**kw, args=config(tmp_path, ignore_data_skip=False),
                        strategy=make_strategy("uniform", group_size=4))
    with pytest.raises(ValueError, match="group_size"):
        LPPOGRPOTrainer(
            **kw, args=config(tmp_path), strategy=make_strategy("uniform", group_size=8)
        )
    with pytest.raises(ValueError, match="key column"):
        LPPOGRPOTrainer(
            **kw,
            args=config(tmp_path),
            strategy=make_strategy("uniform", group_size=4),
            key_column="id",
        )
    with pytest.raises(ValueError, match="reward_range"):
        LPPOGRPOTrainer(
            **kw,
            args=config(tmp_path),
            strategy=make_strategy("uniform", group_size=4),
            reward_range=(1.0, 0.0),
        )
