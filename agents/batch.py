"""`TrainBatch`: rollouts turned into right-padded tensors that every learner consumes.

Why one batch type: GRPO, PPO, REINFORCE++ and DPO all need the same thing — token ids of
`prompt + prefix + response`, a mask of the trainable (response) tokens, and per-sequence
data (reward, group id, sampler weight). Building it in one place keeps the prefix rule
("prefix tokens get no gradient and no KL") in one place too: `response_mask` is 0 on
prompt and prefix tokens, and every loss is masked with it.

Layout (B sequences, L = longest `prompt + prefix + response`), right padded::

    position:        0 ........................................ L-1
    input_ids:       [prompt ...][prefix ...][response ...][pad ...]
    attention_mask:  [1 .......................................][0 ...]
    prefix_mask:     [0 ........][1 .......][0 ........................]
    response_mask:   [0 ....................][1 .........][0 .......]
    old_logprobs:    log pi_old(input_ids[t] | input_ids[<t]) on response positions, else 0

All `(B, L)` tensors are aligned with `input_ids` positions: the value at `t` refers to the
token *at* `t` (predicted from the logits at `t - 1`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from agents.core_algos import group_ids
from agents.rollout.base import Rollout

__all__ = ["TrainBatch"]


@dataclass
class TrainBatch:
    """Right-padded training tensors for B sequences of max length L.

    Attributes:
        input_ids: (B, L) int64 `prompt + prefix + response` tokens, then `pad_token_id`.
        attention_mask: (B, L) int64, 1 on real tokens.
        response_mask: (B, L) float32, 1.0 only on response (trainable) tokens.
        prefix_mask: (B, L) float32, 1.0 only on expert-prefix tokens (for metrics; never trained).
        old_logprobs: (B, L) float32 behaviour log-probs at response positions (from the
            rollout engine), 0 elsewhere. Learners recompute them by default.
        rewards: (B,) float32 outcome reward per sequence.
        index: (B,) int64 dense group id (rollouts of the same prompt share one).
        weights: (B,) float32 per-sample weight from the sampler; multiplies advantages.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prefix_mask: torch.Tensor
    old_logprobs: torch.Tensor
    rewards: torch.Tensor
    index: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self) -> None:
        B, L = self.input_ids.shape
        for f in ("attention_mask", "response_mask", "prefix_mask", "old_logprobs"):
            shape = tuple(getattr(self, f).shape)
            if shape != (B, L):
                raise ValueError(f"expected {f} of shape {(B, L)}, got {shape}")
        for f in ("rewards", "index", "weights"):
            shape = tuple(getattr(self, f).shape)
            if shape != (B,):
                raise ValueError(f"expected {f} of shape {(B,)}, got {shape}")

    @classmethod
    def from_rollouts(
        cls,
        rollouts: Sequence[Rollout],
        rewards: Sequence[float] | np.ndarray | torch.Tensor,
        *,
        index: Sequence[Hashable] | np.ndarray | torch.Tensor | None = None,
        weights: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        pad_token_id: int = 0,
    ) -> TrainBatch:
        """Pack rollouts into right-padded tensors.

        Args:
            rollouts: B rollouts from any `RolloutBackend`.
            rewards: (B,) outcome rewards.
            index: (B,) group labels (any hashables: sample keys, uids); default: each
                rollout's `request_index`, i.e. one group per request.
            weights: (B,) per-sample weights (e.g. LPPO learning-progress weights);
                default all ones, which reproduces the unweighted learner exactly.
            pad_token_id: id used for padding (masked out everywhere).

        Returns:
            A `TrainBatch` on CPU.
        """
        B = len(rollouts)
        if B == 0:
            raise ValueError("expected at least one rollout, got an empty list")
        rewards_t = _vector(rewards, "rewards", B, torch.float32)
        weights_t = (
            torch.ones(B) if weights is None else _vector(weights, "weights", B, torch.float32)
        )
        if not torch.isfinite(weights_t).all() or (weights_t < 0).any():
            raise ValueError(f"expected finite non-negative weights, got {weights_t.tolist()}")
        if index is None:
            index = [r.request_index for r in rollouts]
        index_t = group_ids(index, B)
        lengths = [len(r.prompt_ids) + len(r.prefix_ids) + len(r.response_ids) for r in rollouts]
        L = max(lengths)
        input_ids = torch.full((B, L), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(B, L, dtype=torch.long)
        response_mask = torch.zeros(B, L)
        prefix_mask = torch.zeros(B, L)
        old_logprobs = torch.zeros(B, L)
        for i, r in enumerate(rollouts):
            if len(r.response_logprobs) != len(r.response_ids):
                raise ValueError(
                    f"expected rollout {i} to have one logprob per response token "
                    f"({len(r.response_ids)}), got {len(r.response_logprobs)}"
                )
            p, q = len(r.prompt_ids), len(r.prompt_ids) + len(r.prefix_ids)
            n = lengths[i]
            input_ids[i, :n] = torch.tensor(r.prompt_ids + r.prefix_ids + r.response_ids)
            attention_mask[i, :n] = 1
            prefix_mask[i, p:q] = 1.0
            response_mask[i, q:n] = 1.0
            old_logprobs[i, q:n] = torch.tensor(r.response_logprobs, dtype=torch.float32)
        if (response_mask[:, 0] > 0).any():
            raise ValueError(
                "expected a non-empty prompt before every response, got an empty prompt"
            )
        return cls(
            input_ids=input_ids,
            attention_mask=attention_mask,
            response_mask=response_mask,
            prefix_mask=prefix_mask,
            old_logprobs=old_logprobs,
            rewards=rewards_t,
            index=index_t,
            weights=weights_t,
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seq_lengths(self) -> torch.Tensor:
        """(B,) number of real tokens per row."""
        return self.attention_mask.sum(dim=-1)

    @property
    def response_lengths(self) -> torch.Tensor:
        """(B,) number of response tokens per row."""
        return self.response_mask.sum(dim=-1)

    @property
    def num_response_tokens(self) -> int:
        """Total trainable tokens."""
        return int(self.response_mask.sum())

    def select(self, rows: Sequence[int] | torch.Tensor) -> TrainBatch:
        """Sub-batch of the given rows, with trailing all-padding columns trimmed."""
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        sub = {f.name: getattr(self, f.name)[rows_t] for f in fields(self)}
        L = int(sub["attention_mask"].sum(dim=-1).max()) if len(rows_t) else 0
        for name in ("input_ids", "attention_mask", "response_mask", "prefix_mask", "old_logprobs"):
            sub[name] = sub[name][:, :L]
        return TrainBatch(**sub)

    def to(self, device: torch.device | str) -> TrainBatch:
        """Copy of the batch on `device`."""
        return TrainBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _vector(values: object, name: str, n: int, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(values, dtype=np.float64)).to(dtype)
    if t.shape != (n,):
        raise ValueError(f"expected {name} of shape ({n},), got {tuple(t.shape)}")
    return t
