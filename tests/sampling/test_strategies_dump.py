"""DUMP: UCB score, sliding window of |advantage|, softmax over data distributions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lppo_sampling import GroupResults, make_strategy
from lppo_sampling.strategies.arms import DUMPSelector
from lppo_sampling.strategies.rules_peer import grpo_advantages, softmax, ucb_scores

SET = settings(max_examples=60, deadline=None)


def test_ucb_hand_values():
    u = ucb_scores(np.array([0.5, 0.2]), np.array([3, 0]), c=1.0)
    # N = 3: bonus_j = sqrt(2 ln 4 / (n_j + 1))
    assert np.allclose(u, [0.5 + np.sqrt(2 * np.log(4) / 4), 0.2 + np.sqrt(2 * np.log(4) / 1)])
    assert np.allclose(ucb_scores(np.zeros(3), np.zeros(3)), 0.0)  # untried pool: uniform


counts = hnp.arrays(np.int64, st.integers(2, 6), elements=st.integers(0, 1000))


@SET
@given(n=counts, i=st.integers(0, 5), c=st.floats(0.1, 3))
def test_ucb_bonus_shrinks_with_own_count(n, i, c):
    """Bug caught: an exploration bonus that grows with the arm's own count (n_j in the
    numerator), so a neglected arm never comes back."""
    i %= n.size
    L = np.zeros(n.size)
    base = ucb_scores(L, n, c)
    more = n.copy()
    more[i] += 10
    # trying arm i more lowers its bonus relative to every other arm
    after = ucb_scores(L, more, c)
    others = np.arange(n.size) != i
    assert (after[i] - after[others] <= base[i] - base[others] + 1e-12).all()


@SET
@given(z=hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(-50, 50)))
def test_softmax_is_a_shift_invariant_distribution(z):
    """Bug caught: unnormalised or negative probabilities, or a softmax that is not shift-
    invariant (e.g. exponentials divided by the sum of logits)."""
    p = softmax(z)
    assert np.isclose(p.sum(), 1.0) and (p >= 0).all()
    assert np.allclose(softmax(z + 7.0), p)


def test_window_keeps_the_last_w_rollouts_and_counts_all():
    s = make_strategy("dump", window=5)
    s.add_samples([0, 1], category=["x", "y"])
    r1 = np.array([[1.0, 0.0, 0.0]])  # arm x: three |A|
    s.observe(GroupResults.build([0], r1))
    a1 = np.abs(grpo_advantages(r1, np.ones((1, 3), bool)))[0]
    sel = s.selector
    assert sel.counts.tolist() == [0, 3, 0] and sel.filled.tolist() == [0, 3, 0]
    r2 = np.array([[1.0, 1.0, 0.0, 0.0]])
    s.observe(GroupResults.build([0], r2))
    a2 = np.abs(grpo_advantages(r2, np.ones((1, 4), bool)))[0]
    last5 = np.concatenate([a1, a2])[-5:]
    assert sel.counts[1] == 7 and sel.filled[1] == 5
    assert np.isclose(sel.learnability()[1], last5.mean())
    probs = sel.arm_probs(s.stats)
    u = ucb_scores(sel.learnability(), sel.counts, 1.0)
    assert probs[0] == 0  # no uncategorised sample
    assert np.allclose(probs, softmax(u / 0.1, np.array([False, True, True])))


def test_neglected_arm_wins_back_probability():
    s = make_strategy("dump", c=1.0, temperature=0.1)
    s.add_samples(np.arange(20), category=["x"] * 10 + ["y"] * 10)
    for _ in range(30):  # only arm x is ever observed, with zero-advantage groups
        s.observe(GroupResults.build(np.arange(10), np.ones((10, 4))))
    p = s.selector.arm_probs(s.stats)
    assert p[2] > 0.99  # arm y: no data, large UCB bonus


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="window"):
        DUMPSelector(window=0)
    with pytest.raises(ValueError, match="temperature"):
        DUMPSelector(temperature=0)
    with pytest.raises(ValueError, match="c must"):
        DUMPSelector(c=-1)


def test_state_with_wrong_window_is_rejected():
    a = make_strategy("dump", window=5)
    b = make_strategy("dump", window=6)
    with pytest.raises(ValueError):
        b.load_state_dict(a.state_dict())
