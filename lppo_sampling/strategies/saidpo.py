"""SAI-DPO sampler side: self-aware difficulty from K probes, cluster error up-weighting.

Each iteration SAI-DPO probes a small subset of the pool (~1%) with K = 8 rollouts per
problem, measures the *current* model's difficulty on each — passes NoP first, then the
number of reasoning steps, then output length, lexicographically — and samples the next
training set from the "solvable band" 0 < NoP < K, giving more mass to knowledge clusters
where the model errs more. Clusters are the `category` labels of the pool (for the
paper's embedding + K-Means clusters of knowledge tags see `lppo_sampling.clustering`).
The DPO learner and the probe → select → DPO loop belong to `agents`.

Typical loop::

    s = make_strategy("saidpo", group_size=8)
    s.add_samples(ids, category=cluster_ids)
    probe = probe_keys(s)                      # ~1% of the pool
    s.observe(results_of(probe, K=8))          # K rollouts each: NoP, steps, length
    train = s.select(256)                      # in band, weak clusters first, harder first

Reference: Rao et al., "Dynamic Sampling that Adapts: Iterative DPO for Self-Aware
Mathematical Reasoning", arXiv 2505.16176; papers_lppo_saidpo.md §2 ([A] marks the
parts this implementation had to choose: band, q_k ∝ err_k, in-band hardness tournament).
"""

from __future__ import annotations

import math

import numpy as np

from lppo_sampling.batch import GroupResults
from lppo_sampling.checks import check_int
from lppo_sampling.roles import NoGuide, Selector, UnitWeighter, check_range
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategies import rules_peer
from lppo_sampling.strategies.filters import DynamicSamplingFilter
from lppo_sampling.strategies.sampling import ArmIndex, _cap_counts
from lppo_sampling.strategy import Strategy, register_strategy

__all__ = ["SAIDPOSelector", "probe_keys", "saidpo"]

_MAX_COUNT = np.iinfo(np.int16).max


class SAIDPOSelector(Selector):
    """Select from the solvable band by cluster error, preferring harder problems.

    State per sample (from its latest observation with unguided rollouts): correct and
    attempted rollouts (int16 columns `saidpo_correct` / `saidpo_attempts`), mean steps
    and length (`saidpo_steps` / `saidpo_length`, −1 = not measured), and `saidpo_in_band`
    (0 < correct < attempts, i.e. 0 < NoP < K). Per cluster, integer sums of correct and
    attempted rollouts over probed samples give the error rate
    err_k = 1 − Σcorrect / Σattempts (exact, so restoring a checkpoint reproduces it).

    `select(n)`:
      1. per-cluster counts ~ Multinomial(n, q), q_k ∝ err_k + `error_floor` over clusters
         with in-band samples (`rules_peer.cluster_error_weights`), capped at their size;
      2. within a cluster, `ceil(candidate_factor · m_k)` distinct in-band samples are
         drawn uniformly and the m_k hardest by (NoP ↑, steps ↓, length ↓) are kept — a
         tournament that prefers harder problems without sorting the pool
         (`candidate_factor = 1`: uniform within the band);
      3. if the band holds fewer than n samples, the rest is filled uniformly from the
         pool (a cold start — nothing probed yet — is a uniform batch, i.e. a probe).

    Args:
        k: K, probes per problem (8); NoP is reported on this scale.
        probe_fraction: share of the pool `probe` draws by default (0.01).
        candidate_factor: tournament size ≥ 1 (4).
        correct_threshold: reward at or above which a rollout is correct (0.5).
        error_floor: mass added to every available cluster's error rate (0).
    """

    def __init__(
        self,
        k: int = 8,
        probe_fraction: float = 0.01,
        candidate_factor: float = 4.0,
        correct_threshold: float = 0.5,
        error_floor: float = 0.0,
    ) -> None:
        self.k = check_int("k", k, 2)
        self.probe_fraction = check_range(
            "probe_fraction", probe_fraction, 0.0, 1.0, closed="right"
        )
        self.candidate_factor = check_range("candidate_factor", candidate_factor, 1.0, np.inf)
        self.correct_threshold = check_range("correct_threshold", correct_threshold, 0.0, 1.0)
        self.error_floor = check_range("error_floor", error_floor, 0.0, np.inf)
        self.index = ArmIndex()
        self._agg_version = -1
        self.correct_sum = np.zeros(1, np.int64)
        self.attempt_sum = np.zeros(1, np.int64)
        self.band_count = np.zeros(1, np.int64)
        self.band_rows = np.zeros(0, np.int64)  # sorted rows in the band (derived state)
        self._last: dict[str, float] = {}

    # ------------------------------------------------------------------ state
    def bind(self, stats: SampleStats) -> None:
        """Add the probe columns; aggregates are rebuilt lazily from them."""
        stats.add_column("saidpo_correct", np.int16, 0)
        stats.add_column("saidpo_attempts", np.int16, 0)
        # -1 = not measured (a NaN fill would not survive SampleStats' re-bind check)
        stats.add_column("saidpo_steps", np.float32, -1.0)
        stats.add_column("saidpo_length", np.float32, -1.0)
        stats.add_column("saidpo_in_band", np.bool_, False)
        self.index.invalidate()
        self._agg_version = -1

    def check(self, stats: SampleStats) -> None:
        """Refuse impossible probe columns: counts out of order, a band flag that disagrees."""
        c = stats["saidpo_correct"].astype(np.int64)
        a = stats["saidpo_attempts"].astype(np.int64)
        checks = [
            ("saidpo_attempts", "must be >= 0", a < 0),
            ("saidpo_correct", "must lie in [0, saidpo_attempts]", (c < 0) | (c > a)),
            ("saidpo_in_band", "must equal 0 < saidpo_correct < saidpo_attempts",
             stats["saidpo_in_band"] != ((c > 0) & (c < a))),
        ]
        for col in ("saidpo_steps", "saidpo_length"):
            v = stats[col]
            checks.append((col, "must be -1 (unmeasured) or finite >= 0",
                           ~(np.isfinite(v) & ((v >= 0) | (v == -1)))))
        for col, what, bad in checks:
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"state_dict['stats']['columns'][{col!r}] {what}: row {i} holds "
                    f"{stats[col][i]!r}"
                )

    def invalidate(self) -> None:
        """Rebuild cluster grouping and sums on the next use (after re-labelling samples)."""
        self.index.invalidate()
        self._agg_version = -1

    def _aggregates(self, stats: SampleStats) -> None:
        """Per-cluster sums, rebuilt from the columns whenever the grouping is rebuilt."""
        self.index.refresh(stats)
        if self._agg_version == self.index.version:
            return
        k = ArmIndex.n_arms(stats)
        arms = stats["category"].astype(np.int64) + 1
        self.correct_sum = np.bincount(arms, weights=stats["saidpo_correct"], minlength=k).astype(
            np.int64
        )
        self.attempt_sum = np.bincount(arms, weights=stats["saidpo_attempts"], minlength=k).astype(
            np.int64
        )
        self.band_count = np.bincount(arms, weights=stats["saidpo_in_band"], minlength=k).astype(
            np.int64
        )
        self.band_rows = np.flatnonzero(stats["saidpo_in_band"]).astype(np.int64)
        self._agg_version = self.index.version

    # ------------------------------------------------------------ measurement
    def nop(self, stats: SampleStats, rows: np.ndarray | None = None) -> np.ndarray:
        """NoP on the K scale (NaN where never probed)."""
        c, a = stats["saidpo_correct"], stats["saidpo_attempts"]
        if rows is not None:
            c, a = c[rows], a[rows]
        return rules_peer.saidpo_nop(c, a, self.k)

    def cluster_error(self, stats: SampleStats) -> np.ndarray:
        """(n_arms,) err_k = 1 − Σcorrect/Σattempts over probed samples (NaN: none probed)."""
        self._aggregates(stats)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(
                self.attempt_sum > 0,
                1.0 - self.correct_sum / np.maximum(self.attempt_sum, 1),
                np.nan,
            )

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Replace each observed sample's probe measurement by this event's unguided rollouts."""
        self._aggregates(stats)
        u = results.mask & ~results.guided
        per = [
            u.sum(1),
            (u & (results.rewards >= self.correct_threshold)).sum(1),
        ]
        has_len = results.lengths is not None
        has_steps = results.steps is not None
        if has_len:
            per.append(np.where(u, results.lengths, 0.0).sum(1))
        if has_steps:
            per.append(np.where(u, results.steps, 0.0).sum(1))
        uniq, inv = np.unique(rows, return_inverse=True)
        agg = [
            np.bincount(inv, weights=np.asarray(x, np.float64), minlength=uniq.size) for x in per
        ]
        att = agg[0]
        ok = att > 0
        r = uniq[ok]
        if r.size == 0:
            return
        new_a = np.minimum(att[ok], _MAX_COUNT).astype(np.int64)
        new_c = np.minimum(agg[1][ok], new_a).astype(np.int64)
        arms = self.index.arm_of(stats, r)
        k = self.correct_sum.shape[0]
        old_c = stats["saidpo_correct"][r].astype(np.int64)
        old_a = stats["saidpo_attempts"][r].astype(np.int64)
        old_b = stats["saidpo_in_band"][r]
        new_b = (new_c > 0) & (new_c < new_a)
        self.correct_sum += np.bincount(arms, weights=new_c - old_c, minlength=k).astype(np.int64)
        self.attempt_sum += np.bincount(arms, weights=new_a - old_a, minlength=k).astype(np.int64)
        self.band_count += np.bincount(
            arms, weights=new_b.astype(np.int64) - old_b.astype(np.int64), minlength=k
        ).astype(np.int64)
        stats["saidpo_correct"][r] = new_c
        stats["saidpo_attempts"][r] = new_a
        stats["saidpo_in_band"][r] = new_b
        # keep the sorted band list: drop rows that left, insert rows that joined
        kept = self.band_rows[stats["saidpo_in_band"][self.band_rows]]
        joined = r[new_b & ~old_b]
        self.band_rows = np.insert(kept, np.searchsorted(kept, joined), joined)
        i = 2
        if has_len:
            stats["saidpo_length"][r] = agg[i][ok] / att[ok]
            i += 1
        if has_steps:
            stats["saidpo_steps"][r] = agg[i][ok] / att[ok]

    # -------------------------------------------------------------- selection
    def probe(self, stats: SampleStats, n: int | None, rng: np.random.Generator) -> np.ndarray:
        """Rows to probe: `n` (default ceil(probe_fraction · pool)), uniform, no repeats."""
        size = len(stats)
        if n is None:
            n = max(1, int(math.ceil(self.probe_fraction * size)))
        n = check_int("n", n, 1)
        return rng.choice(size, size=min(n, size), replace=False).astype(np.int64)

    def _band_rows_of_arm(
        self,
        stats: SampleStats,
        arm: int,
        want: int,
        band_arms: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """`want` distinct in-band rows of one arm, uniformly.

        Either rejection from the arm's rows (cost ~ want · arm size / arm band size) or a
        scan of the band list (cost ~ band size), whichever touches fewer rows; never the
        whole pool.
        """
        rows_k = self.index.rows_of_arm(arm)
        in_band = stats["saidpo_in_band"]
        b = int(self.band_count[arm])
        want = min(want, b)
        size = rows_k.shape[0]
        if 3 * want * size / max(b, 1) < self.band_rows.shape[0]:
            got = np.zeros(0, np.int64)
            for _ in range(16):
                need = want - got.shape[0]
                if need <= 0:
                    break
                draw = rows_k[rng.integers(0, size, int(math.ceil(1.5 * need * size / b)) + 8)]
                got = np.concatenate([got, draw[in_band[draw]]])
                _, first = np.unique(got, return_index=True)
                got = got[np.sort(first)][:want]
            if got.shape[0] == want:
                return got
        cand = self.band_rows[band_arms == arm]
        return cand[rng.choice(cand.shape[0], size=want, replace=False)]

    def select(self, stats: SampleStats, n: int, rng: np.random.Generator) -> np.ndarray:
        """Cluster-weighted, harder-first batch from the solvable band (see class doc)."""
        self._aggregates(stats)
        size = len(stats)
        avail = self.band_count > 0
        parts: list[np.ndarray] = []
        total_band = int(self.band_count.sum())
        if total_band:
            q = rules_peer.cluster_error_weights(self.cluster_error(stats), avail, self.error_floor)
            m = _cap_counts(rng.multinomial(min(n, total_band), q), self.band_count, q, rng)
            in_band_rows = []
            band_arms = self.index.arm_of(stats, self.band_rows)
            for arm in np.flatnonzero(m).tolist():
                want = int(m[arm])
                cand = self._band_rows_of_arm(
                    stats, arm, int(math.ceil(self.candidate_factor * want)), band_arms, rng
                )
                order = rules_peer.saidpo_hardness_order(
                    self.nop(stats, cand), stats["saidpo_steps"][cand], stats["saidpo_length"][cand]
                )
                in_band_rows.append(cand[order[:want]])
            parts = in_band_rows
        chosen = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        rest = n - chosen.shape[0]
        self._last = {"sampler/saidpo_in_band_frac": chosen.shape[0] / n}
        if rest > 0:
            chosen = np.concatenate([chosen, self._fill(size, chosen, rest, rng)])
        return chosen[rng.permutation(chosen.shape[0])]

    @staticmethod
    def _fill(size: int, taken: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` rows not in `taken`, uniformly (repeats only once the pool is exhausted)."""
        free = size - taken.shape[0]
        if 4 * n >= free:
            mask = np.ones(size, bool)
            mask[taken] = False
            rows = rng.permutation(np.flatnonzero(mask))
            extra = rng.integers(0, size, max(n - free, 0))
            return np.concatenate([rows[:n], extra]).astype(np.int64)
        got = np.zeros(0, np.int64)
        while got.shape[0] < n:
            draw = rng.integers(0, size, 2 * (n - got.shape[0]) + 8)
            got = np.concatenate([got, draw[~np.isin(draw, taken)]])
            _, first = np.unique(got, return_index=True)
            got = got[np.sort(first)][:n]
        return got

    def state_dict(self) -> dict:
        """Nothing beyond the table: cluster sums are rebuilt exactly from its columns."""
        return {}

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Band size, probed share, and the error rate spread over clusters."""
        if len(stats) == 0:
            return {}
        self._aggregates(stats)
        err = self.cluster_error(stats)
        out = dict(self._last)
        out["sampler/saidpo_band_size"] = float(self.band_count.sum())
        out["sampler/saidpo_probed_frac"] = float((stats["saidpo_attempts"] > 0).mean())
        if np.isfinite(err).any():
            out["sampler/saidpo_cluster_err_max"] = float(np.nanmax(err))
            out["sampler/saidpo_cluster_err_min"] = float(np.nanmin(err))
        return out


def probe_keys(
    strategy: Strategy, n: int | None = None, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Keys to probe this iteration with K rollouts each (default ~1% of the pool).

    Uses the strategy's own generator unless `rng` is given, so the probe set is part of
    the reproducible, checkpointed state.
    """
    if not isinstance(strategy.selector, SAIDPOSelector):
        raise ValueError(
            f"strategy must use a SAIDPOSelector, got {type(strategy.selector).__name__}"
        )
    if len(strategy) == 0:
        raise ValueError("the pool is empty: call add_samples(keys) first")
    rows = strategy.selector.probe(strategy.stats, n, strategy.rng if rng is None else rng)
    return strategy.stats.index.keys_of(rows)


@register_strategy("saidpo")
def saidpo(
    group_size: int = 8,
    beta: float = 0.8,
    probe_fraction: float = 0.01,
    candidate_factor: float = 4.0,
    correct_threshold: float = 0.5,
    error_floor: float = 0.0,
    seed: int = 0,
) -> Strategy:
    """SAI-DPO sampler (arXiv 2505.16176): K = group_size probes, band, cluster error weights.

    The filter keeps groups with both correct and incorrect rollouts (DAPO's rule), the
    ones that yield a DPO pair (chosen = a correct, rejected = an incorrect rollout).
    """
    group_size = check_int("group_size", group_size, 2)  # K probes: the selector's k
    return Strategy(
        selector=SAIDPOSelector(
            group_size, probe_fraction, candidate_factor, correct_threshold, error_floor
        ),
        guide=NoGuide(),
        filter=DynamicSamplingFilter(),
        weighter=UnitWeighter(),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )
