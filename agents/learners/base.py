"""What every learner shares: the config fields, the registry, and small helpers.

A learner is anything with `update(batch: TrainBatch) -> dict[str, float]` (flat metrics
with slash keys) plus `state_dict()` / `load_state_dict()` for checkpointing its optimizer
and RNG. Each algorithm's `update` is written out top to bottom in its own module
(`grpo.py`, `ppo.py`, ...); this module only holds what would otherwise be copied.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from agents.batch import TrainBatch
from agents.core_algos import (
    KL_ESTIMATORS,
    LOSS_AGG_MODES,
    agg_loss,
    compute_token_level_rewards,
    get_adv_estimator_fn,
    get_policy_loss_fn,
    kl_penalty,
    masked_mean,
)
from agents.fields import coerce_fields
from agents.learners.logprobs import micro_batches, token_logprobs

__all__ = [
    "LEARNER_REGISTRY",
    "Learner",
    "LearnerConfig",
    "MetricMean",
    "frozen_copy",
    "get_learner_class",
    "init_policy_learner",
    "make_learner",
    "minibatches",
    "no_grad_token_logprobs",
    "register_learner",
    "rollout_metrics",
    "run_policy_epochs",
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


# --------------------------------------------------------------------------- helpers


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
    wants_reference: Callable[[Any], bool],
) -> None:
    """Constructor part every learner shares: set `config`, `policy`, `model`, `ref_model`.

    `config` defaults to `learner.config_class()` and must be an instance of it; gradient
    checkpointing is switched on when the config asks for it; `ref_model` is kept (default
    a frozen copy of the policy taken now) only when `wants_reference(learner.config)`,
    else it is None.
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
    learner.ref_model = None
    if wants_reference(learner.config):
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


@torch.no_grad()
def no_grad_token_logprobs(
    model: nn.Module,
    batch: TrainBatch,
    *,
    token_budget: int | None,
    temperature: float = 1.0,
    value_head: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, L) log-probs (and values) of a whole batch in eval mode, micro-batched by tokens."""
    was_training = model.training
    model.eval()
    B, L = batch.input_ids.shape
    logprobs = torch.zeros(B, L, device=batch.input_ids.device)
    values = torch.zeros(B, L, device=batch.input_ids.device) if value_head is not None else None
    try:
        for micro in micro_batches(batch.seq_lengths, token_budget):
            rows = torch.tensor(micro, device=batch.input_ids.device)
            mb = batch.select(rows)
            width = mb.input_ids.shape[1]
            lp, v, _ = token_logprobs(
                model,
                mb.input_ids,
                mb.attention_mask,
                temperature=temperature,
                value_head=value_head,
            )
            logprobs[rows, :width] = lp * mb.attention_mask
            if values is not None and v is not None:
                values[rows, :width] = v * mb.attention_mask
    finally:
        model.train(was_training)
    return logprobs, values


def reference_and_token_rewards(
    ref_model: nn.Module | None,
    batch: TrainBatch,
    old_logprobs: torch.Tensor,
    mask: torch.Tensor,
    cfg: LearnerConfig,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Reference log-probs (None without a reference model) and token-level rewards.

    Why one place: every policy-gradient learner folds the per-token KL to the reference
    into the reward the same way when `use_kl_in_reward` (REINFORCE++, classic PPO);
    otherwise the rewards are the outcome score on the last response token.
    """
    ref_logprobs = None
    if ref_model is not None:
        ref_logprobs, _ = no_grad_token_logprobs(
            ref_model, batch, token_budget=cfg.token_budget, temperature=cfg.temperature
        )
    kl_in_reward = None
    if ref_logprobs is not None and cfg.use_kl_in_reward:
        kl_in_reward = kl_penalty(old_logprobs, ref_logprobs, cfg.kl_estimator) * mask
    token_level_rewards = compute_token_level_rewards(
        batch.rewards, mask, kl=kl_in_reward, kl_coef=cfg.kl_coef
    )
    return ref_logprobs, token_level_rewards


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


MicroStep = Callable[
    [TrainBatch, torch.Tensor, dict[str, Any]],
    tuple[torch.Tensor, dict[str, float], dict[str, float]],
]
"""`micro_step(mb, rows, agg) -> (loss, losses, metrics)` for `run_policy_epochs`.

`mb` is the micro-batch (`batch.select(rows)`), `rows` its row indices in the full batch,
`agg` the `agg_loss` keyword arguments of its minibatch (`loss_agg_mode`, `num_tokens`,
`num_seqs`, `norm_constant`). It returns the loss to backpropagate, the loss terms to
sum over the minibatch's micro-batches (`{"loss/policy": ..., "loss/kl": ...}`) and
metrics to average weighted by response tokens.
"""


def reference_kl(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    cfg: LearnerConfig,
    agg: dict[str, Any],
) -> tuple[torch.Tensor | None, float]:
    """One micro-batch's KL to the reference: the loss term (None if in the reward) and its mean.

    The loss term, to be added times `kl_coef`, is None when `use_kl_in_reward` already
    folded the KL into the reward; the mean is logged either way. Why one place: logging the
    KL while keeping it out of the loss when it sits in the reward is easy to get subtly
    wrong in each learner separately.
    """
    kl = kl_penalty(logprobs, ref_logprobs, cfg.kl_estimator)
    logged = float(masked_mean(kl.detach(), response_mask))
    if cfg.use_kl_in_reward:
        return None, logged
    return agg_loss(kl, response_mask, **agg), logged


def optimizer_metrics(
    optimizer: torch.optim.Optimizer, num_steps: int, num_micro: int, start: float
) -> dict[str, float]:
    """Learning rate and work counters every learner logs at the end of an update."""
    return {
        "actor/lr": float(optimizer.param_groups[0]["lr"]),
        "perf/optimizer_steps": float(num_steps),
        "perf/micro_batches": float(num_micro),
        "perf/update_seconds": time.perf_counter() - start,
    }


def policy_update_metrics(
    epoch_metrics: dict[str, float],
    batch: TrainBatch,
    advantages: torch.Tensor,
) -> dict[str, float]:
    """The metrics shared by the PPO-clip learners after `run_policy_epochs`.

    Renames the clip fractions to their logged names and adds the batch's rollout statistics
    and the advantages' range (`loss/kl` is there exactly when a KL term was in the loss).
    """
    out = dict(epoch_metrics)
    out["actor/clipfrac"] = out.pop("actor/pg_clipfrac", 0.0)
    out["actor/clipfrac_lower"] = out.pop("actor/pg_clipfrac_lower", 0.0)
    out.update(rollout_metrics(batch))
    response_advantages = advantages[batch.response_mask > 0]
    empty = response_advantages.numel() == 0
    out["advantages/mean"] = float(masked_mean(advantages, batch.response_mask))
    out["advantages/min"] = 0.0 if empty else float(response_advantages.min())
    out["advantages/max"] = 0.0 if empty else float(response_advantages.max())
    return out


def run_policy_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    batch: TrainBatch,
    config: LearnerConfig,
    *,
    params: list[nn.Parameter],
    micro_step: MicroStep,
) -> tuple[dict[str, float], int, int]:
    """Epochs x shuffled minibatches x token-budget micro-batches, one optimizer step each.

    For every minibatch: zero the gradients, call `micro_step` on each micro-batch and
    backpropagate its loss (gradients accumulate), clip the global norm of `params` to
    `config.max_grad_norm` and step. Losses are summed per minibatch (`loss/total` is
    added), then everything is averaged over the minibatches.

    Returns:
        `(metrics, num_optimizer_steps, num_micro_batches)`; metrics include
        `actor/grad_norm`.
    """
    cfg = config
    device = batch.input_ids.device
    mask = batch.response_mask
    norm_constant = cfg.loss_norm_constant or float(batch.response_lengths.max().clamp(min=1))
    metrics = MetricMean()
    model.train()
    num_steps = num_micro = 0
    for _epoch in range(cfg.epochs):
        for mb_rows in minibatches(len(batch), cfg.num_minibatches, generator):
            mb_rows = mb_rows.sort().values.to(device)  # row order within a step is irrelevant
            optimizer.zero_grad(set_to_none=True)
            mb_mask = mask[mb_rows]
            agg = {
                "loss_agg_mode": cfg.loss_agg_mode,
                "num_tokens": mb_mask.sum(),
                "num_seqs": (mb_mask.sum(dim=-1) > 0).sum(),
                "norm_constant": norm_constant,
            }
            step = MetricMean()
            losses: dict[str, float] = {}
            for micro in micro_batches(batch.seq_lengths[mb_rows], cfg.token_budget):
                rows = mb_rows[torch.tensor(micro, device=device)]
                mb = batch.select(rows)
                loss, micro_losses, micro_metrics = micro_step(mb, rows, agg)
                loss.backward()
                for key, value in {**micro_losses, "loss/total": float(loss.detach())}.items():
                    losses[key] = losses.get(key, 0.0) + value
                step.add(micro_metrics, weight=float(mb.response_mask.sum()))
                num_micro += 1
            grad_norm = torch.nn.utils.clip_grad_norm_(
                params, cfg.max_grad_norm if cfg.max_grad_norm is not None else math.inf
            )
            optimizer.step()
            metrics.add({**step.result(), **losses, "actor/grad_norm": float(grad_norm)})
            num_steps += 1
    return metrics.result(), num_steps, num_micro


def rollout_metrics(batch: TrainBatch) -> dict[str, float]:
    """Batch statistics logged by every learner: rewards, lengths, groups, weights, guidance."""
    rewards = batch.rewards.float()
    index = batch.index.to(rewards.device)
    num_groups = int(index.max()) + 1
    ones = torch.ones_like(rewards)
    count = torch.zeros(num_groups, device=rewards.device).scatter_add_(0, index, ones)
    mean = torch.zeros(num_groups, device=rewards.device).scatter_add_(0, index, rewards) / count
    dev = torch.zeros(num_groups, device=rewards.device).scatter_add_(
        0, index, (rewards - mean[index]) ** 2
    )
    prefix_lengths = batch.prefix_mask.sum(dim=-1)
    return {
        "rollout/reward_mean": float(rewards.mean()),
        "rollout/reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "rollout/frac_zero_std": float((dev <= 1e-12).float().mean()),
        "rollout/num_groups": float(num_groups),
        "rollout/response_length_mean": float(batch.response_lengths.float().mean()),
        "rollout/response_length_max": float(batch.response_lengths.max()),
        "rollout/prefix_length_mean": float(prefix_lengths.float().mean()),
        "rollout/frac_guided": float((prefix_lengths > 0).float().mean()),
        "rollout/num_sequences": float(len(batch)),
        "rollout/num_response_tokens": float(batch.num_response_tokens),
        "weights/mean": float(batch.weights.mean()),
        "weights/min": float(batch.weights.min()),
        "weights/max": float(batch.weights.max()),
    }
