"""TrainBatch layout, micro-batch packing, logprob helpers."""

from __future__ import annotations

import pytest
import torch

from agents.batch import TrainBatch
from agents.learners.logprobs import micro_batches, sequence_logprobs, token_logprobs
from agents.rollout.base import Rollout


def _rollout(prompt, prefix, response, request_index=0):
    return Rollout(
        prompt_ids=prompt,
        prefix_ids=prefix,
        response_ids=response,
        response_logprobs=[-0.5] * len(response),
        text="",
        request_index=request_index,
    )


def test_layout_is_right_padded_with_prompt_prefix_response_masks():
    rollouts = [_rollout([5, 6], [7], [8, 9], 0), _rollout([5], [], [4], 1)]
    b = TrainBatch.from_rollouts(rollouts, [1.0, 0.0], pad_token_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 4, 0, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert b.prefix_mask.tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert b.response_mask.tolist() == [[0, 0, 0, 1, 1], [0, 1, 0, 0, 0]]
    assert b.old_logprobs.tolist() == [[0, 0, 0, -0.5, -0.5], [0, -0.5, 0, 0, 0]]
    assert b.index.tolist() == [0, 1] and b.weights.tolist() == [1.0, 1.0]
    assert b.rewards.tolist() == [1.0, 0.0]
    assert b.seq_lengths.tolist() == [5, 2] and b.response_lengths.tolist() == [2, 1]
    sub = b.select([1])
    assert sub.input_ids.tolist() == [[5, 4]] and len(sub) == 1


def test_index_accepts_any_labels_and_weights_are_validated():
    rollouts = [_rollout([1], [], [2]) for _ in range(3)]
    b = TrainBatch.from_rollouts(
        rollouts, [0, 1, 0], index=["k9", "k2", "k9"], weights=[0.5, 1.5, 1.0]
    )
    assert b.index.tolist() == [0, 1, 0]
    assert b.weights.tolist() == [0.5, 1.5, 1.0]
    with pytest.raises(ValueError, match=r"expected rewards of shape \(3,\), got \(2,\)"):
        TrainBatch.from_rollouts(rollouts, [0, 1])
    with pytest.raises(ValueError, match="expected finite non-negative weights"):
        TrainBatch.from_rollouts(rollouts, [0, 1, 0], weights=[1, -1, 1])
    with pytest.raises(ValueError, match="expected at least one rollout"):
        TrainBatch.from_rollouts([], [])
    bad = _rollout([1], [], [2, 3])
    bad.response_logprobs = [0.0]
    with pytest.raises(
        ValueError, match="expected rollout 0 to have one logprob per response token"
    ):
        TrainBatch.from_rollouts([bad], [1.0])


def test_micro_batches_respect_the_budget_and_cover_every_row():
    lengths = torch.tensor([10, 3, 7, 7, 2, 12, 1])
    parts = micro_batches(lengths, 20)
    assert sorted(i for p in parts for i in p) == list(range(7))
    for p in parts:
        assert len(p) * max(int(lengths[i]) for i in p) <= 20 or len(p) == 1
    assert micro_batches(lengths, None) == [list(range(7))]
    assert micro_batches(lengths, 1) and all(len(p) == 1 for p in micro_batches(lengths, 1))
    with pytest.raises(ValueError, match="expected token_budget >= 1 or None, got 0"):
        micro_batches(lengths, 0)


def test_token_and_sequence_logprobs_are_aligned(tiny_policy):
    model = tiny_policy.model.eval()
    rollouts = [_rollout([5, 6], [7], [8, 9]), _rollout([5], [], [4])]
    b = TrainBatch.from_rollouts(rollouts, [1.0, 0.0])
    lp, values, ent = token_logprobs(model, b.input_ids, b.attention_mask, with_entropy=True)
    assert values is None and ent is not None and lp.shape == (2, 5)
    logits = model(input_ids=b.input_ids[:1]).logits[0]
    expected = torch.log_softmax(logits, -1)[2, 8]  # token at position 3 predicted at 2
    assert torch.isclose(lp[0, 3], expected, atol=1e-5)
    assert lp[0, 0] == 0
    seq = sequence_logprobs(model, b)
    assert torch.allclose(seq, (lp * b.response_mask).sum(-1))
    # right padding does not change the logprobs of real tokens
    alone, _, _ = token_logprobs(model, b.input_ids[1:, :2], b.attention_mask[1:, :2])
    assert torch.allclose(alone[0], lp[1, :2], atol=1e-5)
