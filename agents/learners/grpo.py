"""GRPO (DeepSeekMath, arXiv 2402.03300): PPO-clip without a critic, group-relative advantages.

The update reads top to bottom, CleanRL style:

1. log-probs of the rollouts under the current policy (the "old" policy of this update)
   and, if `kl_coef > 0`, under the frozen reference. With one epoch of one minibatch the
   ratio is 1 by construction, so the old log-probs are the first forward's own, detached:
   no extra no-grad pass (`reuses_old_logprobs`);
2. token-level rewards (outcome reward on the last response token; minus the per-token
   KL when `use_kl_in_reward`);
3. advantages from the registry (`grpo` by default), multiplied by the per-sample weights;
4. epochs × shuffled minibatches × token-budget micro-batches: PPO-clip loss (+ KL loss),
   accumulated gradients, one clipped AdamW step per minibatch. A row whose advantage is 0
   at every response token has a PPO-clip loss of exactly 0 whatever its log-probs, so
   when nothing else acts on it (no KL loss) it is not run through the model at all: the
   gradient and the optimizer step are the same, the compute is not spent. With a small
   model most GRPO groups are all-fail, so this often halves an update;
5. metrics (`actor/*` over the rows that went through the model).

Prefix tokens are on the prompt side of `response_mask`, so they get no policy gradient
and no KL. The same class, with another `adv_estimator`, gives RLOO or Dr.GRPO, and with
REINFORCE++ defaults gives `ReinforcePlusPlusLearner`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from agents.batch import TrainBatch
from agents.core_algos import (
    agg_loss,
    compute_token_level_rewards,
    get_adv_estimator_fn,
    get_policy_loss_fn,
    kl_penalty,
    masked_mean,
)
from agents.learners.base import LearnerConfig, register_learner
from agents.learners.common import (
    MetricMean,
    build_optimizer,
    init_policy_learner,
    minibatches,
    optimizer_metrics,
)
from agents.learners.logprobs import micro_batches, no_grad_token_logprobs, token_logprobs
from agents.policy import Policy

__all__ = ["GRPOConfig", "GRPOLearner"]

# Policy losses whose value is a sum over rows with each row's term proportional to its
# advantage: a row with zero advantages adds exactly nothing. Values: their per-micro-batch
# metrics, null when no row of the update went through the model.
ROW_SEPARABLE_LOSSES: dict[str, tuple[str, ...]] = {
    "vanilla": ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl",
                "actor/approx_kl", "actor/entropy"),
}


@dataclass
class GRPOConfig(LearnerConfig):
    """GRPO defaults: group-normalised advantages, KL (k3) in the loss, off by default.

    `kl_coef=0` as in TRL (`beta=0.0`) and Dr.GRPO: no reference model is loaded.
    Set `kl_coef=0.001` for verl's GRPO example (`use_kl_loss`, `low_var_kl`).
    """

    adv_estimator: str = "grpo"
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    use_kl_in_reward: bool = False
    skip_rows_without_gradient: bool = True
    """Rows whose advantage is 0 at every response token skip the model (their loss is
    exactly 0; nothing else changes). False runs every row: equal work when comparing
    frameworks, or `actor/entropy` over all rows."""


@register_learner("grpo")
class GRPOLearner:
    """Critic-free PPO-clip learner over a `Policy`.

    Args:
        policy: the policy to train (its model is updated in place).
        config: a `GRPOConfig` (default values if None).
        ref_model: reference model for the KL term; default a frozen copy of the policy
            taken now, created only when `config.kl_coef > 0`.
    """

    config_class: type[LearnerConfig] = GRPOConfig

    def __init__(
        self,
        policy: Policy,
        config: LearnerConfig | None = None,
        *,
        ref_model: torch.nn.Module | None = None,
    ) -> None:
        init_policy_learner(self, policy, config, ref_model=ref_model)
        self.optimizer = build_optimizer(self.model.parameters(), self.config)
        self.generator = torch.Generator().manual_seed(self.config.seed)

    @property
    def reuses_old_logprobs(self) -> bool:
        """True when the old log-probs are taken from the update's own first forward.

        With one epoch of one minibatch the policy has not moved when its log-probs are
        computed, so the ratio is 1 by construction and a separate no-grad pass would
        compute the same numbers. Not when the advantages need the log-probs first (a KL
        folded into the reward) or when the sampler's log-probs are trusted instead.
        """
        cfg = self.config
        kl_in_reward = cfg.use_kl_in_reward and self.ref_model is not None
        return (cfg.epochs == 1 and cfg.num_minibatches == 1 and cfg.recompute_old_logprobs
                and not kl_in_reward)

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """One GRPO update on `batch`; returns flat metrics (`loss/policy`, `actor/...`)."""
        cfg = self.config
        device = self.policy.device
        batch = batch.to(device)
        mask = batch.response_mask
        weights = batch.weights
        if cfg.normalize_weights:
            weights = weights / weights.mean().clamp(min=1e-8)

        # 1. old (behaviour) log-probs and reference log-probs, without gradient
        reuse = self.reuses_old_logprobs
        old_logprobs = None
        if not reuse:
            old_logprobs = batch.old_logprobs
            if cfg.recompute_old_logprobs:
                old_logprobs, _ = no_grad_token_logprobs(
                    self.model, batch, token_budget=cfg.token_budget, temperature=cfg.temperature
                )
        ref_logprobs = None
        if self.ref_model is not None:
            ref_logprobs, _ = no_grad_token_logprobs(
                self.ref_model, batch, token_budget=cfg.token_budget, temperature=cfg.temperature
            )

        # 2. token-level rewards: the outcome on the last response token, minus
        # kl_coef * KL per token when the KL goes into the reward (REINFORCE++)
        kl_in_reward = None
        if ref_logprobs is not None and cfg.use_kl_in_reward:
            assert old_logprobs is not None  # reuses_old_logprobs is False with a KL reward
            kl_in_reward = kl_penalty(old_logprobs, ref_logprobs, cfg.kl_estimator) * mask
        token_level_rewards = compute_token_level_rewards(
            batch.rewards, mask, kl=kl_in_reward, kl_coef=cfg.kl_coef
        )

        # 3. advantages from the registry, scaled per sample by the sampler's weights
        estimator = get_adv_estimator_fn(cfg.adv_estimator)
        advantages, _ = estimator(
            token_level_rewards,
            mask,
            index=batch.index,
            gamma=cfg.gamma,
            lam=cfg.lam,
            norm_adv_by_std_in_grpo=cfg.norm_adv_by_std_in_grpo,
        )
        advantages = advantages * weights[:, None]
        carries_gradient = ((advantages != 0) & (mask > 0)).any(dim=-1)
        if (cfg.skip_rows_without_gradient and ref_logprobs is None
                and cfg.policy_loss in ROW_SEPARABLE_LOSSES):
            run_rows = carries_gradient
        else:  # a KL loss (or a loss not known to be row-separable) acts on every row
            run_rows = torch.ones_like(carries_gradient)

        # 4. epochs x shuffled minibatches x token-budget micro-batches; gradients of the
        # micro-batches accumulate into one clipped AdamW step per minibatch
        policy_loss_fn = get_policy_loss_fn(cfg.policy_loss)
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else math.inf
        norm_constant = cfg.loss_norm_constant or float(batch.response_lengths.max().clamp(min=1))
        metrics = MetricMean()
        num_steps = num_micro = 0
        self.model.train()
        for _epoch in range(cfg.epochs):
            for mb_rows in minibatches(len(batch), cfg.num_minibatches, self.generator):
                mb_rows = mb_rows.sort().values.to(device)
                self.optimizer.zero_grad(set_to_none=True)
                agg = {  # the loss is normalised by whole-minibatch totals
                    "loss_agg_mode": cfg.loss_agg_mode,
                    "num_tokens": mask[mb_rows].sum(),
                    "num_seqs": (mask[mb_rows].sum(dim=-1) > 0).sum(),
                    "norm_constant": norm_constant,
                }
                losses: dict[str, float] = defaultdict(float)
                micro_metrics = MetricMean()
                live = mb_rows[run_rows[mb_rows]]
                for micro in micro_batches(batch.seq_lengths[live], cfg.token_budget):
                    rows = live[torch.tensor(micro, device=device)]
                    mb = batch.select(rows)
                    width = mb.input_ids.shape[1]
                    logprobs, _, entropy = token_logprobs(
                        self.model, mb.input_ids, mb.attention_mask,
                        temperature=cfg.temperature, with_entropy=True,
                        positions=mb.response_mask,
                    )
                    old = logprobs.detach() if reuse else old_logprobs[rows, :width]
                    pg_loss, pg_metrics = policy_loss_fn(
                        old,
                        logprobs,
                        advantages[rows, :width],
                        mb.response_mask,
                        clip_ratio_low=cfg.clip_ratio_low,
                        clip_ratio_high=cfg.clip_ratio_high,
                        clip_ratio_c=cfg.clip_ratio_c,
                        **agg,
                    )
                    loss = pg_loss
                    losses["loss/policy"] += float(pg_loss.detach())
                    if ref_logprobs is not None:
                        kl = kl_penalty(logprobs, ref_logprobs[rows, :width], cfg.kl_estimator)
                        kl_mean = masked_mean(kl.detach(), mb.response_mask)
                        pg_metrics["actor/kl_ref"] = float(kl_mean)
                        if not cfg.use_kl_in_reward:
                            kl_loss = agg_loss(kl, mb.response_mask, **agg)
                            loss = loss + cfg.kl_coef * kl_loss
                            losses["loss/kl"] += float(kl_loss.detach())
                    pg_metrics["actor/entropy"] = float(masked_mean(entropy, mb.response_mask))
                    loss.backward()
                    losses["loss/total"] += float(loss.detach())
                    micro_metrics.add(pg_metrics, weight=float(mb.response_mask.sum()))
                    num_micro += 1
                if len(live) == 0:  # no row carries a gradient: the same AdamW step on zeros
                    for p in params:
                        p.grad = torch.zeros_like(p)
                    losses.update({"loss/policy": 0.0, "loss/total": 0.0})
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                self.optimizer.step()
                metrics.add(
                    {**micro_metrics.result(), **losses, "actor/grad_norm": float(grad_norm)}
                )
                num_steps += 1

        # 5. metrics
        out = metrics.result()
        for key in ROW_SEPARABLE_LOSSES.get(cfg.policy_loss, ()):
            out.setdefault(key, math.nan)  # no row went through the model: null
        out["actor/clipfrac"] = out.pop("actor/pg_clipfrac")
        out["actor/clipfrac_lower"] = out.pop("actor/pg_clipfrac_lower")
        response_advantages = advantages[mask > 0]
        empty = response_advantages.numel() == 0
        out["advantages/mean"] = float(masked_mean(advantages, mask))
        out["advantages/min"] = 0.0 if empty else float(response_advantages.min())
        out["advantages/max"] = 0.0 if empty else float(response_advantages.max())
        out.update(optimizer_metrics(self.optimizer, num_steps, num_micro))
        out["perf/rows_without_gradient"] = float((~carries_gradient).sum())
        return out

    def state_dict(self) -> dict[str, Any]:
        """Optimizer and shuffling RNG (policy weights are saved by the trainer)."""
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
