"""The RL learners' shared config fields and their registry.

A learner is anything with `update(batch: TrainBatch) -> dict[str, float]` (flat metrics
with slash keys) plus `state_dict()` / `load_state_dict()` for checkpointing its optimizer
and RNG. Each algorithm's `update` is written out top to bottom in its own module
(`grpo.py`, `ppo.py`); small pieces they share (optimizer, minibatch shuffling, metric
means) are in `common.py`, log-probabilities in `logprobs.py`. DPO trains on preference
pairs, not on rollouts, and is not in this registry (`agents.learners.dpo`).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agents.batch import TrainBatch
from agents.core_algos import (
    KL_ESTIMATORS,
    LOSS_AGG_MODES,
    get_adv_estimator_fn,
    get_policy_loss_fn,
)
from agents.fields import coerce_fields

__all__ = [
    "LEARNER_REGISTRY",
    "Learner",
    "LearnerConfig",
    "get_learner_class",
    "make_learner",
    "register_learner",
]


@dataclass
class LearnerConfig:
    """Fields shared by the policy-gradient learners (verl / TRL names in brackets).

    Attributes:
        lr: AdamW learning rate of the policy [verl `actor.optim.lr`, TRL `learning_rate`].
        weight_decay: AdamW weight decay.
        adam_betas: AdamW betas.
        adam_eps: AdamW epsilon.
        max_grad_norm: clip the global gradient norm to this; None = no clipping
            (the norm is still reported) [verl `grad_clip`].
        epochs: passes over the batch per `update` [verl `ppo_epochs`, TRL `num_iterations`].
        num_minibatches: optimizer steps per epoch; the batch is shuffled and split
            [CleanRL `num_minibatches`].
        token_budget: max padded tokens per forward/backward micro-batch; micro-batch
            gradients are accumulated into one optimizer step and the result does not
            depend on the budget. None = the whole minibatch at once
            [verl `ppo_max_token_len_per_gpu`].
        gradient_checkpointing: recompute activations in backward (less memory, ~30% slower).
        adv_estimator: registry name of the advantage estimator (`agents.core_algos`).
        norm_adv_by_std_in_grpo: divide GRPO advantages by the group std (False = Dr.GRPO)
            [TRL `scale_rewards="group"|"none"`].
        gamma: discount for `reinforce_plus_plus` and `gae`.
        lam: GAE lambda.
        policy_loss: registry name of the policy loss (`vanilla` = PPO-clip).
        clip_ratio_low: lower PPO clip epsilon [TRL `epsilon`].
        clip_ratio_high: upper PPO clip epsilon; 0.28 is DAPO's clip-higher [TRL `epsilon_high`].
        clip_ratio_c: dual-clip constant (> 1) for negative advantages; None = off.
        loss_agg_mode: `token-mean` | `seq-mean-token-sum` | `seq-mean-token-mean` |
            `seq-mean-token-sum-norm` (see `agents.core_algos.agg_loss`).
        loss_norm_constant: divisor of `seq-mean-token-sum-norm`; None = the longest
            response of the batch (set it to `max_new_tokens` for Dr.GRPO).
        kl_coef: KL coefficient; 0 = no reference model is kept (saves a model copy).
        kl_estimator: `k1` | `k2` | `k3` (or `kl`, `mse`, `low_var_kl`, `abs`).
        use_kl_in_reward: fold the per-token KL into the reward (REINFORCE++, classic PPO)
            instead of adding it to the loss (GRPO) [verl `use_kl_in_reward`].
        recompute_old_logprobs: recompute behaviour log-probs with the current policy
            before updating (rollout engines differ numerically); False trusts
            `batch.old_logprobs` from the sampler.
        temperature: sampling temperature of the rollouts; logits are divided by it when
            computing log-probs so ratios compare like with like (verl does the same).
        normalize_weights: rescale per-sample weights to mean 1 over the batch (keeps the
            effective step size); False keeps them as given, so a sample's gradient
            contribution is linear in its weight.
        seed: seeds minibatch shuffling.
    """

    lr: float = 1e-6
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    epochs: int = 1
    num_minibatches: int = 1
    token_budget: int | None = None
    gradient_checkpointing: bool = False
    adv_estimator: str = "grpo"
    norm_adv_by_std_in_grpo: bool = True
    gamma: float = 1.0
    lam: float = 1.0
    policy_loss: str = "vanilla"
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float | None = None
    loss_agg_mode: str = "token-mean"
    loss_norm_constant: float | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    use_kl_in_reward: bool = False
    recompute_old_logprobs: bool = True
    temperature: float = 1.0
    normalize_weights: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        coerce_fields(self)  # "1e-5" from YAML -> 1e-5; a string for a bool is refused
        name = type(self).__name__
        checks = [
            ("lr", self.lr >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "> 0 or None"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("num_minibatches", self.num_minibatches >= 1, ">= 1"),
            ("token_budget", self.token_budget is None or self.token_budget >= 1, ">= 1 or None"),
            ("gamma", 0 <= self.gamma <= 1, "in [0, 1]"),
            ("lam", 0 <= self.lam <= 1, "in [0, 1]"),
            ("clip_ratio_low", 0 <= self.clip_ratio_low < 1, "in [0, 1)"),
            ("clip_ratio_high", self.clip_ratio_high >= 0, ">= 0"),
            ("clip_ratio_c", self.clip_ratio_c is None or self.clip_ratio_c > 1, "> 1 or None"),
            (
                "loss_agg_mode",
                self.loss_agg_mode in LOSS_AGG_MODES,
                f"one of {list(LOSS_AGG_MODES)}",
            ),
            (
                "loss_norm_constant",
                self.loss_norm_constant is None or self.loss_norm_constant > 0,
                "> 0 or None",
            ),
            ("kl_coef", self.kl_coef >= 0, ">= 0"),
            ("kl_estimator", self.kl_estimator in KL_ESTIMATORS, f"one of {list(KL_ESTIMATORS)}"),
            ("temperature", self.temperature > 0, "> 0 (use 1.0 for greedy rollouts)"),
        ]
        for field_name, ok, expected in checks:
            if not ok:
                raise ValueError(
                    f"{name} expects {field_name} {expected}, got {getattr(self, field_name)!r}"
                )
        get_adv_estimator_fn(self.adv_estimator)
        get_policy_loss_fn(self.policy_loss)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> LearnerConfig:
        """Build from keyword arguments; an unknown key raises with the valid field names."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"expected a {cls.__name__} field in {names}, got {key!r}.{hint}")
        return cls(**kwargs)


@runtime_checkable
class Learner(Protocol):
    """The interface the trainer relies on."""

    config: LearnerConfig

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """One training update on a batch of rollouts; returns flat slash-keyed metrics."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, RNG and any learner-owned modules (not the policy weights)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        ...


LEARNER_REGISTRY: dict[str, type] = {}


def register_learner(name: str) -> Callable[[type], type]:
    """Class decorator: register a learner; a different class under a taken name raises."""

    def decorator(cls: type) -> type:
        existing = LEARNER_REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"expected a free learner name, got {name!r} which is already registered to "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        LEARNER_REGISTRY[name] = cls
        return cls

    return decorator


def get_learner_class(name: str) -> type:
    """Return the learner class registered as `name`; the error lists valid names."""
    if name in LEARNER_REGISTRY:
        return LEARNER_REGISTRY[name]
    valid = sorted(LEARNER_REGISTRY)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"expected a learner name in {valid}, got {name!r}.{hint}")


def make_learner(name: str, policy: Any, **config: Any) -> Learner:
    """Build a registered learner: `make_learner("grpo", policy, lr=1e-6, kl_coef=0.001)`.

    Args:
        name: registry name (`grpo`, `ppo`, `reinforce_plus_plus`, ...).
        policy: the `agents.policy.Policy` to train.
        **config: fields of the learner's config dataclass (unknown keys raise).
    """
    cls = get_learner_class(name)
    return cls(policy, cls.config_class.from_kwargs(**config))
