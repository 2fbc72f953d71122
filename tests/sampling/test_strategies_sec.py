"""SEC: GRPO advantages, TD(0) arm values, Boltzmann over categories."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lppo_sampling import GroupResults, make_strategy
from lppo_sampling.strategies.arms import SECSelector
from lppo_sampling.strategies.rules_peer import boltzmann_probs, grpo_advantages, td0_update

SET = settings(max_examples=60, deadline=None)


def test_grpo_advantages_hand_values():
    r = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 9.0, 9.0]])
    m = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    a = grpo_advantages(r, m)
    # mean 0.25, unbiased std sqrt(0.75 / 3) = 0.5
    assert np.allclose(a[0], np.array([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6))
    assert np.allclose(a[1], 0.0)
    assert a[2].tolist() == [
        pytest.approx(1.0 / (1 + 1e-6)),
        0.0,
        0.0,
        0.0,
    ]  # singleton: raw reward


rewards = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 5), st.integers(2, 8)),
    elements=st.sampled_from([0.0, 1.0]),
)


@SET
@given(r=rewards)
def test_grpo_advantages_zero_mean_and_abs_mean_matches_pass_rate(r):
    """Bug caught: advantages not centred on the group mean, or scaled by the population std
    instead of the unbiased one (mean |A| then misses the closed form)."""
    m = np.ones_like(r, bool)
    a = grpo_advantages(r, m)
    assert np.allclose(a.sum(axis=1), 0.0, atol=1e-9)
    g = r.shape[1]
    p = r.mean(axis=1)
    # binary rewards: mean |A| = 2 p (1-p) / std with unbiased std sqrt(p(1-p) g/(g-1))
    std = np.sqrt(p * (1 - p) * g / (g - 1))
    expect = np.where(std > 0, 2 * p * (1 - p) / (std + 1e-6), 0.0)
    assert np.allclose(np.abs(a).mean(axis=1), expect, atol=1e-6)


def test_td0_hand_values():
    q = np.array([0.0, 1.0, 0.4])
    new = td0_update(q, np.array([1.0, 0.0, 123.0]), 0.5, np.array([True, True, False]))
    assert new.tolist() == [0.5, 0.5, 0.4]


@SET
@given(
    q=st.floats(-5, 5),
    r=st.floats(0, 3),
    alpha=st.floats(0, 1),
)
def test_td0_is_convex_combination(q, r, alpha):
    """Bug caught: an update that overshoots (e.g. Q + α·r without the (1 − α)·Q decay) and
    leaves the interval between the old value and the reward."""
    new = td0_update(np.array([q]), np.array([r]), alpha, np.array([True]))[0]
    assert min(q, r) - 1e-12 <= new <= max(q, r) + 1e-12


def test_boltzmann_hand_values():
    p = boltzmann_probs(np.array([0.0, np.log(3.0)]), 1.0)
    assert np.allclose(p, [0.25, 0.75])
    p = boltzmann_probs(np.array([0.0, 1.0, 5.0]), 2.0, np.array([True, True, False]))
    assert p[2] == 0 and np.isclose(p[1] / p[0], np.exp(0.5))


@SET
@given(
    q=hnp.arrays(np.float64, st.integers(2, 6), elements=st.floats(-3, 3)),
    tau=st.floats(0.05, 5),
    i=st.integers(0, 5),
)
def test_boltzmann_is_a_distribution_monotone_in_value(q, tau, i):
    """Bug caught: a sign flip (exp(−Q/τ)) that draws high-value arms less, or probabilities
    that do not sum to 1."""
    p = boltzmann_probs(q, tau)
    assert np.isclose(p.sum(), 1.0) and (p >= 0).all()
    i %= q.size
    bumped = q.copy()
    bumped[i] += 0.5
    assert boltzmann_probs(bumped, tau)[i] >= p[i] - 1e-12


def test_arm_reward_is_mean_abs_advantage_of_its_rollouts():
    s = make_strategy("sec", alpha=0.5)
    s.add_samples([0, 1, 2, 3], category=["a", "a", "b", "b"])
    r = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], float)
    s.observe(GroupResults.build([0, 1, 2, 3], r))
    a = np.abs(grpo_advantages(r, np.ones_like(r, bool)))
    q = s.selector.q
    assert q[0] == 0.0  # no uncategorised sample
    assert np.isclose(q[1], 0.5 * a[:2].mean())
    assert np.isclose(q[2], 0.5 * a[2:].mean())
    # a second step for arm "a" only: Q_a ← 0.5 r + 0.5 Q_a
    s.observe(GroupResults.build([0], np.array([[1.0, 1.0, 0.0, 0.0]])))
    r2 = np.abs(grpo_advantages(np.array([[1.0, 1, 0, 0]]), np.ones((1, 4), bool))).mean()
    assert np.isclose(s.selector.q[1], 0.5 * r2 + 0.25 * a[:2].mean())
    assert np.isclose(s.selector.q[2], 0.5 * a[2:].mean())


def test_selection_follows_the_boltzmann_distribution():
    s = make_strategy("sec", tau=0.5, seed=0)
    s.add_samples(np.arange(3000), category=np.arange(3000) % 3)
    s.selector.q = np.array([0.0, 0.0, 0.5, 1.0])
    probs = boltzmann_probs(np.array([0.0, 0.5, 1.0]), 0.5)
    counts = np.zeros(3)
    for _ in range(40):
        keys = s.select(60)
        counts += np.bincount(keys % 3, minlength=3)
    assert np.allclose(counts / counts.sum(), probs, atol=0.03)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="alpha"):
        SECSelector(alpha=1.5)
    with pytest.raises(ValueError, match="tau"):
        SECSelector(tau=0.0)
