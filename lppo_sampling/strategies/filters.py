"""Post-rollout group filters (DAPO dynamic sampling, balanced filtering) and batch refill.

Filtering drops groups that carry no (or little) learning signal; to keep the train batch
at a fixed size the trainer then generates more. `refill` is that loop, written once
against the `Strategy` protocol so any trainer (ours, verl, TRL) can call it::

    batch = refill(strategy, target=512, generate=my_generate)   # DAPO: 3× chunks
    for chunk in batch.chunks:                                     # rollouts to train on
        use(chunk.payload, chunk.keep)

References:
    DAPO: Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
    arXiv 2503.14476 (dynamic sampling; verl `algorithm.filter_groups`).
    Bae et al., "Online Difficulty Filtering for Reasoning Oriented Reinforcement
    Learning", arXiv 2504.03380 (balanced band around p = 0.5, stacked refill).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lppo_sampling.batch import GroupResults, RolloutPlan
from lppo_sampling.checks import check_int
from lppo_sampling.roles import Filter, NoGuide, UniformSelector, UnitWeighter, check_range
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategies import rules_peer
from lppo_sampling.strategy import Strategy, register_strategy

__all__ = [
    "DynamicSamplingFilter",
    "BalancedFilter",
    "RefillChunk",
    "RefillBatch",
    "RefillError",
    "refill",
    "dapo",
    "balanced_filter",
]


class _RefillingFilter(Filter):
    """A filter that knows how much to over-generate for `refill`."""

    def __init__(self, oversample: float, max_num_gen_batches: int) -> None:
        self.oversample = check_range("oversample", oversample, 1.0, np.inf)
        self.max_num_gen_batches = check_int("max_num_gen_batches", max_num_gen_batches)
        self._last_keep_frac = float("nan")

    def oversampled_size(self, n: int) -> int:
        """Prompts to generate per chunk for a train batch of `n`: `ceil(oversample · n)`."""
        return int(math.ceil(self.oversample * n))

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Share of the last observed batch's groups that passed the filter."""
        return {"sampler/filter_pass_frac": self._last_keep_frac}


class DynamicSamplingFilter(_RefillingFilter):
    """DAPO dynamic sampling: keep a group iff its rewards are not all equal.

    The verdict is computed from the rollouts themselves in `on_observe` (see
    `rules_peer.dapo_keep`) and stored per sample in the column `dapo_keep`, so `keep`
    answers for the sample's last observation event. Samples never observed are kept.

    Args:
        oversample: chunk size of `refill` as a multiple of the train batch (verl's DAPO
            example: gen_batch_size 1536 for train_batch_size 512, i.e. 3).
        max_num_gen_batches: chunks `refill` may generate before giving up (verl example
            10; ≤ 0 = no limit).
    """

    def __init__(self, oversample: float = 3.0, max_num_gen_batches: int = 10) -> None:
        super().__init__(oversample, max_num_gen_batches)

    def bind(self, stats: SampleStats) -> None:
        """Add the per-sample verdict column."""
        stats.add_column("dapo_keep", np.bool_, True)

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Judge each observed group (a sample twice in one batch is judged on the union)."""
        r, m = results.rewards, results.mask
        srt = np.sort(rows)
        if (srt[1:] != srt[:-1]).all():
            keep = rules_peer.dapo_keep(r, m)
            stats["dapo_keep"][rows] = keep
        else:
            uniq, inv = np.unique(rows, return_inverse=True)
            hi = np.full(uniq.size, -np.inf)
            lo = np.full(uniq.size, np.inf)
            np.maximum.at(hi, inv, np.where(m, r, -np.inf).max(axis=1))
            np.minimum.at(lo, inv, np.where(m, r, np.inf).min(axis=1))
            cnt = np.bincount(inv, weights=m.sum(axis=1), minlength=uniq.size)
            keep = (cnt <= 1) | (hi > lo)
            stats["dapo_keep"][uniq] = keep
        self._last_keep_frac = float(keep.mean())

    def keep(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """(n,) bool verdicts of the samples' last observations."""
        return stats["dapo_keep"][rows].copy()


class BalancedFilter(_RefillingFilter):
    """Balanced online difficulty filtering: keep groups with pass rate in [low, high].

    The pass rate is the mean reward over all valid rollouts of the sample's last
    observation event (`SampleStats` column `group_mean`). Samples never observed are
    kept (no evidence). With `low = high = ` anything outside (0, 1) this degenerates; use
    `DynamicSamplingFilter` for DAPO's "not all equal" rule.

    Args:
        low, high: inclusive band, 0 ≤ low ≤ high ≤ 1 (default 0.2–0.8, a third-party
            choice; the paper's thresholds are not published, peer_samplers.md §3.1).
        oversample, max_num_gen_batches: as in `DynamicSamplingFilter`.
    """

    def __init__(
        self,
        low: float = 0.2,
        high: float = 0.8,
        oversample: float = 3.0,
        max_num_gen_batches: int = 10,
    ) -> None:
        super().__init__(oversample, max_num_gen_batches)
        self.low = check_range("low", low, 0.0, 1.0)
        self.high = check_range("high", high, 0.0, 1.0)
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got {low} > {high}")

    def keep(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """(n,) bool: last group pass rate inside the band (or never observed)."""
        p = stats["group_mean"][rows].astype(np.float64)
        return np.isnan(p) | rules_peer.balanced_keep(p, self.low, self.high)

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Record the pass fraction of this batch for metrics."""
        self._last_keep_frac = float(self.keep(stats, rows).mean())


# -------------------------------------------------------------------- refill
@dataclass(frozen=True)
class RefillChunk:
    """One generated chunk: its plan, results, which groups to train on, and caller data.

    Attributes:
        plan: the rollout plan that was generated.
        results: the observed results (already folded into the strategy).
        keep: (len(results),) bool, the groups that enter the train batch (after
            truncation to the target size).
        payload: whatever `generate` returned besides the results (token ids, ...).
    """

    plan: RolloutPlan
    results: GroupResults
    keep: np.ndarray
    payload: object = None


@dataclass(frozen=True)
class RefillBatch:
    """A train batch assembled by `refill`.

    Attributes:
        keys: (target,) keys of the kept groups, in generation order.
        chunks: every generated chunk.
        n_generated: groups generated in total.
        n_passed: groups that passed the filter (before truncation to the target).
    """

    keys: np.ndarray
    chunks: list[RefillChunk]
    n_generated: int
    n_passed: int

    @property
    def keep_rate(self) -> float:
        """Groups passing the filter per generated group."""
        return self.n_passed / max(self.n_generated, 1)


class RefillError(RuntimeError):
    """`refill` generated `max_num_gen_batches` chunks without filling the batch."""


def refill(
    strategy: Strategy,
    target: int,
    generate: Callable[[RolloutPlan], GroupResults | tuple[GroupResults, object]],
    *,
    oversample: float | None = None,
    gen_batch_size: int | None = None,
    max_num_gen_batches: int | None = None,
) -> RefillBatch:
    """Generate chunks until `target` groups pass the strategy's filter (DAPO's loop).

    Each chunk: `select(gen_batch_size)` → `plan` → `generate(plan)` → `observe` →
    `keep`. Kept groups are stacked until `target` exist; the surplus of the last chunk
    is dropped (its `keep` is cleared), so the batch has exactly `target` groups — the
    fixed train batch size of DAPO and of Bae et al.'s "stack" refill. The strategy has
    observed every generated group: do not observe them again. Keep `gen_batch_size` ≤
    the pool so a chunk has no repeated sample (a sample twice in one chunk is one
    observation event and gets one verdict for both groups).

    Args:
        strategy: any strategy; its filter decides what is kept.
        target: train batch size in prompts (≥ 1).
        generate: plan → results, or (results, payload) to carry rollout data along.
        oversample: chunk size as a multiple of `target`; default: the filter's
            `oversample` attribute if it has one, else 1.
        gen_batch_size: explicit chunk size (overrides `oversample`).
        max_num_gen_batches: chunk limit (≤ 0 = none); default: the filter's attribute,
            else 10.

    Raises:
        ValueError: bad `target`, `oversample` or `gen_batch_size`.
        RefillError: the chunk limit was reached first.
    """
    target = check_int("target", target, 1)
    flt = strategy.filter
    if gen_batch_size is None:
        factor = oversample if oversample is not None else getattr(flt, "oversample", 1.0)
        factor = check_range("oversample", factor, 1.0, np.inf)
        gen_batch_size = int(math.ceil(factor * target))
    else:
        gen_batch_size = check_int("gen_batch_size", gen_batch_size, 1)
    limit = max_num_gen_batches
    if limit is None:
        limit = getattr(flt, "max_num_gen_batches", 10)
    chunks: list[RefillChunk] = []
    kept_keys: list[np.ndarray] = []
    n_kept = 0
    n_generated = 0
    n_passed = 0
    while n_kept < target:
        if limit > 0 and len(chunks) >= limit:
            raise RefillError(
                f"refill: {len(chunks)} chunks of {gen_batch_size} prompts gave {n_kept} kept "
                f"groups < target {target}; raise max_num_gen_batches (now {limit}) or "
                f"oversample, or loosen the filter"
            )
        keys = strategy.select(int(gen_batch_size))
        plan = strategy.plan(keys)
        out = generate(plan)
        results, payload = out if isinstance(out, tuple) else (out, None)
        strategy.observe(results)
        keep = strategy.keep(results.keys)
        n_generated += len(results)
        idx = np.flatnonzero(keep)
        n_passed += idx.shape[0]
        take = idx[: target - n_kept]
        final = np.zeros(len(results), bool)
        final[take] = True
        kept_keys.append(results.keys[take])
        n_kept += take.shape[0]
        chunks.append(RefillChunk(plan, results, final, payload))
    return RefillBatch(np.concatenate(kept_keys), chunks, n_generated, n_passed)


# ------------------------------------------------------------------ registry
@register_strategy("dapo")
def dapo(
    group_size: int = 8,
    beta: float = 0.8,
    oversample: float = 3.0,
    max_num_gen_batches: int = 10,
    seed: int = 0,
) -> Strategy:
    """DAPO dynamic sampling (arXiv 2503.14476): uniform batches, drop all-equal groups.

    Use `refill` (or `strategy.filter.oversampled_size(n)`) to over-generate so the
    kept groups fill the train batch.
    """
    return Strategy(
        selector=UniformSelector(),
        guide=NoGuide(),
        filter=DynamicSamplingFilter(oversample, max_num_gen_batches),
        weighter=UnitWeighter(),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )


@register_strategy("balanced_filter")
def balanced_filter(
    group_size: int = 8,
    beta: float = 0.8,
    low: float = 0.2,
    high: float = 0.8,
    oversample: float = 3.0,
    max_num_gen_batches: int = 10,
    seed: int = 0,
) -> Strategy:
    """Balanced online difficulty filtering (Bae et al., arXiv 2504.03380): low <= p <= high."""
    return Strategy(
        selector=UniformSelector(),
        guide=NoGuide(),
        filter=BalancedFilter(low, high, oversample, max_num_gen_batches),
        weighter=UnitWeighter(),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )
