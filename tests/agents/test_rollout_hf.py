"""HF `generate` backend: contract, prefix split, logprobs, determinism, stopping."""

from __future__ import annotations

import pytest
import torch

from agents.learners.logprobs import token_logprobs
from agents.policy import encode_chat
from agents.rollout import HFBackend, RolloutBackend, RolloutRequest, SamplingConfig


def _requests(messages):
    return [
        RolloutRequest(messages=messages, prefix="", n=2, tag="a"),
        RolloutRequest(
            messages=[{"role": "user", "content": "Compute 7*6, please."}],
            prefix="7*6 =",
            n=3,
            tag="b",
        ),
    ]


def test_backend_satisfies_the_protocol(tiny_policy):
    assert isinstance(HFBackend(tiny_policy), RolloutBackend)


def test_rollouts_are_grouped_and_split_into_prompt_prefix_response(tiny_policy, messages):
    backend = HFBackend(tiny_policy, batch_size=3)
    reqs = _requests(messages)
    out = backend.generate(reqs, SamplingConfig(max_new_tokens=6, seed=0))
    assert [r.request_index for r in out] == [0, 0, 1, 1, 1]
    assert [r.tag for r in out] == ["a", "a", "b", "b", "b"]
    for r in out:
        req = reqs[r.request_index]
        prompt_ids, prefix_ids = encode_chat(tiny_policy.tokenizer, req.messages, req.prefix)
        assert r.prompt_ids == prompt_ids and r.prefix_ids == prefix_ids
        assert r.prefix == req.prefix
        assert tiny_policy.tokenizer.decode(r.prefix_ids) == req.prefix
        assert 1 <= len(r.response_ids) <= 6
        assert len(r.response_logprobs) == len(r.response_ids)
        assert all(lp <= 0 for lp in r.response_logprobs)
        assert r.finish_reason in ("stop", "length")
        if r.finish_reason == "length":
            assert len(r.response_ids) == 6
        assert r.full_text == r.prefix + r.text


def test_deterministic_for_a_seed_and_leaves_global_rng_alone(tiny_policy, messages):
    backend = HFBackend(tiny_policy, batch_size=4)
    reqs = _requests(messages)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = backend.generate(reqs, SamplingConfig(max_new_tokens=8, seed=7))
    after = torch.rand(1)
    b = backend.generate(reqs, SamplingConfig(max_new_tokens=8, seed=7))
    c = backend.generate(reqs, SamplingConfig(max_new_tokens=8, seed=8))
    assert torch.equal(before, after)
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    assert [r.response_logprobs for r in a] == [r.response_logprobs for r in b]
    assert [r.response_ids for r in a] != [r.response_ids for r in c]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_a_recomputed_forward_pass(tiny_policy, messages, temperature):
    """Sampling-distribution logprobs (left-padded, KV cache) = full forward at that temperature."""
    backend = HFBackend(tiny_policy, batch_size=5)
    out = backend.generate(
        _requests(messages), SamplingConfig(temperature=temperature, max_new_tokens=8, seed=1)
    )
    for r in out:
        ids = torch.tensor([r.prompt_ids + r.prefix_ids + r.response_ids])
        lp, _, _ = token_logprobs(
            tiny_policy.model.eval(), ids, torch.ones_like(ids), temperature=temperature
        )
        expected = lp[0, len(r.context_ids) :]
        assert torch.allclose(torch.tensor(r.response_logprobs), expected, atol=1e-4)


def test_top_p_logprobs_are_renormalised_over_the_nucleus(tiny_policy, messages):
    out = HFBackend(tiny_policy).generate(
        [RolloutRequest(messages, n=4)], SamplingConfig(top_p=0.05, max_new_tokens=4, seed=0)
    )
    full = HFBackend(tiny_policy).generate(
        [RolloutRequest(messages, n=4)], SamplingConfig(max_new_tokens=4, seed=0)
    )
    # a tiny nucleus keeps only a few tokens, so each kept token gets more mass than untruncated
    assert sum(map(sum, (r.response_logprobs for r in out))) > sum(
        map(sum, (r.response_logprobs for r in full))
    )


def test_greedy_batched_with_left_padding_equals_one_by_one(tiny_policy, messages):
    reqs = _requests(messages)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=6)
    batched = HFBackend(tiny_policy, batch_size=8).generate(reqs, greedy)
    single = HFBackend(tiny_policy, batch_size=1).generate(reqs, greedy)
    assert [r.response_ids for r in batched] == [r.response_ids for r in single]


def test_stops_at_stop_tokens_and_keeps_the_eos(tiny_policy, messages):
    vocab = len(tiny_policy.tokenizer)
    backend = HFBackend(tiny_policy, stop_token_ids=list(range(vocab)))
    out = backend.generate(
        [RolloutRequest(messages, n=3)], SamplingConfig(max_new_tokens=5, seed=0)
    )
    assert all(len(r.response_ids) == 1 and r.finish_reason == "stop" for r in out)
    im_end = tiny_policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in HFBackend(tiny_policy).stop_token_ids


def test_invalid_arguments_raise_value_errors(tiny_policy, messages):
    with pytest.raises(ValueError, match="expected batch_size >= 1, got 0"):
        HFBackend(tiny_policy, batch_size=0)
    with pytest.raises(ValueError, match="expected RolloutRequest.n >= 1, got 0"):
        HFBackend(tiny_policy).generate([RolloutRequest(messages, n=0)], SamplingConfig())


def test_model_training_mode_is_restored(tiny_policy, messages):
    tiny_policy.model.train()
    HFBackend(tiny_policy).generate(
        [RolloutRequest(messages)], SamplingConfig(max_new_tokens=2, seed=0)
    )
    assert tiny_policy.model.training


@pytest.mark.parametrize("prefix", ["", "7*6 is seven sixes.\n", "Step 1: 7*6"])
def test_a_prompt_rendered_by_the_env_tokenizes_like_the_messages(tiny_policy, prefix):
    """The env renders the prompt once; the backend only tokenizes it, with the same ids."""
    from lppo_env import MathReasoningEnv
    from lppo_env.problems import MathProblem

    problem = MathProblem(id="p", question="Compute 7*6.", answer="42")
    env = MathReasoningEnv([problem], tokenizer=tiny_policy.tokenizer)
    prompt, info = env.reset(options={"problem_id": "p", "prefix": prefix})
    assert info["prefix"] == prefix
    backend = HFBackend(tiny_policy)
    sampling = SamplingConfig(max_new_tokens=3, seed=0)
    [rendered] = backend.generate([RolloutRequest(prompt=prompt, prefix=prefix)], sampling)
    [chat] = backend.generate([RolloutRequest(env.messages(problem), prefix=prefix)], sampling)
    assert (rendered.prompt_ids, rendered.prefix_ids) == (chat.prompt_ids, chat.prefix_ids)
    assert rendered.response_ids == chat.response_ids and rendered.prefix == prefix
    assert bool(rendered.prefix_ids) == bool(prefix)


def test_a_rendered_prompt_must_end_with_its_prefix(tiny_policy):
    with pytest.raises(ValueError, match="to end with its prefix"):
        HFBackend(tiny_policy).generate(
            [RolloutRequest(prompt="<|im_start|>assistant\nabc", prefix="xyz")],
            SamplingConfig(max_new_tokens=2),
        )
