"""h1 (Bootstrapping LLMs to Reason over Longer Horizons via RL, Oct 2025): chain curriculum.

The data are short problems composed into dependency chains (`lppo_env.chains` builds
them from our arithmetic or GSM8K-style problems, with worked solutions); each sample's
category label ends with its chain depth ("depth:3"). The selector keeps one current
depth: a batch is drawn uniformly from that depth, except a `replay` share drawn from the
shallower depths already passed. Per depth it keeps an EMA of the batch pass rate
(`depth_beta`); when the current depth's EMA reaches `threshold`, the curriculum advances
to the next depth present in the pool. It never goes back (`next_depth_level`).
"""

from __future__ import annotations

import re

import numpy as np

from lppo_sampling.batch import GroupResults
from lppo_sampling.roles import KeepAll, NoGuide, Selector, UnitWeighter, check_range
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategies.catalog import describe_strategy
from lppo_sampling.strategy import Strategy, register_strategy

__all__ = ["depth_of_label", "next_depth_level", "ChainDepthSelector", "h1"]

_DEPTH = re.compile(r"(\d+)\s*$")


def depth_of_label(label: str) -> int:
    """The chain depth a category label ends with ("depth:3" → 3); `ValueError` otherwise."""
    m = _DEPTH.search(str(label))
    if m is None:
        raise ValueError(f"strategy 'h1': category {label!r} does not end with a chain depth "
                         f"(expected labels like 'depth:3'; lppo_env.chains sets them)")
    return int(m.group(1))


def next_depth_level(level: int, ema: float, threshold: float, n_levels: int) -> int:
    """Advance one level when the current depth's EMA pass rate reaches the threshold."""
    return level + 1 if (ema >= threshold and level + 1 < n_levels) else level


class ChainDepthSelector(Selector):
    """Uniform batches from the current chain depth, with a replay share of shallower ones.

    Args:
        threshold: EMA pass rate of the current depth that advances the curriculum.
        replay: share of each batch drawn from the depths already passed, in [0, 1)
            (at least one sample is always of the current depth).
        depth_beta: EMA coefficient of the per-depth pass rate.
    """

    def __init__(self, threshold: float = 0.5, replay: float = 0.2,
                 depth_beta: float = 0.5) -> None:
        self.threshold = check_range("threshold", threshold, 0.0, 1.0)
        self.replay = check_range("replay", replay, 0.0, 1.0, closed="left")
        self.depth_beta = check_range("depth_beta", depth_beta, 0.0, 1.0, closed="left")
        self.level = 0
        self.ema: dict[int, float] = {}
        self._cache: tuple[int, int, np.ndarray, dict[int, np.ndarray]] | None = None
        self._last: dict[str, float] = {}

    def _depths(self, stats: SampleStats) -> np.ndarray:
        """(pool,) chain depth per row, cached until the pool or its labels grow."""
        key = (len(stats), len(stats.categories))
        if self._cache is None or self._cache[:2] != key:
            cat = stats["category"]
            if (cat < 0).any():
                i = int(np.flatnonzero(cat < 0)[0])
                raise ValueError(f"strategy 'h1': sample {stats.index.keys_of(np.array([i]))[0]!r} "
                                 f"has no category; add_samples(..., category=['depth:1', ...])")
            per_label = np.array([depth_of_label(c) for c in stats.categories], np.int64)
            depth = per_label[cat]
            order = np.argsort(depth, kind="stable")
            ladder, starts = np.unique(depth[order], return_index=True)
            bounds = [*starts.tolist(), depth.size]
            by_depth = {int(d): order[bounds[i]:bounds[i + 1]] for i, d in enumerate(ladder)}
            self._cache = (*key, depth, by_depth)
        return self._cache[2]

    def _by_depth(self, stats: SampleStats) -> dict[int, np.ndarray]:
        """Rows of each depth present in the pool (ascending depth)."""
        self._depths(stats)
        return self._cache[3]  # type: ignore[index]

    def check(self, stats: SampleStats) -> None:
        """Refuse a pool whose samples lack a chain-depth category (ValueError naming one)."""
        if len(stats):
            self._depths(stats)

    def select(self, stats: SampleStats, n: int, rng: np.random.Generator) -> np.ndarray:
        """N rows: the current depth, plus `replay`·n from shallower depths once past depth 1."""
        by_depth = self._by_depth(stats)
        ladder = sorted(by_depth)
        self.level = min(self.level, len(ladder) - 1)
        current = ladder[self.level]
        cur_rows = by_depth[current]
        shallower = [by_depth[d] for d in ladder[: self.level]]
        old_rows = np.concatenate(shallower) if shallower else np.zeros(0, np.int64)
        # at least one sample of the current depth, or it could never be mastered
        n_old = min(int(round(self.replay * n)), n - 1) if old_rows.size else 0
        parts = []
        for pool, k in ((cur_rows, n - n_old), (old_rows, n_old)):
            if k:
                parts.append(pool[rng.choice(pool.size, k, replace=k > pool.size)])
        self._last = {"sampler/chain_depth": float(current)}
        return np.concatenate(parts).astype(np.int64)

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Update each observed depth's EMA; advance when the current depth is mastered."""
        depth = self._depths(stats)[rows]
        u = results.mask & ~results.guided
        for d in np.unique(depth).tolist():
            sel = u & (depth == d)[:, None]
            if sel.any():
                p = float(results.rewards[sel].mean())
                old = self.ema.get(d)
                b = self.depth_beta
                self.ema[d] = p if old is None else b * old + (1 - b) * p
        ladder = sorted(self._by_depth(stats))
        cur = ladder[min(self.level, len(ladder) - 1)]
        self.level = next_depth_level(self.level, self.ema.get(cur, 0.0), self.threshold,
                                      len(ladder))

    def state_dict(self) -> dict:
        """Level and per-depth EMAs."""
        ds = sorted(self.ema)
        return {"level": self.level, "depths": ds, "ema": [self.ema[d] for d in ds]}

    def load_state_dict(self, state: dict) -> None:
        """Restore; `ValueError` on a negative level or EMAs outside [0, 1]."""
        level = int(state.get("level", 0))
        ds, es = list(state.get("depths", [])), list(state.get("ema", []))
        if level < 0 or len(ds) != len(es) or any(not 0.0 <= float(e) <= 1.0 for e in es):
            raise ValueError("state_dict['roles']['selector'] needs level >= 0 and one EMA in "
                             "[0, 1] per depth")
        self.level, self.ema = level, {int(d): float(e) for d, e in zip(ds, es, strict=True)}
        self._cache = None

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """The current chain depth."""
        return dict(self._last)


@register_strategy("h1")
def h1(
    group_size: int = 8,
    beta: float = 0.8,
    threshold: float = 0.5,
    replay: float = 0.2,
    depth_beta: float = 0.5,
    seed: int = 0,
) -> Strategy:
    """h1: chains of growing depth, advancing when the current depth is mastered."""
    return Strategy(
        selector=ChainDepthSelector(threshold, replay, depth_beta), guide=NoGuide(),
        filter=KeepAll(), weighter=UnitWeighter(), group_size=group_size, beta=beta, seed=seed,
    )


describe_strategy(
    "h1",
    decides="selection: the current chain depth (plus a replay share of shallower depths); "
    "advances to the next depth when the current one's EMA pass rate reaches a threshold",
    needs="problems composed into dependency chains, category label = depth "
    "(lppo_env.compose_chains)",
    paper="h1: Bootstrapping LLMs to Reason over Longer Horizons via RL (Oct 2025)",
    reports="composed GSM8K chains with a curriculum: up to 2.06× accuracy on longer, "
    "competition-level benchmarks (GSM-Symbolic, MATH-500, AIME)",
)
