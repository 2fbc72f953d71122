"""GRPO (DeepSeekMath, arXiv 2402.03300): PPO-clip without a critic, group-relative advantages.

The update reads top to bottom, CleanRL style:

1. log-probs of the rollouts under the current policy (the "old" policy of this update)
   and, if `kl_coef > 0`, under the frozen reference;
2. token-level rewards (outcome reward on the last response token; minus the per-token
   KL when `use_kl_in_reward`);
3. advantages from the registry (`grpo` by default), multiplied by the per-sample weights;
4. epochs × shuffled minibatches × token-budget micro-batches: PPO-clip loss (+ KL loss),
   accumulated gradients, one clipped AdamW step per minibatch;
5. metrics.

Prefix tokens are on the prompt side of `response_mask`, so they get no policy gradient
and no KL. The same class, with another `adv_estimator`, gives RLOO or Dr.GRPO, and with
REINFORCE++ defaults gives `ReinforcePlusPlusLearner`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from agents.batch import TrainBatch
from agents.core_algos import (
    get_adv_estimator_fn,
    get_policy_loss_fn,
    masked_mean,
)
from agents.learners.base import (
    LearnerConfig,
    build_optimizer,
    init_policy_learner,
    no_grad_token_logprobs,
    optimizer_metrics,
    policy_update_metrics,
    reference_and_token_rewards,
    reference_kl,
    register_learner,
    run_policy_epochs,
)
from agents.learners.logprobs import token_logprobs
from agents.policy import Policy

__all__ = ["GRPOConfig", "GRPOLearner"]


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
        init_policy_learner(
            self, policy, config, ref_model=ref_model, wants_reference=lambda cfg: cfg.kl_coef > 0
        )
        self.optimizer = build_optimizer(self.model.parameters(), self.config)
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """One GRPO update on `batch`; returns flat metrics (`loss/policy`, `actor/...`)."""
        cfg = self.config
        start = time.perf_counter()
        device = self.policy.device
        batch = batch.to(device)
        mask = batch.response_mask
        weights = batch.weights
        if cfg.normalize_weights:
            weights = weights / weights.mean().clamp(min=1e-8)

        # 1-2. log-probs under the old (= current) policy and the reference; token-level
        # rewards, with the KL penalty folded in when requested
        if cfg.recompute_old_logprobs:
            old_logprobs, _ = no_grad_token_logprobs(
                self.model, batch, token_budget=cfg.token_budget, temperature=cfg.temperature
            )
        else:
            old_logprobs = batch.old_logprobs
        ref_logprobs, token_level_rewards = reference_and_token_rewards(
            self.ref_model, batch, old_logprobs, mask, cfg
        )

        # 3. advantages, scaled per sample by the sampler's weights
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

        # 4. epochs x minibatches x micro-batches: PPO-clip (+ KL) loss, one AdamW step each
        policy_loss_fn = get_policy_loss_fn(cfg.policy_loss)

        def micro_step(
            mb: TrainBatch, rows: torch.Tensor, agg: dict[str, Any]
        ) -> tuple[torch.Tensor, dict[str, float], dict[str, float]]:
            width = mb.input_ids.shape[1]
            logprobs, _, entropy = token_logprobs(
                self.model,
                mb.input_ids,
                mb.attention_mask,
                temperature=cfg.temperature,
                with_entropy=True,
            )
            pg_loss, pg_metrics = policy_loss_fn(
                old_logprobs[rows, :width],
                logprobs,
                advantages[rows, :width],
                mb.response_mask,
                clip_ratio_low=cfg.clip_ratio_low,
                clip_ratio_high=cfg.clip_ratio_high,
                clip_ratio_c=cfg.clip_ratio_c,
                **agg,
            )
            loss = pg_loss
            losses = {"loss/policy": float(pg_loss.detach())}
            micro_metrics = dict(pg_metrics)
            if ref_logprobs is not None:
                kl_loss, micro_metrics["actor/kl_ref"] = reference_kl(
                    logprobs, ref_logprobs[rows, :width], mb.response_mask, cfg, agg
                )
                if kl_loss is not None:
                    loss = loss + cfg.kl_coef * kl_loss
                    losses["loss/kl"] = float(kl_loss.detach())
            micro_metrics["actor/entropy"] = float(masked_mean(entropy, mb.response_mask))
            return loss, losses, micro_metrics

        params = [p for p in self.model.parameters() if p.requires_grad]
        out, num_steps, num_micro = run_policy_epochs(
            self.model,
            self.optimizer,
            self.generator,
            batch,
            cfg,
            params=params,
            micro_step=micro_step,
        )

        # 5. metrics
        out = policy_update_metrics(out, batch, advantages)
        out.update(optimizer_metrics(self.optimizer, num_steps, num_micro, start))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Optimizer and shuffling RNG (policy weights are saved by the trainer)."""
        return {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
