"""DPO (Rafailov et al. 2023, arXiv 2305.18290): preference pairs instead of rewards.

SAI-DPO (arXiv 2505.16176) trains with DPO on pairs of the model's own samples of one
problem: chosen = a correct sample, rejected = an incorrect one. The loss only needs the
summed response log-probs of both samples under the policy and under a frozen reference:

    h = (log pi(y_c|x) - log pi(y_r|x)) - (log ref(y_c|x) - log ref(y_r|x))
    sigmoid:  loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)   (cDPO smoothing)
    ipo:      loss = (h - 1 / (2 beta))^2, with length-averaged log-probs (IPO, arXiv 2310.12036)

The update reads top to bottom, CleanRL style:

1. reference log-probs of every row, once, without gradient (or zeros when reference-free);
2. epochs x shuffled minibatches of pairs x token-budget micro-batches of pairs: policy
   log-probs, `dpo_loss`, weighted mean over the minibatch's pairs, accumulated gradients,
   one clipped AdamW step per minibatch;
3. metrics (TRL's names: `rewards/chosen`, `rewards/margin`, ...).

Both samples of a pair always sit in the same micro-batch, so the gradient does not depend
on the token budget. Prompt and prefix tokens are outside `response_mask` and get no
gradient. DPO takes `PreferenceBatch`es, not rollout `TrainBatch`es, so it is not in the RL
learner registry: build it directly, `DPOLearner(policy, DPOConfig(beta=0.1))` (SAI-DPO
does, `agents.saidpo`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.batch import TrainBatch
from agents.learners.base import LearnerConfig
from agents.learners.common import (
    MetricMean,
    build_optimizer,
    init_policy_learner,
    minibatches,
    optimizer_metrics,
)
from agents.learners.logprobs import micro_batches, token_logprobs
from agents.policy import Policy
from agents.rollout.base import Rollout

__all__ = ["DPO_LOSS_TYPES", "DPOConfig", "DPOLearner", "PreferenceBatch", "dpo_loss"]

DPO_LOSS_TYPES = ("sigmoid", "ipo")


# --------------------------------------------------------------------------- loss


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    *,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    reference_free: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and implicit rewards (TRL `DPOTrainer.dpo_loss` semantics).

    Args:
        policy_chosen_logps: (P,) summed response log-probs of the chosen samples under
            the policy (length-averaged for `ipo`, as TRL does).
        policy_rejected_logps: (P,) same for the rejected samples.
        ref_chosen_logps: (P,) chosen log-probs under the reference (no gradient needed).
        ref_rejected_logps: (P,) rejected log-probs under the reference.
        beta: inverse temperature of the implicit reward (DPO eq. 7); for `ipo` the
            target margin is 1 / (2 beta).
        loss_type: `sigmoid` (DPO) or `ipo`.
        label_smoothing: cDPO's assumed label-noise rate eps in [0, 0.5); 0 = plain DPO.
            Only used by `sigmoid`.
        reference_free: ignore the reference (ref log-ratio = 0): the loss then only
            compares the policy's own log-probs of the pair.

    Returns:
        `(losses, chosen_rewards, rejected_rewards)`, each (P,). Rewards are
        `beta * (policy - ref)` log-probs, detached (diagnostics, as in TRL).
    """
    if beta <= 0:
        raise ValueError(f"dpo_loss expects beta > 0, got {beta}")
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"dpo_loss expects loss_type in {list(DPO_LOSS_TYPES)}, got {loss_type!r}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss expects label_smoothing in [0, 0.5), got {label_smoothing}")
    if reference_free:
        ref_chosen_logps = torch.zeros_like(policy_chosen_logps)
        ref_rejected_logps = torch.zeros_like(policy_rejected_logps)
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = ref_chosen_logps.detach() - ref_rejected_logps.detach()
    logits = pi_logratios - ref_logratios
    if loss_type == "sigmoid":
        losses = (
            -F.logsigmoid(beta * logits) * (1 - label_smoothing)
            - F.logsigmoid(-beta * logits) * label_smoothing
        )
    else:
        losses = (logits - 1 / (2 * beta)) ** 2
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return losses, chosen_rewards, rejected_rewards


# --------------------------------------------------------------------------- batch


@dataclass
class PreferenceBatch:
    """P preference pairs packed as one `TrainBatch` of 2P rows.

    Rows `[0, P)` are the chosen samples and rows `[P, 2P)` the rejected ones, pair `i`
    being rows `i` and `P + i` (TRL's concatenated layout: one forward pass per
    micro-batch serves both sides). Packing goes through `TrainBatch.from_rollouts`, so
    prompt and prefix tokens are outside `response_mask` exactly as for the PG learners.

    Attributes:
        batch: the 2P-row `TrainBatch`; `batch.rewards` is 1 for chosen and 0 for
            rejected rows, `batch.index` the pair id, `batch.weights` the pair weight
            (repeated on both rows).
    """

    batch: TrainBatch

    def __post_init__(self) -> None:
        if len(self.batch) % 2 or len(self.batch) == 0:
            raise ValueError(f"expected an even, non-zero number of rows, got {len(self.batch)}")

    @classmethod
    def from_rollouts(
        cls,
        chosen: Sequence[Rollout],
        rejected: Sequence[Rollout],
        *,
        weights: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        pad_token_id: int = 0,
    ) -> PreferenceBatch:
        """Pack pairs `(chosen[i], rejected[i])`.

        Args:
            chosen: P preferred rollouts.
            rejected: P dispreferred rollouts; `rejected[i]` must share the context
                (prompt + prefix tokens) of `chosen[i]`, or the log-ratio would compare
                answers to different questions.
            weights: (P,) non-negative pair weights (e.g. sampler weights); default ones.
            pad_token_id: padding id.
        """
        P = len(chosen)
        if P == 0 or len(rejected) != P:
            raise ValueError(
                f"expected as many rejected as chosen rollouts (>= 1), got {P} chosen and "
                f"{len(rejected)} rejected"
            )
        for i, (c, r) in enumerate(zip(chosen, rejected, strict=True)):
            if c.context_ids != r.context_ids:
                raise ValueError(
                    f"expected pair {i} to share one prompt + prefix, got different context tokens"
                )
        w = torch.ones(P) if weights is None else torch.as_tensor(np.asarray(weights, np.float32))
        if tuple(w.shape) != (P,):
            raise ValueError(f"expected weights of shape ({P},), got {tuple(w.shape)}")
        batch = TrainBatch.from_rollouts(
            [*chosen, *rejected],
            [1.0] * P + [0.0] * P,
            index=list(range(P)) * 2,
            weights=torch.cat([w, w]),
            pad_token_id=pad_token_id,
        )
        return cls(batch)

    def __len__(self) -> int:
        """Number of pairs P."""
        return len(self.batch) // 2

    @property
    def weights(self) -> torch.Tensor:
        """(P,) pair weights."""
        return self.batch.weights[: len(self)]

    @property
    def pair_lengths(self) -> torch.Tensor:
        """(P,) longer of the two rows' real lengths (what a micro-batch must fit)."""
        lengths = self.batch.seq_lengths
        return torch.maximum(lengths[: len(self)], lengths[len(self) :])

    def to(self, device: torch.device | str) -> PreferenceBatch:
        """Copy on `device`."""
        return PreferenceBatch(self.batch.to(device))


# --------------------------------------------------------------------------- learner


@dataclass
class DPOConfig(LearnerConfig):
    """DPO fields on top of `LearnerConfig` (TRL `DPOConfig` names).

    Used from `LearnerConfig`: lr, weight_decay, adam_*, max_grad_norm, epochs,
    num_minibatches (optimizer steps per epoch, over pairs), token_budget,
    gradient_checkpointing, temperature (logits divided by it; keep 1 for DPO),
    normalize_weights, seed. The advantage/clip/KL fields are not used by DPO.

    Attributes:
        beta: DPO inverse temperature [TRL `beta`, default 0.1]; larger keeps the policy
            closer to the reference. SAI-DPO does not report its value.
        loss_type: `sigmoid` (DPO) | `ipo` [TRL `loss_type`].
        label_smoothing: cDPO label-noise rate in [0, 0.5) [TRL `label_smoothing`].
        reference_free: no reference model (ref log-ratio = 0) [TRL `reference_free`];
            saves a model copy.
    """

    lr: float = 1e-6
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    reference_free: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if not self.beta > 0:
            raise ValueError(f"{name} expects beta > 0, got {self.beta!r}")
        if self.loss_type not in DPO_LOSS_TYPES:
            raise ValueError(
                f"{name} expects loss_type one of {list(DPO_LOSS_TYPES)}, got {self.loss_type!r}"
            )
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(
                f"{name} expects label_smoothing in [0, 0.5), got {self.label_smoothing!r}"
            )


def _sequence_logps(
    model: torch.nn.Module, batch: TrainBatch, *, temperature: float, average: bool
) -> torch.Tensor:
    """(B,) summed (or length-averaged) response log-probs of each row."""
    logprobs, _, _ = token_logprobs(
        model, batch.input_ids, batch.attention_mask, temperature=temperature,
        positions=batch.response_mask,
    )
    total = (logprobs * batch.response_mask).sum(dim=-1)
    if average:
        total = total / batch.response_mask.sum(dim=-1).clamp(min=1)
    return total


class DPOLearner:
    """Offline DPO over a `Policy`, on `PreferenceBatch`es.

    Args:
        policy: the policy to train (its model is updated in place).
        config: a `DPOConfig` (default values if None).
        ref_model: the frozen reference; default a frozen copy of the policy taken now
            (the initial policy), none when `config.reference_free`.

    Example:
        >>> learner = DPOLearner(policy, DPOConfig(beta=0.1, lr=1e-6))  # doctest: +SKIP
        >>> learner.update(PreferenceBatch.from_rollouts(chosen, rejected))  # doctest: +SKIP
    """

    config_class: type[LearnerConfig] = DPOConfig
    batch_type: type = PreferenceBatch
    """What `update` takes: pairs, not a rollout `TrainBatch` (the GRPO trainer cannot feed it)."""

    def __init__(
        self,
        policy: Policy,
        config: LearnerConfig | None = None,
        *,
        ref_model: torch.nn.Module | None = None,
    ) -> None:
        init_policy_learner(
            self,
            policy,
            config,
            ref_model=ref_model,
            wants_reference=not getattr(config or DPOConfig(), "reference_free", False),
        )
        self.optimizer = build_optimizer(self.model.parameters(), self.config)
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def sync_reference(self) -> None:
        """Make the reference the current policy (iterative DPO: ref = model of iteration t-1)."""
        if self.ref_model is not None:
            self.ref_model.load_state_dict(self.model.state_dict())

    @torch.no_grad()
    def reference_logps(self, pairs: PreferenceBatch) -> torch.Tensor:
        """(2P,) reference log-probs of every row (zeros when reference-free)."""
        cfg = self.config
        batch = pairs.batch
        out = torch.zeros(len(batch), device=batch.input_ids.device)
        if self.ref_model is None:
            return out
        self.ref_model.eval()
        for micro in micro_batches(batch.seq_lengths, cfg.token_budget):
            rows = torch.tensor(micro, device=batch.input_ids.device)
            out[rows] = _sequence_logps(
                self.ref_model,
                batch.select(rows),
                temperature=cfg.temperature,
                average=cfg.loss_type == "ipo",
            )
        return out

    def update(self, pairs: PreferenceBatch) -> dict[str, float]:  # type: ignore[override]
        """One DPO update on `pairs`; returns flat metrics (`loss/dpo`, `rewards/...`)."""
        if not isinstance(pairs, PreferenceBatch):
            raise ValueError(
                f"expected a PreferenceBatch (DPO trains on chosen/rejected pairs, see "
                f"`agents.saidpo`), got {type(pairs).__name__}"
            )
        cfg = self.config
        device = self.policy.device
        pairs = pairs.to(device)
        batch = pairs.batch
        P = len(pairs)
        weights = pairs.weights
        if cfg.normalize_weights:
            weights = weights / weights.mean().clamp(min=1e-8)
        average = cfg.loss_type == "ipo"

        # 1. reference log-probs, once per update
        ref_logps = self.reference_logps(pairs)

        # 2. epochs x minibatches of pairs x micro-batches of pairs
        half_budget = None if cfg.token_budget is None else max(1, cfg.token_budget // 2)
        pair_lengths = pairs.pair_lengths
        metrics = MetricMean()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        num_steps = num_micro = 0
        for _epoch in range(cfg.epochs):
            for mb_pairs in minibatches(P, cfg.num_minibatches, self.generator):
                mb_pairs = mb_pairs.sort().values.to(device)
                self.optimizer.zero_grad(set_to_none=True)
                step = MetricMean()
                for micro in micro_batches(pair_lengths[mb_pairs], half_budget):
                    ids = mb_pairs[torch.tensor(micro, device=device)]
                    rows = torch.cat([ids, ids + P])
                    logps = _sequence_logps(
                        self.model, batch.select(rows), temperature=cfg.temperature, average=average
                    )
                    n = len(ids)
                    losses, chosen_r, rejected_r = dpo_loss(
                        logps[:n],
                        logps[n:],
                        ref_logps[ids],
                        ref_logps[ids + P],
                        cfg.beta,
                        loss_type=cfg.loss_type,
                        label_smoothing=cfg.label_smoothing,
                        reference_free=cfg.reference_free,
                    )
                    loss = (weights[ids] * losses).sum() / len(mb_pairs)
                    loss.backward()
                    margin = chosen_r - rejected_r
                    step.add(
                        {
                            "loss/dpo": float(losses.detach().mean()),
                            "loss/weighted": float((weights[ids] * losses.detach()).mean()),
                            "rewards/chosen": float(chosen_r.mean()),
                            "rewards/rejected": float(rejected_r.mean()),
                            "rewards/accuracy": float((margin > 0).float().mean()),
                            "rewards/margin": float(margin.mean()),
                            "logps/chosen": float(logps[:n].detach().mean()),
                            "logps/rejected": float(logps[n:].detach().mean()),
                        },
                        weight=float(n),
                    )
                    num_micro += 1
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    params, cfg.max_grad_norm if cfg.max_grad_norm is not None else math.inf
                )
                self.optimizer.step()
                metrics.add({**step.result(), "actor/grad_norm": float(grad_norm)})
                num_steps += 1

        # 3. metrics
        out = metrics.result()
        lengths = batch.response_lengths
        out.update(
            {
                "dpo/num_pairs": float(P),
                "dpo/chosen_length_mean": float(lengths[:P].mean()),
                "dpo/rejected_length_mean": float(lengths[P:].mean()),
                "weights/mean": float(pairs.weights.mean()),
                **optimizer_metrics(self.optimizer, num_steps, num_micro),
            }
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, shuffling RNG and the reference weights (they may have been synced)."""
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }
        if self.ref_model is not None:
            # a copy: `sync_reference` later overwrites the live tensors in place
            state["ref_model"] = {
                k: v.detach().clone() for k, v in self.ref_model.state_dict().items()
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        if self.ref_model is not None and "ref_model" in state:
            self.ref_model.load_state_dict(state["ref_model"])
