"""Per-sample posterior selectors: MoPPS (Thompson toward a target) and CurES.

Both keep a Beta posterior of each sample's success rate from its own rollouts and prefer
samples whose estimate is near p = 0.5, where a group of rollouts carries the most signal
(peer_samplers.md §0.4). They differ in how they choose: MoPPS draws one Thompson sample
per candidate and keeps the n closest to the target; CurES samples with probability
∝ exp(sqrt(p̂(1 − p̂))/T) and allocates rollouts ∝ gradient std.

References:
    MoPPS: Qu et al., "Can Prompt Difficulty be Online Predicted for Accelerating RL
    Finetuning of Reasoning Models?", arXiv 2507.04632 (code thu-rllab/MoPPS @ a883f51).
    CurES: Sun et al., arXiv 2510.01037 (code ZexuSun/CurES @ eccf298, "EPIC").
"""

from __future__ import annotations

import math

import numpy as np

from lppo_sampling.batch import GroupResults
from lppo_sampling.checks import check_bool, check_int
from lppo_sampling.roles import KeepAll, NoGuide, Selector, UnitWeighter, check_range
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategies import rules_peer
from lppo_sampling.strategies.sampling import weighted_sample_without_replacement
from lppo_sampling.strategy import Strategy, register_strategy

__all__ = ["MoPPSSelector", "CurESSelector", "allocate_rollouts", "mopps", "cures"]


def _unguided_per_row(rows: np.ndarray, results: GroupResults, threshold: float | None = None):
    """Unique rows with ≥ 1 unguided rollout, their count, reward sum and success count."""
    u = results.mask & ~results.guided
    n = u.sum(axis=1).astype(np.float64)
    total = np.where(u, results.rewards, 0.0).sum(axis=1)
    succ = (
        (u & (results.rewards >= threshold)).sum(axis=1).astype(np.float64)
        if threshold is not None
        else total
    )
    uniq, inv = np.unique(rows, return_inverse=True)
    n_u = np.bincount(inv, weights=n, minlength=uniq.size)
    sum_u = np.bincount(inv, weights=total, minlength=uniq.size)
    succ_u = np.bincount(inv, weights=succ, minlength=uniq.size)
    has = n_u > 0
    return uniq[has], n_u[has], sum_u[has], succ_u[has]


def _bad_column(col: str, what: str, values: np.ndarray, bad: np.ndarray) -> ValueError:
    """The error for a loaded role column holding an impossible value."""
    i = int(np.flatnonzero(bad)[0])
    return ValueError(
        f"state_dict['stats']['columns'][{col!r}] {what}: row {i} holds {values[i]!r}"
    )


def _all_rows_then_extra(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Every row once (shuffled), then uniform repeats: the selector contract when n > pool."""
    rows = rng.permutation(size).astype(np.int64)
    if n > size:
        rows = np.concatenate([rows, rng.integers(0, size, n - size)])
    return rows


class MoPPSSelector(Selector):
    """MoPPS: Beta posterior per sample, Thompson draw, keep the n closest to γ*.

    Each step a candidate pool of `ceil(candidate_ratio · n)` samples is drawn uniformly
    (the code's dataloader batch of ts_ratio × B prompts), one γ̂ ~ Beta(α, β) is drawn per
    candidate, and the n with γ̂ closest to `target` are selected (`mode="topk"`), or
    those inside [band_low, band_high] first (`mode="threshold"`). After rollout, the
    unguided mean accuracy s of k rollouts updates the posterior with discount λ
    (`rules_peer.beta_posterior_update`). Per-sample state lives in the columns
    `mopps_alpha` / `mopps_beta`.

    Args:
        target: γ* in [0, 1] (0.5).
        candidate_ratio: pool multiple ≥ 1 (16 in the MATH scripts).
        decay: λ in [0, 1] (1.0 = no discount: config default and MATH scripts; 0.5 for
            Countdown and Geometry3k).
        prior_alpha, prior_beta: α⁰, β⁰ > 0 (1, 1: uniform prior).
        mode: "topk" (default) or "threshold".
        band_low, band_high: band of the threshold mode (0.3, 0.7).
    """

    def __init__(
        self,
        target: float = 0.5,
        candidate_ratio: float = 16.0,
        decay: float = 1.0,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        mode: str = "topk",
        band_low: float = 0.3,
        band_high: float = 0.7,
    ) -> None:
        self.target = check_range("target", target, 0.0, 1.0)
        self.candidate_ratio = check_range("candidate_ratio", candidate_ratio, 1.0, np.inf)
        self.decay = check_range("decay", decay, 0.0, 1.0)
        self.prior_alpha = check_range("prior_alpha", prior_alpha, 0.0, np.inf, closed="right")
        self.prior_beta = check_range("prior_beta", prior_beta, 0.0, np.inf, closed="right")
        if mode not in ("topk", "threshold"):
            raise ValueError(f"mode must be 'topk' or 'threshold', got {mode!r}")
        self.mode = mode
        self.band_low = check_range("band_low", band_low, 0.0, 1.0)
        self.band_high = check_range("band_high", band_high, 0.0, 1.0)
        if self.band_low > self.band_high:
            raise ValueError(f"band_low must be <= band_high, got {band_low} > {band_high}")
        self._last_draw_dist = float("nan")

    def bind(self, stats: SampleStats) -> None:
        """Add the posterior columns (new samples start at the prior)."""
        # float32 keeps the pool under 100 bytes per sample; a posterior needs no more
        stats.add_column("mopps_alpha", np.float32, self.prior_alpha)
        stats.add_column("mopps_beta", np.float32, self.prior_beta)

    def check(self, stats: SampleStats) -> None:
        """Refuse posteriors that are not finite and > 0."""
        for col in ("mopps_alpha", "mopps_beta"):
            a = stats[col]
            bad = ~(np.isfinite(a) & (a > 0))
            if bad.any():
                raise _bad_column(col, "must be finite and > 0 (a Beta parameter)", a, bad)

    def thompson(
        self, stats: SampleStats, rows: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """One γ̂ ~ Beta(α, β) per row (Beta(1, 1) rows drawn as uniforms: same law, cheaper)."""
        a = stats["mopps_alpha"][rows]
        b = stats["mopps_beta"][rows]
        flat = (a == 1.0) & (b == 1.0)
        g = rng.random(rows.shape[0])
        rest = ~flat
        if rest.any():
            g[rest] = rng.beta(a[rest], b[rest])
        return g

    def select(self, stats: SampleStats, n: int, rng: np.random.Generator) -> np.ndarray:
        """Thompson draws on a uniform candidate pool; the n closest to the target."""
        size = len(stats)
        if n >= size:
            return _all_rows_then_extra(size, n, rng)
        m = min(size, int(math.ceil(self.candidate_ratio * n)))
        cand = rng.choice(size, size=m, replace=False).astype(np.int64)
        g = self.thompson(stats, cand, rng)
        if self.mode == "topk":
            idx = rules_peer.closest_to_target(g, self.target, n)
        else:
            idx = rules_peer.within_band_first(g, self.band_low, self.band_high, n)
        self._last_draw_dist = float(np.abs(g[idx] - self.target).mean())
        return cand[idx]

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Posterior update from each sample's unguided rollouts (one event per sample)."""
        uniq, k, total, _ = _unguided_per_row(rows, results)
        if uniq.size == 0:
            return
        a, b = rules_peer.beta_posterior_update(
            stats["mopps_alpha"][uniq],
            stats["mopps_beta"][uniq],
            k,
            total / k,
            self.decay,
            self.prior_alpha,
            self.prior_beta,
        )
        stats["mopps_alpha"][uniq] = a
        stats["mopps_beta"][uniq] = b

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Mean |γ̂ − γ*| of the last selection."""
        return {"sampler/mopps_draw_dist": self._last_draw_dist}


class CurESSelector(Selector):
    """CurES sampling: P(x) ∝ exp(sqrt(p̂(1 − p̂)) / T_x) with p̂ = (s + 1)/(n + 2).

    s and n count a sample's successful (reward ≥ `correct_threshold`) and total unguided
    rollouts (columns `cures_accepted`, `cures_attempts`; the 4-rollout prior-estimation
    pass of the paper is just a first `observe`). Batches are drawn without replacement
    with exactly that law by rejection from uniform proposals (`sampling.
    weighted_sample_without_replacement`): the weights are bounded by
    exp(0.5/temperature), so a step touches O(n) rows, never the whole pool.

    The rollout-allocation half of CurES (n_x ∝ gradient std σ_x) is `rollout_allocation`
    / `allocate_rollouts`, for learners that accept a per-sample group size.

    Args:
        temperature: T > 0 (100 = the released code's 1/0.01; the paper's value is not
            known, peer_samplers.md §5; with the code's value sampling is near uniform).
        scale_temperature_by_successes: T_x = T·(s + 1) as in the code (True), or T.
        correct_threshold: reward at or above which a rollout counts as a success (0.5).
    """

    def __init__(
        self,
        temperature: float = 100.0,
        scale_temperature_by_successes: bool = True,
        correct_threshold: float = 0.5,
    ) -> None:
        self.temperature = check_range("temperature", temperature, 0.0, np.inf, closed="right")
        self.scale = check_bool("scale_temperature_by_successes", scale_temperature_by_successes)
        self.correct_threshold = check_range("correct_threshold", correct_threshold, 0.0, 1.0)

    def bind(self, stats: SampleStats) -> None:
        """Add the success / attempt counters."""
        stats.add_column("cures_accepted", np.int32, 0)
        stats.add_column("cures_attempts", np.int32, 0)

    def check(self, stats: SampleStats) -> None:
        """Refuse negative counts and more successes than attempts."""
        acc, att = stats["cures_accepted"], stats["cures_attempts"]
        for col, a, bad in (
            ("cures_accepted", acc, acc < 0),
            ("cures_attempts", att, att < 0),
            ("cures_accepted", acc, acc > att),
        ):
            if bad.any():
                raise _bad_column(col, "must lie in [0, cures_attempts]", a, bad)

    def p_hat(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """(n,) posterior mean success rate of `rows`."""
        return rules_peer.cures_success_estimate(
            stats["cures_accepted"][rows], stats["cures_attempts"][rows]
        )

    def logits(self, stats: SampleStats, rows: np.ndarray) -> np.ndarray:
        """(n,) sampling logits of `rows`, in [0, 0.5/temperature]."""
        return rules_peer.cures_logits(
            self.p_hat(stats, rows), stats["cures_accepted"][rows], self.temperature, self.scale
        )

    def select(self, stats: SampleStats, n: int, rng: np.random.Generator) -> np.ndarray:
        """N distinct rows, successively ∝ exp(logit)."""
        size = len(stats)
        if n >= size:
            return _all_rows_then_extra(size, n, rng)
        top = 0.5 / self.temperature

        def weight(rows: np.ndarray) -> np.ndarray:
            return np.exp(self.logits(stats, rows) - top)

        return weighted_sample_without_replacement(size, n, weight, 1.0, rng)

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Count unguided successes and attempts."""
        uniq, k, _, succ = _unguided_per_row(rows, results, self.correct_threshold)
        stats["cures_accepted"][uniq] += succ.astype(np.int32)
        stats["cures_attempts"][uniq] += k.astype(np.int32)

    def rollout_allocation(
        self, stats: SampleStats, rows: np.ndarray, budget: int, sigma: np.ndarray | None = None
    ) -> np.ndarray:
        """CurES rollouts per row, ∝ σ (default proxy: sqrt(p̂(1 − p̂)), [A])."""
        if sigma is None:
            p = self.p_hat(stats, rows)
            sigma = np.sqrt(p * (1.0 - p))
        return rules_peer.cures_rollout_allocation(sigma, budget)

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Share of the pool with at least one counted attempt."""
        n = len(stats)
        return {
            "sampler/cures_seen_frac": float((stats["cures_attempts"] > 0).mean()) if n else 0.0
        }


def allocate_rollouts(
    strategy: Strategy, keys: object, budget: int, sigma: np.ndarray | None = None
) -> np.ndarray:
    """CurES rollout allocation for `keys` of a `cures` strategy (rollouts per key).

    Args:
        strategy: a strategy whose selector is a `CurESSelector`.
        keys: (n,) sample keys.
        budget: total rollouts to spread (B · n_max = 1024 · 8 in the paper's script).
        sigma: (n,) gradient std per key if the learner can compute it; default proxy
            sqrt(p̂(1 − p̂)).
    """
    if not isinstance(strategy.selector, CurESSelector):
        raise ValueError(
            f"strategy must use a CurESSelector, got {type(strategy.selector).__name__}"
        )
    budget = check_int("budget", budget, 0)
    rows = strategy.stats.rows(keys)
    return strategy.selector.rollout_allocation(strategy.stats, rows, int(budget), sigma)


# ------------------------------------------------------------------ registry
@register_strategy("mopps")
def mopps(
    group_size: int = 8,
    beta: float = 0.8,
    target: float = 0.5,
    candidate_ratio: float = 16.0,
    decay: float = 1.0,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    mode: str = "topk",
    band_low: float = 0.3,
    band_high: float = 0.7,
    seed: int = 0,
) -> Strategy:
    """MoPPS (arXiv 2507.04632): Thompson sampling of Beta posteriors toward γ* = 0.5."""
    return Strategy(
        selector=MoPPSSelector(
            target, candidate_ratio, decay, prior_alpha, prior_beta, mode, band_low, band_high
        ),
        guide=NoGuide(),
        filter=KeepAll(),
        weighter=UnitWeighter(),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )


@register_strategy("cures")
def cures(
    group_size: int = 8,
    beta: float = 0.8,
    temperature: float = 100.0,
    scale_temperature_by_successes: bool = True,
    correct_threshold: float = 0.5,
    seed: int = 0,
) -> Strategy:
    """CurES (arXiv 2510.01037): sampling ∝ exp(sqrt(p̂(1−p̂))/T); see `allocate_rollouts`."""
    return Strategy(
        selector=CurESSelector(temperature, scale_temperature_by_successes, correct_threshold),
        guide=NoGuide(),
        filter=KeepAll(),
        weighter=UnitWeighter(),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )
