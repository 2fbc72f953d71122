"""Adaptive hint length: a per-sample expert-prefix ratio that is searched, then annealed.

LPPO's PG-sampling (lppo_sampling.roles.PrefixGuide) draws the prefix ratio of a stuck
sample uniformly from a fixed band. This guide instead keeps one ratio per sample
(column `hint_ratio`): it starts short, grows while the guided rollouts still all fail
(the shortest prefix that makes the sample solvable, as BREAD grows its expert prefix),
and shrinks once guided rollouts pass easily or the sample starts to pass unguided (a
per-sample form of QuestA's 50% → 25% hint schedule). See `rules_peer.next_hint_ratio`
and peer_samplers.md §7.8.

References:
    LPPO: arXiv 2507.06573 (prefix-guided sampling of stuck samples).
    QuestA: arXiv 2507.13266 (partial solutions as hints, shortened in stages).
    BREAD: branched rollouts with expert anchors, prefix grown until solvable.
"""

from __future__ import annotations

import numpy as np

from lppo_sampling import rules
from lppo_sampling.batch import GroupResults
from lppo_sampling.checks import check_bool
from lppo_sampling.roles import (
    Guide,
    KeepAll,
    LPWeighter,
    UniformSelector,
    UnitWeighter,
    check_range,
)
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategies import rules_peer
from lppo_sampling.strategy import Strategy, register_strategy

__all__ = ["AdaptiveHintGuide", "hint_length", "hint_lppo"]


class AdaptiveHintGuide(Guide):
    """Guide stuck samples with a per-sample prefix ratio adapted from their results.

    A sample is guided when it is stuck (`rules.is_stuck`: observed, has a solution, last
    unguided group all failed or EMA ≤ `stuck_threshold`). Its last
    `guided_fraction · G` slots (at least one) start from a prefix of ratio
    `hint_ratio[sample]`; the others stay unguided so the unguided pass rate keeps being
    measured (with every slot guided, at least every second visit is unguided:
    `rules.allow_guidance`). After each observation the ratio moves by
    `rules_peer.next_hint_ratio`.

    Args:
        initial_ratio: ratio of a sample's first hint (default = `low`: start shortest).
        step_up: increase after a guided group that all failed (0.1).
        step_down: decrease after a guided pass rate ≥ `target`, and after any unguided
            success (0.05; smaller than `step_up`, so the search finds a solvable length
            fast and gives it up slowly).
        low, high: band of ratios, 0 < low ≤ high < 1 (LPPO's 0.15–0.55).
        target: guided pass rate at which the hint counts as too easy (0.5).
        guided_fraction: share of the G rollouts that are guided (0.5).
        stuck_threshold: EMA pass rate at or below which a sample is stuck (0.05).
    """

    def __init__(
        self,
        initial_ratio: float | None = None,
        step_up: float = 0.1,
        step_down: float = 0.05,
        low: float = 0.15,
        high: float = 0.55,
        target: float = 0.5,
        guided_fraction: float = 0.5,
        stuck_threshold: float = 0.05,
    ) -> None:
        self.low = check_range("low", low, 0.0, 1.0, closed="neither")
        self.high = check_range("high", high, 0.0, 1.0, closed="neither")
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got {low} > {high}")
        init = self.low if initial_ratio is None else initial_ratio
        self.initial_ratio = check_range("initial_ratio", init, self.low, self.high)
        self.step_up = check_range("step_up", step_up, 0.0, 1.0)
        self.step_down = check_range("step_down", step_down, 0.0, 1.0)
        self.target = check_range("target", target, 0.0, 1.0)
        self.guided_fraction = check_range("guided_fraction", guided_fraction, 0.0, 1.0)
        self.stuck_threshold = check_range("stuck_threshold", stuck_threshold, 0.0, 1.0)
        self._last: dict[str, float] = {}

    def bind(self, stats: SampleStats) -> None:
        """Add the per-sample ratio column."""
        stats.add_column("hint_ratio", np.float64, self.initial_ratio)

    def check(self, stats: SampleStats) -> None:
        """Refuse hint ratios outside [low, high] (or NaN)."""
        r = stats["hint_ratio"]
        bad = ~((r >= self.low) & (r <= self.high))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"state_dict['stats']['columns']['hint_ratio'] must lie in [{self.low}, "
                f"{self.high}]: row {i} holds {r[i]!r}"
            )

    def plan(
        self, stats: SampleStats, rows: np.ndarray, group_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        """(n, G) ratios: stuck rows' last slots get their own ratio; consumes no randomness."""
        n_guided = rules.guided_slot_count(group_size, self.guided_fraction)
        stuck = rules.is_stuck(
            stats["ema"][rows],
            stats["last_pass_rate"][rows],
            stats.seen(rows),
            stats["has_solution"][rows],
            self.stuck_threshold,
        )
        # every slot guided (G = 1 or fraction 1): never twice in a row, see allow_guidance
        stuck = rules.allow_guidance(
            stuck, stats["last_event_guided_only"][rows], n_guided, group_size
        )
        ratios = np.zeros((rows.shape[0], group_size), dtype=np.float64)
        if n_guided and stuck.any():
            ratios[stuck, group_size - n_guided :] = stats["hint_ratio"][rows[stuck]][:, None]
        self._last = {
            "sampler/guided_sample_frac": float(stuck.mean()) if stuck.size else 0.0,
            "sampler/hint_ratio_mean": float(stats["hint_ratio"][rows[stuck]].mean())
            if stuck.any()
            else float("nan"),
        }
        return ratios

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Move each observed sample's ratio by its guided and unguided pass rates."""
        g = results.guided
        u = results.mask & ~g
        r = results.rewards
        per = np.stack(
            [g.sum(1), np.where(g, r, 0.0).sum(1), u.sum(1), np.where(u, r, 0.0).sum(1)]
        ).astype(np.float64)
        uniq, inv = np.unique(rows, return_inverse=True)
        agg = np.stack([np.bincount(inv, weights=x, minlength=uniq.size) for x in per])
        with np.errstate(invalid="ignore", divide="ignore"):
            gp = np.where(agg[0] > 0, agg[1] / agg[0], np.nan)
            up = np.where(agg[2] > 0, agg[3] / agg[2], np.nan)
        stats["hint_ratio"][uniq] = rules_peer.next_hint_ratio(
            stats["hint_ratio"][uniq],
            gp,
            up,
            self.step_up,
            self.step_down,
            self.low,
            self.high,
            self.target,
        )

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Guided share and mean hint ratio of the last plan."""
        return dict(self._last)


@register_strategy("hint_length")
def hint_length(
    group_size: int = 8,
    beta: float = 0.8,
    initial_ratio: float | None = None,
    step_up: float = 0.1,
    step_down: float = 0.05,
    low: float = 0.15,
    high: float = 0.55,
    target: float = 0.5,
    guided_fraction: float = 0.5,
    stuck_threshold: float = 0.05,
    seed: int = 0,
) -> Strategy:
    """Adaptive per-sample hint length over uniform batches (weight 1)."""
    return Strategy(
        selector=UniformSelector(),
        guide=AdaptiveHintGuide(
            initial_ratio, step_up, step_down, low, high, target, guided_fraction, stuck_threshold
        ),
        filter=KeepAll(),
        weighter=UnitWeighter(),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )


@register_strategy("hint_lppo")
def hint_lppo(
    group_size: int = 8,
    beta: float = 0.8,
    kappa: float = 8.0,
    bias: float = 0.5,
    normalize_weights: bool = False,
    initial_ratio: float | None = None,
    step_up: float = 0.1,
    step_down: float = 0.05,
    low: float = 0.15,
    high: float = 0.55,
    target: float = 0.5,
    guided_fraction: float = 0.5,
    stuck_threshold: float = 0.05,
    seed: int = 0,
) -> Strategy:
    """LPPO with the adaptive hint guide in place of the fixed-band PG-sampling."""
    return Strategy(
        selector=UniformSelector(),
        guide=AdaptiveHintGuide(
            initial_ratio, step_up, step_down, low, high, target, guided_fraction, stuck_threshold
        ),
        filter=KeepAll(),
        weighter=LPWeighter(kappa, bias, check_bool("normalize_weights", normalize_weights)),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )
