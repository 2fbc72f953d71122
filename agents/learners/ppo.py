"""PPO with a value head and GAE (arXiv 1707.06347; RLHF form as in verl / OpenRLHF).

The critic is a linear value head on the policy's last hidden state, so PPO costs one
model copy (plus the optional reference), not two. By default the value loss trains only
the head (`critic_trains_trunk=False`): the language model is shaped by the policy loss
alone, as with verl's separate critic, at the price of a weaker critic. Set it to True
for CleanRL's shared-network variant (`loss = pg + vf_coef * vf`).

The update reads top to bottom:

1. old log-probs and values (no grad), reference log-probs if `kl_coef > 0` (GAE needs
   the values before the loss, so unlike GRPO this pass is never skipped);
2. token-level rewards: outcome on the last token, minus `kl_coef * k1` per token;
3. GAE advantages and returns (whitened advantages) × per-sample weights;
4. epochs × minibatches × micro-batches: PPO-clip + clipped value loss (+ KL loss if
   `use_kl_in_reward=False`), one AdamW step per minibatch;
5. metrics, including the critic's explained variance.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from agents.batch import TrainBatch
from agents.core_algos import (
    agg_loss,
    compute_token_level_rewards,
    compute_value_loss,
    explained_variance,
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

__all__ = ["PPOConfig", "PPOLearner", "ValueHead"]


@dataclass
class PPOConfig(LearnerConfig):
    """PPO defaults (verl names).

    Attributes:
        critic_lr: learning rate of the value head (verl `critic.optim.lr` = 1e-5).
        vf_coef: weight of the value loss in the total loss.
        cliprange_value: value clipping around the rollout-time values; None = off.
        critic_trains_trunk: let the value loss also update the language model.
        epochs: PPO reuses each batch (CleanRL `update_epochs`); 1 by default like verl.
    """

    adv_estimator: str = "gae"
    use_kl_in_reward: bool = True
    kl_estimator: str = "k1"
    kl_coef: float = 0.0
    critic_lr: float = 1e-5
    vf_coef: float = 0.5
    cliprange_value: float | None = 0.2
    critic_trains_trunk: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic_lr < 0:
            raise ValueError(f"PPOConfig expects critic_lr >= 0, got {self.critic_lr}")
        if self.vf_coef < 0:
            raise ValueError(f"PPOConfig expects vf_coef >= 0, got {self.vf_coef}")
        if self.cliprange_value is not None and self.cliprange_value <= 0:
            raise ValueError(
                f"PPOConfig expects cliprange_value > 0 or None, got {self.cliprange_value}"
            )


class ValueHead(nn.Module):
    """`V(s_t) = w . h_t + b` on the last hidden state, zero-initialised.

    Zero init makes the first GAE equal Monte-Carlo returns (`V = 0`), which for 0/1
    verifiable rewards is a sane start; the head is kept in float32 even for bf16 models.
    """

    def __init__(self, hidden_size: int, *, detach_input: bool = True) -> None:
        super().__init__()
        self.detach_input = detach_input
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, H) hidden states -> (B, T, 1) values."""
        if self.detach_input:
            hidden = hidden.detach()
        return self.linear(hidden)


@register_learner("ppo")
class PPOLearner:
    """PPO learner with a value head on the policy.

    Args:
        policy: the policy to train.
        config: a `PPOConfig`.
        ref_model: reference for the KL term; default a frozen copy if `kl_coef > 0`.
    """

    config_class: type[LearnerConfig] = PPOConfig

    def __init__(
        self,
        policy: Policy,
        config: PPOConfig | None = None,
        *,
        ref_model: nn.Module | None = None,
    ) -> None:
        init_policy_learner(self, policy, config, ref_model=ref_model)
        self.config: PPOConfig
        hidden_size = self.model.get_input_embeddings().embedding_dim
        self.value_head = ValueHead(
            hidden_size, detach_input=not self.config.critic_trains_trunk
        ).to(policy.device)
        self.optimizer = build_optimizer(
            [
                {"params": list(self.model.parameters()), "lr": self.config.lr},
                {"params": list(self.value_head.parameters()), "lr": self.config.critic_lr},
            ],
            self.config,
        )
        self.generator = torch.Generator().manual_seed(self.config.seed)

    def update(self, batch: TrainBatch) -> dict[str, float]:
        """One PPO update on `batch`; returns flat metrics (`loss/policy`, `critic/...`)."""
        cfg = self.config
        device = self.policy.device
        batch = batch.to(device)
        mask = batch.response_mask
        weights = batch.weights
        if cfg.normalize_weights:
            weights = weights / weights.mean().clamp(min=1e-8)

        # 1. old log-probs and values, reference log-probs, without gradient
        logprobs_now, old_values = no_grad_token_logprobs(
            self.model,
            batch,
            token_budget=cfg.token_budget,
            temperature=cfg.temperature,
            value_head=self.value_head,
        )
        old_logprobs = logprobs_now if cfg.recompute_old_logprobs else batch.old_logprobs
        assert old_values is not None  # a value head was given
        old_values = old_values * mask
        ref_logprobs = None
        if self.ref_model is not None:
            ref_logprobs, _ = no_grad_token_logprobs(
                self.ref_model, batch, token_budget=cfg.token_budget, temperature=cfg.temperature
            )

        # 2. token-level rewards: outcome on the last token, minus kl_coef * KL per token
        kl_in_reward = None
        if ref_logprobs is not None and cfg.use_kl_in_reward:
            kl_in_reward = kl_penalty(old_logprobs, ref_logprobs, cfg.kl_estimator) * mask
        token_level_rewards = compute_token_level_rewards(
            batch.rewards, mask, kl=kl_in_reward, kl_coef=cfg.kl_coef
        )

        # 3. GAE advantages and returns; the weights scale the policy term only
        estimator = get_adv_estimator_fn(cfg.adv_estimator)
        advantages, returns = estimator(
            token_level_rewards,
            mask,
            index=batch.index,
            values=old_values,
            gamma=cfg.gamma,
            lam=cfg.lam,
            norm_adv_by_std_in_grpo=cfg.norm_adv_by_std_in_grpo,
        )
        advantages = advantages * weights[:, None]

        # 4. epochs x shuffled minibatches x token-budget micro-batches: PPO-clip + value
        # (+ KL) loss, gradients accumulated into one clipped AdamW step per minibatch
        policy_loss_fn = get_policy_loss_fn(cfg.policy_loss)
        params = [p for p in self.model.parameters() if p.requires_grad]
        params += list(self.value_head.parameters())
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
                for micro in micro_batches(batch.seq_lengths[mb_rows], cfg.token_budget):
                    rows = mb_rows[torch.tensor(micro, device=device)]
                    mb = batch.select(rows)
                    width = mb.input_ids.shape[1]
                    logprobs, vpreds, entropy = token_logprobs(
                        self.model, mb.input_ids, mb.attention_mask,
                        temperature=cfg.temperature, value_head=self.value_head,
                        with_entropy=True, positions=mb.response_mask,
                    )
                    assert vpreds is not None  # a value head was given
                    pg_loss, step_metrics = policy_loss_fn(
                        old_logprobs[rows, :width],
                        logprobs,
                        advantages[rows, :width],
                        mb.response_mask,
                        clip_ratio_low=cfg.clip_ratio_low,
                        clip_ratio_high=cfg.clip_ratio_high,
                        clip_ratio_c=cfg.clip_ratio_c,
                        **agg,
                    )
                    vf_loss, vf_metrics = compute_value_loss(
                        vpreds,
                        old_values[rows, :width],
                        returns[rows, :width],
                        mb.response_mask,
                        cliprange_value=cfg.cliprange_value,
                        **agg,
                    )
                    step_metrics.update(vf_metrics)
                    loss = pg_loss + cfg.vf_coef * vf_loss
                    losses["loss/policy"] += float(pg_loss.detach())
                    losses["loss/value"] += float(vf_loss.detach())
                    if ref_logprobs is not None:
                        kl = kl_penalty(logprobs, ref_logprobs[rows, :width], cfg.kl_estimator)
                        kl_mean = masked_mean(kl.detach(), mb.response_mask)
                        step_metrics["actor/kl_ref"] = float(kl_mean)
                        if not cfg.use_kl_in_reward:
                            kl_loss = agg_loss(kl, mb.response_mask, **agg)
                            loss = loss + cfg.kl_coef * kl_loss
                            losses["loss/kl"] += float(kl_loss.detach())
                    step_metrics["actor/entropy"] = float(masked_mean(entropy, mb.response_mask))
                    loss.backward()
                    losses["loss/total"] += float(loss.detach())
                    micro_metrics.add(step_metrics, weight=float(mb.response_mask.sum()))
                    num_micro += 1
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                self.optimizer.step()
                metrics.add(
                    {**micro_metrics.result(), **losses, "actor/grad_norm": float(grad_norm)}
                )
                num_steps += 1

        # 5. metrics, including the critic's explained variance
        out = metrics.result()
        out["actor/clipfrac"] = out.pop("actor/pg_clipfrac")
        out["actor/clipfrac_lower"] = out.pop("actor/pg_clipfrac_lower")
        response_advantages = advantages[mask > 0]
        empty = response_advantages.numel() == 0
        out["advantages/mean"] = float(masked_mean(advantages, mask))
        out["advantages/min"] = 0.0 if empty else float(response_advantages.min())
        out["advantages/max"] = 0.0 if empty else float(response_advantages.max())
        out["critic/value_mean"] = float(masked_mean(old_values, mask))
        out["critic/returns_mean"] = float(masked_mean(returns, mask))
        out["critic/explained_var"] = explained_variance(old_values, returns, mask)
        out.update(optimizer_metrics(self.optimizer, num_steps, num_micro))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, value head and shuffling RNG (policy weights are saved by the trainer)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "value_head": self.value_head.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
