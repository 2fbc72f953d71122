"""Pure rules of sample-centric RLVR: arrays in, arrays out, no state.

Every rule a strategy applies lives here as a vectorised numpy function so that its
properties (bounds, monotonicity, order invariance) can be stated and tested on their
own. Strategies only decide *which* rows a rule is applied to.

References:
    LPPO: Chen et al., "From Data-Centric to Sample-Centric: Enhancing LLM Reasoning via
    Progressive Optimization", arXiv 2507.06573 (LP-weighting, PG-sampling).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ema_update",
    "learning_progress",
    "lp_weight",
    "is_stuck",
    "guided_slot_count",
    "prefix_ratio_matrix",
    "allow_guidance",
    "sigmoid",
]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, exact at both tails (never overflows)."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def ema_update(old: np.ndarray, observed: np.ndarray, beta: float, seen: np.ndarray) -> np.ndarray:
    """EMA of a pass rate: `beta * old + (1 - beta) * observed`, or `observed` on first sight.

    Taking the observed rate on first sight (instead of starting from 0 or 0.5) avoids
    reporting fake progress on the second observation of a sample (LPPO §3, [A] in
    papers_lppo_saidpo.md §1.9).

    Args:
        old: (n,) previous EMA (ignored where `seen` is False).
        observed: (n,) pass rate observed now, in [0, 1].
        beta: smoothing coefficient in [0, 1); larger = slower. LPPO default 0.8.
        seen: (n,) bool, whether the sample had been observed before.

    Returns:
        (n,) float64 new EMA, in [0, 1] whenever inputs are.
    """
    old = np.asarray(old, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    return np.where(seen, beta * old + (1.0 - beta) * observed, observed)


def learning_progress(old: np.ndarray, new: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Learning progress Δ = new EMA − old EMA; 0 on first sight (no history, no progress)."""
    old = np.asarray(old, dtype=np.float64)
    new = np.asarray(new, dtype=np.float64)
    return np.where(seen, new - old, 0.0)


def lp_weight(delta: np.ndarray, kappa: float = 8.0, bias: float = 0.5) -> np.ndarray:
    """LPPO learning-progress weight `w = σ(κ·Δ) + b`, in [b, 1 + b], monotone in Δ.

    Improving samples (Δ > 0) count more, regressing or stagnant ones less; Δ = 0
    (unseen or steady) gives the neutral `0.5 + b` (= 1.0 with the defaults).

    Args:
        delta: (n,) learning progress.
        kappa: steepness κ >= 0 (LPPO default 8).
        bias: floor b (LPPO default 0.5), so no sample is ever silenced.
    """
    return sigmoid(kappa * np.asarray(delta, dtype=np.float64)) + bias


def is_stuck(
    ema: np.ndarray,
    last_pass_rate: np.ndarray,
    seen: np.ndarray,
    has_solution: np.ndarray,
    threshold: float = 0.05,
) -> np.ndarray:
    """Which samples PG-sampling should guide.

    A sample is stuck when it has been observed, has an expert solution to draw a prefix
    from, and either its last unguided group all failed or its EMA pass rate is at most
    `threshold`. Unseen samples are never stuck: there is no evidence yet.

    Args:
        ema: (n,) EMA of unguided pass rate.
        last_pass_rate: (n,) unguided pass rate of the most recent observation (NaN = none).
        seen: (n,) bool.
        has_solution: (n,) bool.
        threshold: EMA level at or below which a sample counts as stuck.
    """
    failed_last = np.asarray(last_pass_rate) <= 0.0  # NaN (no observation) compares False
    low_ema = np.asarray(ema, dtype=np.float64) <= threshold
    return np.asarray(seen, bool) & np.asarray(has_solution, bool) & (failed_last | low_ema)


def guided_slot_count(group_size: int, guided_fraction: float) -> int:
    """How many of the G rollouts of a stuck sample start from a prefix.

    `round(guided_fraction * G)`, but at least 1 when the fraction is positive, so a
    small group still gets guidance.
    """
    if guided_fraction <= 0:
        return 0
    return int(min(group_size, max(1, round(guided_fraction * group_size))))


def allow_guidance(
    stuck: np.ndarray, last_event_guided_only: np.ndarray, n_guided: int, group_size: int
) -> np.ndarray:
    """Which stuck rows get their guided slots this visit: no sample is guided forever.

    Guided rewards never move the unguided EMA, so a sample whose every rollout is guided
    could stay "stuck" forever, whatever it learned. When the guided slots are fewer than
    G, every visit keeps an unguided rollout and all stuck rows are guided. When they fill
    the group (G = 1, or `guided_fraction` rounds to G), a row whose last observation
    event had no unguided rollout is left fully unguided this visit: at least every second
    visit of a stuck sample measures its unguided pass rate.

    Args:
        stuck: (n,) bool, rows the guide would like to guide.
        last_event_guided_only: (n,) bool, the row's last observation event held no
            unguided rollout (`SampleStats` column of that name).
        n_guided: guided slots per guided row.
        group_size: G.

    Returns:
        (n,) bool, rows to guide now.
    """
    stuck = np.asarray(stuck, dtype=bool)
    if n_guided < group_size:
        return stuck
    return stuck & ~np.asarray(last_event_guided_only, dtype=bool)


def prefix_ratio_matrix(
    guided_rows: np.ndarray,
    group_size: int,
    n_guided: int,
    low: float,
    high: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-slot prefix ratios: the last `n_guided` slots of each guided row get U[low, high].

    Guided slots sit at the end of each group so that slot `j < G - n_guided` is always an
    unguided rollout; this keeps the plan layout predictable for callers and tests.

    Args:
        guided_rows: (n,) bool, rows to guide.
        group_size: G.
        n_guided: guided slots per guided row.
        low: lower edge of the prefix-ratio band (fraction of solution steps), 0 < low <= high.
        high: upper edge of that band, high < 1.
        rng: source of randomness; exactly `guided_rows.sum() * n_guided` draws are consumed.

    Returns:
        (n, G) float64, 0 where unguided.
    """
    guided_rows = np.asarray(guided_rows, dtype=bool)
    ratios = np.zeros((guided_rows.shape[0], group_size), dtype=np.float64)
    n_rows = int(guided_rows.sum())
    if n_rows and n_guided:
        draws = rng.uniform(low, high, size=(n_rows, n_guided))
        rows = np.flatnonzero(guided_rows)[:, None]
        ratios[rows, np.arange(group_size - n_guided, group_size)] = draws
    return ratios
