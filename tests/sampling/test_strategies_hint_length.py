"""Adaptive hint length (hint_length, hint_lppo): per-sample prefix ratio search and anneal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lppo_sampling import GroupResults, make_strategy
from lppo_sampling.roles import LPWeighter
from lppo_sampling.strategies.hint import AdaptiveHintGuide
from lppo_sampling.strategies.rules_peer import next_hint_ratio

SET = settings(max_examples=100, deadline=None)
nan = float("nan")


def test_rule_hand_values():
    r = np.array([0.15, 0.3, 0.3, 0.3, 0.5, 0.55, 0.3])
    g = np.array([0.0, 0.0, 0.75, 0.25, 0.0, 1.0, nan])
    u = np.array([0.0, 0.5, 0.0, 0.0, nan, 0.5, nan])
    out = next_hint_ratio(r, g, u)
    # fail → +0.1; fail but unguided success → +0.1−0.05; easy → −0.05; in between → same;
    # fail at 0.5 → clipped to 0.55; easy + unguided → −0.1; nothing observed → same
    assert np.allclose(out, [0.25, 0.35, 0.25, 0.3, 0.55, 0.45, 0.3])


rate = st.one_of(st.just(nan), st.floats(0, 1))


@SET
@given(r=st.floats(0.15, 0.55), g=rate, u=rate, dg=st.floats(0, 1), du=st.floats(0, 1))
def test_rule_bounded_and_non_increasing_in_pass_rates(r, g, u, dg, du):
    """Bug caught: a ratio outside [low, high] (clip missing), or a rule that lengthens the
    hint as a pass rate rises (sign of step_down flipped)."""
    x = next_hint_ratio(np.array([r]), np.array([g]), np.array([u]))[0]
    assert 0.15 <= x <= 0.55
    if not np.isnan(g):
        assert (
            next_hint_ratio(np.array([r]), np.array([min(g + dg, 1)]), np.array([u]))[0]
            <= x + 1e-12
        )
    if not np.isnan(u):
        assert (
            next_hint_ratio(np.array([r]), np.array([g]), np.array([min(u + du, 1)]))[0]
            <= x + 1e-12
        )


def _stuck_strategy(name="hint_length", **kw):
    s = make_strategy(name, group_size=4, **kw)
    s.add_samples([0, 1], has_solution=[True, False])
    s.observe(GroupResults.build([0, 1], np.zeros((2, 4))))  # both fail: stuck (0 has a solution)
    return s


def test_plan_guides_stuck_samples_with_their_own_ratio():
    s = _stuck_strategy()
    plan = s.plan([0, 1])
    assert plan.prefix_ratios.tolist() == [[0, 0, 0.15, 0.15], [0, 0, 0, 0]]
    # guided rollouts fail again: the hint grows by step_up
    s.observe(GroupResults.from_plan(plan, np.zeros((2, 4))))
    assert np.isclose(s.stats["hint_ratio"][0], 0.25)
    plan = s.plan([0, 1])
    assert np.allclose(plan.prefix_ratios[0], [0, 0, 0.25, 0.25])
    # guided rollouts pass: shrink; an unguided pass: shrink again and the sample is unstuck
    s.observe(GroupResults.from_plan(plan, np.array([[1, 0, 1, 1], [0, 0, 0, 0]], float)))
    assert np.isclose(s.stats["hint_ratio"][0], 0.15)
    assert s.plan([0]).prefix_ratios.sum() == 0


def test_hint_lppo_weights_are_lp_weights():
    s = _stuck_strategy("hint_lppo")
    assert isinstance(s.weighter, LPWeighter)
    s.observe(GroupResults.build([0], np.ones((1, 4))))
    w = s.weights([0])
    assert np.isclose(w[0], 1 / (1 + np.exp(-8 * s.stats["delta"][0])) + 0.5)


@SET
@given(
    seq=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=12),
    seed=st.integers(0, 100),
)
def test_ratio_stays_in_band_over_any_history(seq, seed):
    """Bug caught: the stored per-sample ratio or the planned ratios escaping the band over
    many updates (a clip applied to one but not the other)."""
    s = _stuck_strategy(low=0.2, high=0.4)
    rng = np.random.default_rng(seed)
    for pg, pu in seq:
        plan = s.plan([0, 1])
        r = (rng.random((2, 4)) < np.where(plan.guided, pg, pu)).astype(float)
        s.observe(GroupResults.from_plan(plan, r))
        x = s.stats["hint_ratio"][:2]
        assert ((x >= 0.2) & (x <= 0.4)).all()
        g = plan.prefix_ratios[plan.guided]
        assert ((g >= 0.2) & (g <= 0.4)).all()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="low"):
        AdaptiveHintGuide(low=0.0)
    with pytest.raises(ValueError, match="initial_ratio"):
        AdaptiveHintGuide(initial_ratio=0.9)
    with pytest.raises(ValueError, match="step_up"):
        AdaptiveHintGuide(step_up=-1)
    with pytest.raises(ValueError, match="low must be <= high"):
        AdaptiveHintGuide(low=0.5, high=0.2)
