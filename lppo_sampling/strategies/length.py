"""Length curriculum ("Train Long, Think Short", arXiv 2508.08940): a budget that tightens.

Every rollout of step t gets a token budget B(t) that starts generous and never grows:

    exponential:  B(t) = max(B_min, ⌊B0 · γ^⌊t / period⌋⌋)
    linear:       B(t) = max(B_min, ⌊B0 − (B0 − B_min) · min(1, t / decay_steps)⌋)

with t the strategy's step (observations so far) and B0 = 256 as in the paper's tests.
The plan carries it per sample as reset options (`RolloutPlan.options`):
``{"max_new_tokens": B, "length_reward": True, "w_correct": ..., "w_length": ...,
"w_format": ...}``; the trainer caps generation at B and `lppo_env` computes the
composite reward (correctness + length efficiency + format) in `step`
(`lppo_env.length_reward`). The sampler then sees that composite reward, in [0, 1].
Selection is uniform; the budget is the curriculum.
"""

from __future__ import annotations

import numpy as np

from lppo_sampling.checks import check_int
from lppo_sampling.roles import Guide, KeepAll, UniformSelector, UnitWeighter, check_range
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategies.catalog import describe_strategy
from lppo_sampling.strategy import Strategy, register_strategy

__all__ = ["token_budget", "LengthBudgetGuide", "length_curriculum"]

SCHEDULES = ("exponential", "linear")


def token_budget(
    step: int, initial: int, minimum: int, schedule: str = "exponential",
    gamma: float = 0.9, period: int = 50, decay_steps: int = 500,
) -> int:
    """B(step): the token budget of a step (non-increasing in step, within [minimum, initial])."""
    t = max(int(step), 0)
    if schedule == "exponential":
        b = np.floor(initial * gamma ** (t // period))
    elif schedule == "linear":
        b = np.floor(initial - (initial - minimum) * min(1.0, t / decay_steps))
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return int(max(minimum, min(initial, b)))


class LengthBudgetGuide(Guide):
    """No prefixes; a per-step token budget and the composite reward's weights as options.

    Args:
        initial_budget: B0, tokens at step 0 (256).
        min_budget: B_min, the floor (≤ B0).
        schedule: "exponential" (γ every `period` steps) or "linear" (to B_min over
            `decay_steps`).
        gamma, period, decay_steps: schedule constants (paper values not found).
        w_correct, w_length, w_format: weights of the composite reward (normalised by
            their sum in the env, so the reward stays in [0, 1]).
    """

    def __init__(
        self, initial_budget: int = 256, min_budget: int = 64, schedule: str = "exponential",
        gamma: float = 0.9, period: int = 50, decay_steps: int = 500, w_correct: float = 1.0,
        w_length: float = 0.5, w_format: float = 0.25,
    ) -> None:
        self.initial_budget = check_int("initial_budget", initial_budget, 1)
        self.min_budget = check_int("min_budget", min_budget, 1)
        if self.min_budget > self.initial_budget:
            raise ValueError(f"min_budget must be <= initial_budget, got {min_budget} > "
                             f"{initial_budget}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.schedule = schedule
        self.gamma = check_range("gamma", gamma, 0.0, 1.0, closed="right")
        self.period = check_int("period", period, 1)
        self.decay_steps = check_int("decay_steps", decay_steps, 1)
        self.w_correct = check_range("w_correct", w_correct, 0.0, np.inf)
        self.w_length = check_range("w_length", w_length, 0.0, np.inf)
        self.w_format = check_range("w_format", w_format, 0.0, np.inf)
        if self.w_correct + self.w_length + self.w_format <= 0:
            raise ValueError("w_correct + w_length + w_format must be > 0")
        self._last: dict[str, float] = {}

    def budget(self, step: int) -> int:
        """The token budget at `step`."""
        return token_budget(step, self.initial_budget, self.min_budget, self.schedule,
                            self.gamma, self.period, self.decay_steps)

    def plan(
        self, stats: SampleStats, rows: np.ndarray, group_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        """All-zero ratios: the curriculum is the budget, not a prefix."""
        return np.zeros((rows.shape[0], group_size), dtype=np.float64)

    def sample_options(self, stats: SampleStats, rows: np.ndarray) -> list[dict]:
        """The step's budget and the reward weights, the same for every sample."""
        b = self.budget(stats.step)
        self._last = {"sampler/token_budget": float(b)}
        opt = {"max_new_tokens": b, "length_reward": True, "w_correct": self.w_correct,
               "w_length": self.w_length, "w_format": self.w_format}
        return [opt] * rows.shape[0]  # one dict for all: the plan checks it once

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """The budget of the last plan."""
        return dict(self._last)


@register_strategy("length_curriculum")
def length_curriculum(
    group_size: int = 8,
    beta: float = 0.8,
    initial_budget: int = 256,
    min_budget: int = 64,
    schedule: str = "exponential",
    gamma: float = 0.9,
    period: int = 50,
    decay_steps: int = 500,
    w_correct: float = 1.0,
    w_length: float = 0.5,
    w_format: float = 0.25,
    seed: int = 0,
) -> Strategy:
    """Train Long, Think Short: a tightening token budget and a composite length reward."""
    return Strategy(
        selector=UniformSelector(),
        guide=LengthBudgetGuide(initial_budget, min_budget, schedule, gamma, period,
                                decay_steps, w_correct, w_length, w_format),
        filter=KeepAll(), weighter=UnitWeighter(), group_size=group_size, beta=beta, seed=seed,
    )


describe_strategy(
    "length_curriculum",
    decides="a per-step token budget per rollout, generous first and tightening "
    "(exponential or linear), and the weights of a composite reward",
    needs="a max-new-tokens per rollout and the env's composite reward (correctness + "
    "length efficiency + format)",
    paper="Train Long, Think Short (arXiv 2508.08940)",
    reports="beats fixed-budget baselines at the same final budget on GSM8K, MATH500, SVAMP, "
    "College Math and GSM+: higher accuracy, far fewer tokens",
)
