"""Cog-DRIFT (arXiv 2604.04767): hard problems posed in easier formats first, MCQ → cloze → open.

Each sample carries a format level: 0 = multiple choice, 1 = cloze, 2 = open (the original
question). A sample starts open; if its first group shows it hard (unguided pass rate ≤
`hard_threshold`, by default: all failed) it drops to multiple choice. In its current
format it keeps an EMA of its pass rate (`format_beta`); reaching `promote_threshold`
moves it one format up (towards open), and with `demote_threshold` set, falling to it
moves it one format down. The paper's promotion rule is not known; these are arguments.

The plan asks the env for the format per sample (`RolloutPlan.options`:
``{"format": "mcq" | "cloze" | "open"}``); `lppo_env.formats` builds exact variants with
the original answer preserved (an MCQ's reward maps the chosen letter back to its value),
and refuses a variant that would change or state the answer. Rewards of MCQ and cloze
rollouts move the sample's pass-rate statistics like any other (they are unguided).
"""

from __future__ import annotations

import numpy as np

from lppo_sampling.batch import GroupResults
from lppo_sampling.roles import Guide, KeepAll, UniformSelector, UnitWeighter, check_range
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategies.catalog import describe_strategy
from lppo_sampling.strategies.predictive import unguided_group_means
from lppo_sampling.strategy import Strategy, register_strategy

__all__ = ["FORMATS", "next_format", "FormatGuide", "cog_drift"]

FORMATS = ("mcq", "cloze", "open")
OPEN = len(FORMATS) - 1


def next_format(
    level: np.ndarray, ema: np.ndarray, started: np.ndarray, pass_now: np.ndarray,
    hard_threshold: float, promote: float, demote: float | None, beta: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(level, ema, started) after one observed pass rate per sample (vectorised).

    First observation: hard (≤ hard_threshold) → MCQ, else stays open. Later: EMA in the
    current format; ≥ promote → one format up (EMA restarts), ≤ demote → one down.
    """
    level, ema = level.astype(np.int8).copy(), ema.astype(np.float64).copy()
    first = ~started
    level[first] = np.where(pass_now[first] <= hard_threshold, 0, OPEN)
    ema[first] = np.nan
    later = started.copy()
    new = np.where(np.isnan(ema), pass_now, beta * ema + (1 - beta) * pass_now)
    ema[later] = new[later]
    up = later & (new >= promote) & (level < OPEN)
    down = later & ~up & (level > 0) & (new <= demote) if demote is not None else np.zeros_like(up)
    level[up] += 1
    level[down] -= 1
    ema[up | down] = np.nan
    return level, ema, np.ones_like(started, dtype=bool)


class FormatGuide(Guide):
    """No prefixes; a per-sample format (MCQ, cloze, open) moved by its pass rate.

    Args:
        promote_threshold: EMA pass rate in the current format that promotes (0.75).
        demote_threshold: EMA pass rate that demotes, or None (no demotion, the default).
        hard_threshold: first pass rate at or below which a sample starts at MCQ (0.0).
        format_beta: EMA coefficient of the per-format pass rate (0.5).
    """

    formats = FORMATS[:-1]  # the variants the env must be able to build (trainers check)

    def __init__(self, promote_threshold: float = 0.75, demote_threshold: float | None = None,
                 hard_threshold: float = 0.0, format_beta: float = 0.5) -> None:
        self.promote = check_range("promote_threshold", promote_threshold, 0.0, 1.0)
        self.demote = None if demote_threshold is None else check_range(
            "demote_threshold", demote_threshold, 0.0, 1.0)
        if self.demote is not None and self.demote >= self.promote:
            raise ValueError(f"demote_threshold must be < promote_threshold, got "
                             f"{demote_threshold} >= {promote_threshold}")
        self.hard = check_range("hard_threshold", hard_threshold, 0.0, 1.0)
        self.beta = check_range("format_beta", format_beta, 0.0, 1.0, closed="left")
        self._last: dict[str, float] = {}

    def bind(self, stats: SampleStats) -> None:
        """Columns: format level (open), its EMA (none yet), whether the start is set."""
        stats.add_column("format_level", np.int8, OPEN)
        stats.add_column("format_ema", np.float64, np.nan)
        stats.add_column("format_started", np.bool_, False)

    def check(self, stats: SampleStats) -> None:
        """Refuse levels outside 0-2 and EMAs outside [0, 1]."""
        lv, e = stats["format_level"], stats["format_ema"]
        if ((lv < 0) | (lv > OPEN)).any():
            raise ValueError("state_dict['stats']['columns']['format_level'] must lie in 0-2")
        if ((e < 0) | (e > 1)).any():
            raise ValueError("state_dict['stats']['columns']['format_ema'] must lie in [0, 1]")

    def plan(
        self, stats: SampleStats, rows: np.ndarray, group_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        """All-zero ratios: the curriculum is the format."""
        return np.zeros((rows.shape[0], group_size), dtype=np.float64)

    def sample_options(self, stats: SampleStats, rows: np.ndarray) -> list[dict]:
        """The format of each sample."""
        lv = stats["format_level"][rows]
        self._last = {f"sampler/format_{f}_frac": float((lv == i).mean())
                      for i, f in enumerate(FORMATS)}
        shared = [{"format": f} for f in FORMATS]  # one dict per format, checked once
        return [shared[x] for x in lv.tolist()]

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Move each observed sample's format by its unguided pass rate."""
        uniq, p = unguided_group_means(rows, results)
        if not uniq.size:
            return
        lv, ema, st = next_format(
            stats["format_level"][uniq], stats["format_ema"][uniq],
            stats["format_started"][uniq], p, self.hard, self.promote, self.demote, self.beta)
        stats["format_level"][uniq], stats["format_ema"][uniq] = lv, ema
        stats["format_started"][uniq] = st

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Share of the last plan's samples in each format."""
        return dict(self._last)


@register_strategy("cog_drift")
def cog_drift(
    group_size: int = 8,
    beta: float = 0.8,
    promote_threshold: float = 0.75,
    demote_threshold: float | None = None,
    hard_threshold: float = 0.0,
    format_beta: float = 0.5,
    seed: int = 0,
) -> Strategy:
    """Cog-DRIFT: hard samples in MCQ, then cloze, then open, promoted by pass rate."""
    return Strategy(
        selector=UniformSelector(),
        guide=FormatGuide(promote_threshold, demote_threshold, hard_threshold, format_beta),
        filter=KeepAll(), weighter=UnitWeighter(), group_size=group_size, beta=beta, seed=seed,
    )


describe_strategy(
    "cog_drift",
    decides="per-sample format: hard samples start as multiple choice, promoted to cloze then "
    "open-ended when their pass rate in the current format reaches a threshold",
    needs="answer-preserving MCQ and cloze variants (exact for numeric answers: "
    "lppo_env.formats)",
    paper="Cog-DRIFT (arXiv 2604.04767)",
    reports="+10.11 points (Qwen) and +8.64 (Llama) on originally unsolvable problems; +4.72 "
    "and +3.23 over the second-best baseline across 6 benchmarks",
)
