"""CurES: posterior mean, sqrt(p(1-p))/T sampling law, rollout allocation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lppo_sampling import GroupResults, make_strategy
from lppo_sampling.strategies.posterior import CurESSelector, allocate_rollouts
from lppo_sampling.strategies.rules_peer import (
    cures_logits,
    cures_rollout_allocation,
    cures_success_estimate,
)
from lppo_sampling.strategies.sampling import gumbel_top_k, weighted_sample_without_replacement

SET = settings(max_examples=80, deadline=None)


def test_rule_hand_values():
    assert cures_success_estimate(np.array([0, 4, 2]), np.array([0, 4, 4])).tolist() == [
        0.5,
        5 / 6,
        0.5,
    ]
    # code default: T_x = 100 (α + 1)
    assert np.allclose(cures_logits(np.array([0.5]), np.array([1]), 100.0), 0.5 / 200)
    assert np.allclose(cures_logits(np.array([0.5]), np.array([1]), 0.5, False), 1.0)
    assert cures_rollout_allocation(np.array([1.0, 3.0, 0.0]), 8).tolist() == [2, 6, 0]
    assert cures_rollout_allocation(np.zeros(4), 8).tolist() == [2, 2, 2, 2]


@SET
@given(p=st.floats(0.5, 1), s=st.integers(0, 50), t=st.floats(0.01, 100))
def test_logits_bounded_and_symmetric(p, s, t):
    """Bug caught: the temperature multiplied instead of divided (logits above 0.5/T), or a
    score not symmetric about p = 0.5 (e.g. sqrt(p) alone).

    p >= 0.5 makes q = 1 - p exact (Sterbenz) and 1 - q == p, so both scores are the same
    product and must be equal to the bit (for p near 0, 1 - p rounds: p = 4e-16 gave
    logits 3.2e-7 vs 3.4e-7)."""
    x = cures_logits(np.array([p, 1 - p]), np.array([s, s]), t)
    assert (x >= 0).all() and (x <= 0.5 / t + 1e-12).all()
    assert x[0] == x[1]


@SET
@given(
    sig=hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(0, 10)),
    budget=st.integers(0, 4096),
)
def test_allocation_is_proportional_and_monotone(sig, budget):
    """Bug caught: rollouts allocated inversely to σ, or a normalisation that loses the
    budget (Σ n far from the budget)."""
    n = cures_rollout_allocation(sig, budget)
    assert (n >= 0).all()
    assert abs(int(n.sum()) - budget) <= sig.size / 2 + 1e-9
    order = np.argsort(sig, kind="stable")
    assert (np.diff(n[order]) >= 0).all()


def test_weighted_sampler_matches_gumbel_law():
    """Rejection sampling and Gumbel-top-k give the same first-draw frequencies."""
    w = np.array([1.0, 2.0, 3.0, 4.0, 0.5])
    rng = np.random.default_rng(0)
    first_rej = np.zeros(5)
    first_gum = np.zeros(5)
    for _ in range(4000):
        r = weighted_sample_without_replacement(5, 2, lambda rows: w[rows], 4.0, rng)
        assert len(set(r.tolist())) == 2
        first_rej[r[0]] += 1
        first_gum[gumbel_top_k(np.log(w), 2, rng)[0]] += 1
    assert np.allclose(first_rej / 4000, w / w.sum(), atol=0.03)
    assert np.allclose(first_gum / 4000, w / w.sum(), atol=0.03)


def test_low_acceptance_falls_back_to_gumbel():
    w = np.zeros(1000)
    w[:3] = 1.0
    r = weighted_sample_without_replacement(
        1000, 3, lambda rows: w[rows], 1.0, np.random.default_rng(0)
    )
    assert sorted(r.tolist()) == [0, 1, 2]


def test_observe_counts_and_sampling_prefers_uncertain_samples():
    s = make_strategy("cures", temperature=0.05, scale_temperature_by_successes=False, seed=0)
    s.add_samples(np.arange(200))
    r = np.zeros((200, 4))
    r[:100, :2] = 1.0  # p̂ = 0.5 for 0..99
    r[100:, :] = 1.0  # p̂ = 5/6 for 100..199
    s.observe(GroupResults.build(np.arange(200), r))
    assert s.stats["cures_accepted"][:3].tolist() == [2, 2, 2] and s.stats["cures_attempts"][0] == 4
    chosen = np.concatenate([s.select(10) for _ in range(50)])
    # weights exp(0.5/0.05) vs exp(sqrt(5/36)/0.05): ratio ~ e^2.55 ≈ 12.9
    assert (chosen < 100).mean() > 0.85
    alloc = allocate_rollouts(s, [0, 150], 16)
    assert alloc[0] > alloc[1]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="temperature"):
        CurESSelector(temperature=0)
    with pytest.raises(ValueError, match="correct_threshold"):
        CurESSelector(correct_threshold=2)
    with pytest.raises(ValueError, match="strategy must use a CurESSelector"):
        allocate_rollouts(make_strategy("uniform"), [0], 4)
    with pytest.raises(ValueError, match="sigma"):
        cures_rollout_allocation(np.array([-1.0]), 4)
