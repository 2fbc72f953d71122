"""DPO pairs from K scored samples per problem: a random correct vs a random incorrect."""

from __future__ import annotations

import numpy as np

__all__ = ["build_pairs"]


def build_pairs(
    rewards: np.ndarray,
    pairs_per_problem: int,
    rng: np.random.Generator,
    *,
    correct_threshold: float = 0.5,
) -> list[tuple[int, int, int]]:
    """Draw DPO pairs (problem, chosen sample, rejected sample) from K samples per problem.

    Why random: SAI-DPO pairs "a random correct answer" with "a random incorrect answer"
    of the same problem; problems with only one outcome (NoP = 0 or K) give no pair.

    Args:
        rewards: (n, K) rewards of K samples for each of n problems.
        pairs_per_problem: distinct (correct, incorrect) combinations to draw per problem,
            capped at #correct x #incorrect.
        rng: the generator (seeded by the caller, so pairs are reproducible).
        correct_threshold: reward at or above which a sample is correct (the strategy's).

    Returns:
        `(i, j_chosen, j_rejected)` triples, problems in order.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"expected rewards of shape (n, K), got {r.shape}")
    if pairs_per_problem < 1:
        raise ValueError(f"expected pairs_per_problem >= 1, got {pairs_per_problem}")
    out: list[tuple[int, int, int]] = []
    for i, row in enumerate(r):
        good = np.flatnonzero(row >= correct_threshold)
        bad = np.flatnonzero(row < correct_threshold)
        if good.size == 0 or bad.size == 0:
            continue
        m = min(pairs_per_problem, good.size * bad.size)
        for combo in rng.choice(good.size * bad.size, size=m, replace=False).tolist():
            out.append((i, int(good[combo // bad.size]), int(bad[combo % bad.size])))
    return out
