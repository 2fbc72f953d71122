"""Balanced online difficulty filtering (Bae et al.): keep groups with p in [low, high]."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lppo_sampling import GroupResults, make_strategy
from lppo_sampling.strategies.filters import BalancedFilter, refill
from lppo_sampling.strategies.rules_peer import balanced_keep

SET = settings(max_examples=80, deadline=None)
p_st = st.floats(0, 1)


def test_balanced_keep_hand_values():
    p = np.array([0.0, 0.125, 0.2, 0.5, 0.8, 0.875, 1.0, np.nan])
    assert balanced_keep(p, 0.2, 0.8).tolist() == [
        False,
        False,
        True,
        True,
        True,
        False,
        False,
        False,
    ]


@SET
@given(p=p_st, a=st.floats(0, 0.5))
def test_symmetric_band_equals_variance_threshold(p, a):
    # [a, 1 - a] is exactly {p : p(1-p) >= a(1-a)} (up to float rounding at the edges)
    """Bug caught: a band test on the wrong quantity (keeping p outside [a, 1 − a], or
    comparing p itself to a(1 − a)), which breaks the equivalence with p(1 − p) ≥ a(1 − a)."""
    lhs = bool(balanced_keep(np.array([p]), a, 1 - a)[0])
    rhs = p * (1 - p) >= a * (1 - a)
    if abs(p * (1 - p) - a * (1 - a)) > 1e-12:
        assert lhs == rhs


@SET
@given(p=p_st, lo=st.floats(0, 1), hi=st.floats(0, 1), widen=st.floats(0, 0.3))
def test_wider_band_keeps_a_superset_and_is_symmetric(p, lo, hi, widen):
    """Bug caught: low and high comparisons swapped, or a band that is not mirror-symmetric
    under p ↔ 1 − p."""
    lo, hi = min(lo, hi), max(lo, hi)
    x = np.array([p])
    if balanced_keep(x, lo, hi)[0]:
        assert balanced_keep(x, max(lo - widen, 0), min(hi + widen, 1))[0]
    assert balanced_keep(x, lo, hi)[0] == balanced_keep(1 - x, 1 - hi, 1 - lo)[0] or (
        min(abs(p - lo), abs(p - hi)) < 1e-12
    )


def test_filter_on_group_pass_rate():
    s = make_strategy("balanced_filter", low=0.25, high=0.75)
    s.add_samples(np.arange(6))
    r = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]], float)
    s.observe(GroupResults.build(np.arange(5), r))
    assert s.keep(np.arange(6)).tolist() == [False, False, True, True, True, True]


def test_refill_with_the_band():
    s = make_strategy("balanced_filter", seed=3)
    s.add_samples(np.arange(100))
    rng = np.random.default_rng(0)

    def generate(plan):
        r = (rng.random((len(plan), plan.group_size)) < 0.5).astype(float)
        return GroupResults.from_plan(plan, r)

    batch = refill(s, 10, generate)
    assert batch.keys.shape == (10,)
    for c in batch.chunks:
        p = c.results.rewards[c.keep].mean(axis=1)
        assert ((p >= 0.2) & (p <= 0.8)).all()


def test_bad_band_is_named():
    with pytest.raises(ValueError, match="low"):
        BalancedFilter(low=-0.1)
    with pytest.raises(ValueError, match="high"):
        BalancedFilter(high=1.5)
    with pytest.raises(ValueError, match="low must be <= high"):
        BalancedFilter(low=0.7, high=0.3)
