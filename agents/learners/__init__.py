"""Learners with one interface: `update(batch: TrainBatch) -> dict[str, float]`.

Build one by name: `make_learner("grpo", policy, lr=1e-6, kl_coef=0.001)`. Registered:
`grpo` (also RLOO / Dr.GRPO via `adv_estimator` / `norm_adv_by_std_in_grpo`), `ppo`
(value head + GAE), `reinforce_plus_plus`. Every learner multiplies advantages by the
batch's per-sample weights and never trains (or KL-penalises) prompt or prefix tokens.
`DPOLearner` (SAI-DPO) trains on preference pairs and is built directly, outside the
registry.
"""

from __future__ import annotations

from agents.learners.base import (
    LEARNER_REGISTRY,
    Learner,
    LearnerConfig,
    get_learner_class,
    make_learner,
    register_learner,
)
from agents.learners.dpo import DPOConfig, DPOLearner, PreferenceBatch
from agents.learners.grpo import GRPOConfig, GRPOLearner
from agents.learners.logprobs import micro_batches, sequence_logprobs, token_logprobs
from agents.learners.ppo import PPOConfig, PPOLearner, ValueHead
from agents.learners.reinforce_plus_plus import ReinforcePlusPlusConfig, ReinforcePlusPlusLearner

__all__ = [
    "DPOConfig",
    "DPOLearner",
    "PreferenceBatch",
    "LEARNER_REGISTRY",
    "GRPOConfig",
    "GRPOLearner",
    "Learner",
    "LearnerConfig",
    "PPOConfig",
    "PPOLearner",
    "ReinforcePlusPlusConfig",
    "ReinforcePlusPlusLearner",
    "ValueHead",
    "get_learner_class",
    "make_learner",
    "micro_batches",
    "register_learner",
    "sequence_logprobs",
    "token_logprobs",
]
