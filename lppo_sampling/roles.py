"""The four roles a strategy is composed of, and their basic implementations.

| role     | question                                        | here                      |
|----------|-------------------------------------------------|---------------------------|
| Selector | which samples go into the next batch?           | `UniformSelector`         |
| Guide    | which rollouts start from an expert prefix?     | `NoGuide`, `PrefixGuide`  |
| Filter   | which finished groups are kept for the update?  | `KeepAll`                 |
| Weighter | how much does each kept sample count?           | `UnitWeighter`, `LPWeighter` |

Roles read the shared `SampleStats` table and may keep a little state of their own
(e.g. a per-category value table); they never write the table's built-in columns — only
`SampleStats.observe` does. A role that needs per-sample state adds a column in `bind`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from lppo_sampling import rules
from lppo_sampling.batch import GroupResults
from lppo_sampling.checks import check_bool, check_range
from lppo_sampling.stats import SampleStats

__all__ = [
    "Role",
    "Selector",
    "Guide",
    "Filter",
    "Weighter",
    "UniformSelector",
    "NoGuide",
    "PrefixGuide",
    "KeepAll",
    "UnitWeighter",
    "LPWeighter",
    "check_range",
]


# ABC without abstract methods of its own: the abstract methods are on the four role
# kinds below (Selector, Guide, Filter, Weighter); Role only holds the shared hooks.
class Role(ABC):  # noqa: B024
    """Common hooks. Subclasses override what they need."""

    # bind, on_observe and load_state_dict are optional hooks, not abstract (B027): the
    # no-op default is right for roles without extra columns, observe-time work or state.
    def bind(self, stats: SampleStats) -> None:  # noqa: B027
        """Called once with the strategy's table (add extra columns here)."""

    def on_observe(  # noqa: B027
        self, stats: SampleStats, rows: np.ndarray, results: GroupResults
    ) -> None:
        """Called after `SampleStats.observe` with the rows of the batch."""

    def state_dict(self) -> dict:
        """Role-local state (numpy arrays allowed); empty for stateless roles."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027
        """Restore what `state_dict` returned; `ValueError` naming the field if it is invalid.

        `Strategy.load_state_dict` calls this on a copy first, so a role may validate as
        it goes: a failure leaves the strategy unchanged.
        """

    def check(self, stats: SampleStats) -> None:  # noqa: B027
        """Refuse a just-loaded table whose role columns this role cannot use.

        Called after `bind` on a table restored from a checkpoint, before the strategy
        adopts it; raise `ValueError` naming the column (e.g. a negative count).
        """

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Role-specific scalars for logs."""
        return {}


class Selector(Role):
    """Chooses which samples to roll out next."""

    @abstractmethod
    def select(self, stats: SampleStats, n: int, rng: np.random.Generator) -> np.ndarray:
        """Return `n` rows of `stats` (may repeat only when `n` exceeds the pool)."""


class Guide(Role):
    """Chooses per-rollout expert-prefix ratios."""

    @abstractmethod
    def plan(
        self, stats: SampleStats, rows: np.ndarray, group_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Return (n, G) prefix ratios (0 = unguided)."""


class Filter(Role):
    """Decides which observed groups enter the update."""

    @abstractmethod
    def keep(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """Return (n,) bool."""


class Weighter(Role):
    """Scales each kept sample's contribution (multiplies its advantages)."""

    @abstractmethod
    def weights(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """Return (n,) float64 >= 0."""


# ----------------------------------------------------------------- baselines
class UniformSelector(Selector):
    """Uniform random batches over the pool, without replacement when the pool allows."""

    def select(self, stats: SampleStats, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw `n` rows uniformly."""
        size = len(stats)
        return rng.choice(size, size=n, replace=n > size).astype(np.int64)


class NoGuide(Guide):
    """Every rollout is unguided."""

    def plan(
        self, stats: SampleStats, rows: np.ndarray, group_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        """All-zero ratios."""
        return np.zeros((rows.shape[0], group_size), dtype=np.float64)


class KeepAll(Filter):
    """Keep every group (plain GRPO: zero-variance groups just get zero advantage)."""

    def keep(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """All True."""
        return np.ones(rows.shape[0], dtype=bool)


class UnitWeighter(Weighter):
    """Weight 1 for every sample."""

    def weights(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """All ones."""
        return np.ones(rows.shape[0], dtype=np.float64)


# ---------------------------------------------------------------------- LPPO
class LPWeighter(Weighter):
    """LPPO LP-weighting: `w = σ(κ·Δ) + b` from each sample's last learning progress.

    Args:
        kappa: steepness κ (default 8).
        bias: floor b (default 0.5): weights lie in [b, 1 + b].
        normalize: divide by the batch mean so weights average 1 (keeps the effective
            learning rate fixed; off by default to match the paper's rule).
    """

    def __init__(self, kappa: float = 8.0, bias: float = 0.5, normalize: bool = False) -> None:
        self.kappa = check_range("kappa", kappa, 0.0, np.inf)
        self.bias = check_range("bias", bias, 0.0, np.inf)
        self.normalize = check_bool("normalize", normalize)

    def weights(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """LP weights of `rows`."""
        w = rules.lp_weight(stats["delta"][rows], self.kappa, self.bias)
        if self.normalize and w.size:
            w = w / w.mean()
        return w


class PrefixGuide(Guide):
    """LPPO PG-sampling: guide some rollouts of stuck samples with an expert prefix.

    A sample is stuck when its last unguided group all failed or its EMA pass rate is at
    most `stuck_threshold` (see `rules.is_stuck`), and it has an expert solution. For a
    stuck sample, `guided_fraction · G` rollouts (at least one) start from a prefix whose
    ratio is drawn uniformly from [`prefix_low`, `prefix_high`]; the rest stay unguided so
    the unguided pass rate keeps being measured. When that is every slot (G = 1, or
    `guided_fraction` rounds to G) a sample is never fully guided twice in a row: after
    a visit without an unguided rollout its next visit is unguided
    (`rules.allow_guidance`), so its unguided EMA can still move.

    Args:
        prefix_low, prefix_high: band of prefix ratios (fraction of solution steps).
        guided_fraction: share of the G rollouts that are guided.
        stuck_threshold: EMA pass rate at or below which a sample is stuck.
    """

    def __init__(
        self,
        prefix_low: float = 0.15,
        prefix_high: float = 0.55,
        guided_fraction: float = 0.5,
        stuck_threshold: float = 0.05,
    ) -> None:
        self.prefix_low = check_range("prefix_low", prefix_low, 0.0, 1.0, closed="neither")
        self.prefix_high = check_range("prefix_high", prefix_high, 0.0, 1.0, closed="neither")
        if self.prefix_low > self.prefix_high:
            raise ValueError(
                f"prefix_low must be <= prefix_high, got {prefix_low} > {prefix_high}"
            )
        self.guided_fraction = check_range("guided_fraction", guided_fraction, 0.0, 1.0)
        self.stuck_threshold = check_range("stuck_threshold", stuck_threshold, 0.0, 1.0)
        self._last_guided_frac = 0.0

    def stuck(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """(n,) bool: which rows are stuck and can be guided."""
        return rules.is_stuck(
            stats["ema"][rows],
            stats["last_pass_rate"][rows],
            stats.seen(rows),
            stats["has_solution"][rows],
            self.stuck_threshold,
        )

    def plan(
        self, stats: SampleStats, rows: np.ndarray, group_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Prefix ratios for the batch; consumes randomness only for guided rows."""
        n_guided = rules.guided_slot_count(group_size, self.guided_fraction)
        stuck = rules.allow_guidance(
            self.stuck(stats, rows), stats["last_event_guided_only"][rows], n_guided, group_size
        )
        ratios = rules.prefix_ratio_matrix(
            stuck, group_size, n_guided, self.prefix_low, self.prefix_high, rng
        )
        self._last_guided_frac = float(stuck.mean()) if stuck.size else 0.0
        return ratios

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Share of the last batch's samples that were guided."""
        return {"sampler/guided_sample_frac": self._last_guided_frac}
