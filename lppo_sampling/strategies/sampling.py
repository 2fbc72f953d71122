"""Fast batch sampling over a large pool: per-arm row lists and weighted draws.

A selector over a million samples must not loop over them in Python nor touch every row
each step. Two tools cover the peer strategies:

* `ArmIndex` groups rows by category ("arm": SEC categories, DUMP data sources, SAI-DPO
  clusters) once, caches the grouping and rebuilds it when the pool grows or new labels
  appear; `sample_by_arm` then draws per-arm counts and picks rows uniformly within each
  arm without replacement — O(batch + arms) per step.
* `weighted_sample_without_replacement` draws rows with probability ∝ w without
  replacement (successive sampling, the law of Gumbel-top-k) by rejection from uniform
  proposals when the weights are bounded — O(batch) per step — and falls back to
  Gumbel-top-k with `np.argpartition` over the whole pool otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lppo_sampling.stats import SampleStats

__all__ = ["ArmIndex", "sample_by_arm", "weighted_sample_without_replacement", "gumbel_top_k"]


class ArmIndex:
    """Rows of a `SampleStats` grouped by arm: arm = category id + 1, arm 0 = no category.

    The grouping is cached and rebuilt when the table, its size or its number of category
    labels changes. Re-labelling *existing* samples with already known labels cannot be
    seen that cheaply: `sample_by_arm` checks the labels of the rows it draws and rebuilds
    on a mismatch, and `invalidate()` forces a rebuild.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self.version = 0  # bumped on every rebuild, so dependants can rebuild derived state
        self.order = np.zeros(0, np.int64)
        self.starts = np.zeros(1, np.int64)
        self.sizes = np.zeros(1, np.int64)

    @staticmethod
    def n_arms(stats: SampleStats) -> int:
        """Number of arms: one per category label plus arm 0 (uncategorised)."""
        return len(stats.categories) + 1

    def invalidate(self) -> None:
        """Forget the cached grouping (call after re-labelling existing samples)."""
        self._key = None

    def refresh(self, stats: SampleStats) -> ArmIndex:
        """Rebuild the grouping if the pool changed; return self."""
        cat = stats["category"]
        key = (id(stats), len(stats), len(stats.categories), id(cat.base))
        if key == self._key:
            return self
        arms = cat.astype(np.int64) + 1
        k = self.n_arms(stats)
        if arms.size and arms.min() == arms.max():
            self.order = np.arange(arms.size, dtype=np.int64)
        else:
            self.order = np.argsort(arms, kind="stable").astype(np.int64)
        self.sizes = np.bincount(arms, minlength=k).astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self._key = key
        self.version += 1
        return self

    def arm_of(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """(n,) arm of each row."""
        return stats["category"][rows].astype(np.int64) + 1

    def rows_of_arm(self, arm: int) -> np.ndarray:
        """All rows of one arm (a view)."""
        s = int(self.starts[arm])
        return self.order[s : s + int(self.sizes[arm])]


def _cap_counts(
    m: np.ndarray, sizes: np.ndarray, probs: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Cap per-arm counts at arm sizes, moving the excess to arms with room (∝ probs)."""
    m = m.copy()
    for _ in range(sizes.shape[0] + 1):
        excess = int(np.maximum(m - sizes, 0).sum())
        if excess == 0:
            return m
        m = np.minimum(m, sizes)
        room = sizes - m
        w = np.where(room > 0, probs, 0.0)
        if w.sum() <= 0:
            w = room.astype(np.float64)
        m += rng.multinomial(excess, w / w.sum())
    return np.minimum(m, sizes)


def sample_by_arm(
    index: ArmIndex, stats: SampleStats, probs: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw `n` rows: arm per slot ~ `probs`, then uniformly within the arm, no repeats.

    Per-arm counts are Multinomial(n, probs); an arm asked for more rows than it has gives
    all of them and the excess is redrawn over arms with room. Only when `n` exceeds the
    pool are rows repeated (every row once, the rest drawn with replacement by arm).

    Args:
        index: the cached grouping (refreshed here).
        stats: the table.
        probs: (n_arms,) arm probabilities; mass on empty arms is ignored.
        n: batch size ≥ 1.
        rng: randomness.

    Returns:
        (n,) int64 rows in random order.
    """
    for attempt in range(2):
        index.refresh(stats)
        sizes = index.sizes
        p = np.where(sizes > 0, np.asarray(probs, dtype=np.float64), 0.0)
        if p.sum() <= 0:
            p = sizes.astype(np.float64)
        p = p / p.sum()
        total = int(sizes.sum())
        if n >= total:
            rows = rng.permutation(total).astype(np.int64)
            extra = n - total
            if extra:
                arms = rng.choice(p.shape[0], size=extra, p=p)
                within = np.floor(rng.random(extra) * sizes[arms]).astype(np.int64)
                rows = np.concatenate([rows, index.order[index.starts[arms] + within]])
            return rows
        m = _cap_counts(rng.multinomial(n, p), sizes, p, rng)
        parts = []
        arms_used = np.flatnonzero(m)
        for a in arms_used.tolist():
            picks = rng.choice(int(sizes[a]), size=int(m[a]), replace=False)
            parts.append(index.order[index.starts[a] + picks])
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        expect = np.repeat(arms_used, m[arms_used])
        if attempt == 0 and not np.array_equal(index.arm_of(stats, rows), expect):
            index.invalidate()  # labels changed under the cache: rebuild and redraw
            continue
        return rows[rng.permutation(rows.shape[0])]
    return rows[rng.permutation(rows.shape[0])]


def gumbel_top_k(log_weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices without replacement with P ∝ exp(log_weights) (Gumbel-top-k).

    Adding Gumbel noise to log-weights and taking the top n is successive sampling
    without replacement (Kool et al. 2019). Uses `np.argpartition`, O(len) time.
    Entries with −inf log-weight are never chosen unless `n` exceeds the finite ones.

    Returns:
        (min(n, len),) int64 indices, in order of draw.
    """
    lw = np.asarray(log_weights, dtype=np.float64)
    keys = lw - np.log(-np.log(rng.random(lw.shape[0])))
    n = min(int(n), lw.shape[0])
    if n < lw.shape[0]:
        top = np.argpartition(-keys, n - 1)[:n]
    else:
        top = np.arange(lw.shape[0])
    return top[np.argsort(-keys[top], kind="stable")].astype(np.int64)


def weighted_sample_without_replacement(
    pool_size: int,
    n: int,
    weight_fn: Callable[[np.ndarray], np.ndarray],
    weight_bound: float,
    rng: np.random.Generator,
    *,
    min_acceptance: float = 0.05,
    max_rounds: int = 8,
) -> np.ndarray:
    """`n` distinct rows of `range(pool_size)` drawn successively with P ∝ weight.

    Rejection: propose rows uniformly, accept row x with probability w_x / bound, skip
    rows already taken. The accepted sequence has exactly the successive-sampling law
    (P(next = x) ∝ w_x among the rows not yet taken), so it matches `gumbel_top_k` in
    distribution while touching only O(n · bound / mean w) rows. If acceptance is low
    (< `min_acceptance`) or `max_rounds` do not suffice, the remaining rows are drawn by
    Gumbel-top-k over the whole pool (weights of every row computed once).

    Args:
        pool_size: number of rows N.
        n: rows wanted (≤ N).
        weight_fn: rows (int64) → weights (≥ 0, ≤ `weight_bound`).
        weight_bound: an upper bound of every weight (> 0).
        rng: randomness.
        min_acceptance: fall back below this acceptance rate.
        max_rounds: proposal rounds before falling back.

    Returns:
        (n,) int64 rows in order of draw.
    """
    if n > pool_size:
        raise ValueError(f"n must be <= pool_size ({pool_size}), got {n}")
    taken = np.zeros(0, np.int64)
    acc_rate = 1.0
    for _ in range(max_rounds):
        need = n - taken.shape[0]
        if need <= 0:
            break
        size = int(np.ceil(1.25 * need / max(acc_rate, min_acceptance))) + 16
        cand = rng.integers(0, pool_size, size=size)
        w = np.asarray(weight_fn(cand), dtype=np.float64)
        ok = rng.random(size) * weight_bound < w
        acc_rate = max(float(ok.mean()), 1e-12)
        new = np.concatenate([taken, cand[ok]])
        _, first = np.unique(new, return_index=True)
        taken = new[np.sort(first)][:n]
        if acc_rate < min_acceptance:
            break
    if taken.shape[0] < n:
        all_rows = np.arange(pool_size, dtype=np.int64)
        with np.errstate(divide="ignore"):
            lw = np.log(np.asarray(weight_fn(all_rows), dtype=np.float64))
        lw[taken] = -np.inf
        rest = gumbel_top_k(lw, n - taken.shape[0], rng)
        taken = np.concatenate([taken, rest])
    return taken
