"""REINFORCE++ (arXiv 2501.03262): PPO-clip, KL in the reward, global advantage whitening.

REINFORCE with PPO's clipped ratio, the per-token KL folded into the reward, and global
advantage whitening instead of a critic or a per-group std.

The update is GRPO's (`agents.learners.grpo`) with other defaults — the only differences
between the two algorithms are the advantage estimator and where the KL goes — so this
module holds the defaults and their reasons, not a second copy of the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.learners.base import LearnerConfig, register_learner
from agents.learners.grpo import GRPOLearner

__all__ = ["ReinforcePlusPlusConfig", "ReinforcePlusPlusLearner"]


@dataclass
class ReinforcePlusPlusConfig(LearnerConfig):
    """REINFORCE++ defaults, as OpenRLHF / verl run it.

    - `adv_estimator="reinforce_plus_plus"`: discounted return of token rewards, whitened
      over all response tokens of the batch; `reinforce_plus_plus_baseline` subtracts the
      group mean first (OpenRLHF's recommendation for RLVR).
    - `use_kl_in_reward=True`, `kl_estimator="k1"`: a per-token penalty `-kl_coef * k1`
      on every response token, the placement the paper uses (OpenRLHF warns to use k1 in
      the reward and k2/k3 in the loss).
    - `kl_coef=0.001`: small, so the verifiable reward dominates; keeps a reference model.
    """

    adv_estimator: str = "reinforce_plus_plus"
    use_kl_in_reward: bool = True
    kl_estimator: str = "k1"
    kl_coef: float = 0.001
    skip_rows_without_gradient: bool = True
    """As in `GRPOConfig`; with the default KL in the reward no row's advantage is 0, so
    every row runs anyway."""


@register_learner("reinforce_plus_plus")
class ReinforcePlusPlusLearner(GRPOLearner):
    """GRPO's update with `ReinforcePlusPlusConfig` (see `GRPOLearner` for arguments)."""

    config_class: type[LearnerConfig] = ReinforcePlusPlusConfig
