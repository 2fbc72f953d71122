"""Small pieces the learners share: set-up, optimizer, minibatch shuffling, metric means.

Each learner's `update` is written out in its own module (CleanRL style); what is here
would otherwise be copied word for word into each of them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from agents.learners.base import LearnerConfig

__all__ = [
    "MetricMean",
    "build_optimizer",
    "frozen_copy",
    "init_policy_learner",
    "minibatches",
    "optimizer_metrics",
]


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen, eval-mode deep copy (the KL reference policy)."""
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def init_policy_learner(
    learner: Any,
    policy: Any,
    config: LearnerConfig | None,
    *,
    ref_model: nn.Module | None,
    wants_reference: bool | None = None,
) -> None:
    """Constructor part every learner shares: set `config`, `policy`, `model`, `ref_model`.

    `config` defaults to `learner.config_class()` and must be an instance of it; gradient
    checkpointing is switched on when the config asks for it. A reference model is kept
    (default a frozen copy of the policy taken now) only when a KL term uses it
    (`kl_coef > 0`, or `wants_reference`): otherwise `ref_model` is None and no copy of
    the model is made.
    """
    learner.config = config if config is not None else learner.config_class()
    if not isinstance(learner.config, learner.config_class):
        raise ValueError(
            f"expected a {learner.config_class.__name__}, got {type(learner.config).__name__}"
        )
    learner.policy = policy
    learner.model = policy.model
    if learner.config.gradient_checkpointing:
        learner.model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    wanted = learner.config.kl_coef > 0 if wants_reference is None else wants_reference
    learner.ref_model = None
    if wanted:
        learner.ref_model = ref_model if ref_model is not None else frozen_copy(learner.model)


def build_optimizer(params: Any, config: LearnerConfig) -> torch.optim.Optimizer:
    """AdamW with the config's hyper-parameters (`params` may be param groups)."""
    return torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=config.adam_betas,
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
    )


def minibatches(n: int, num_minibatches: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffle `range(n)`, split it into `num_minibatches` near-equal chunks (CleanRL `b_inds`)."""
    if num_minibatches > n:
        raise ValueError(
            f"expected num_minibatches <= batch size, "
            f"got {num_minibatches} minibatches for {n} rows"
        )
    perm = torch.randperm(n, generator=generator)
    yield from (chunk for chunk in perm.tensor_split(num_minibatches) if len(chunk))


class MetricMean:
    """Weighted running means of named scalars (micro-batch metrics weighted by tokens)."""

    def __init__(self) -> None:
        self._sum: dict[str, float] = {}
        self._weight: dict[str, float] = {}

    def add(self, metrics: dict[str, float], weight: float = 1.0) -> None:
        """Accumulate `metrics` with `weight`."""
        for key, value in metrics.items():
            self._sum[key] = self._sum.get(key, 0.0) + float(value) * weight
            self._weight[key] = self._weight.get(key, 0.0) + weight

    def result(self) -> dict[str, float]:
        """Weighted means (NaN for a key whose total weight is 0)."""
        return {
            k: (self._sum[k] / self._weight[k] if self._weight[k] else math.nan) for k in self._sum
        }


def optimizer_metrics(
    optimizer: torch.optim.Optimizer, num_steps: int, num_micro: int
) -> dict[str, float]:
    """Learning rate and work counters every learner logs at the end of an update."""
    return {
        "actor/lr": float(optimizer.param_groups[0]["lr"]),
        "perf/optimizer_steps": float(num_steps),
        "perf/micro_batches": float(num_micro),
    }
