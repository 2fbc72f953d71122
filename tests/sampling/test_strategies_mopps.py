"""MoPPS: Beta posterior update with decay, Thompson selection closest to γ*."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lppo_sampling import GroupResults, make_strategy
from lppo_sampling.strategies.posterior import MoPPSSelector
from lppo_sampling.strategies.rules_peer import (
    beta_posterior_update,
    closest_to_target,
    within_band_first,
)

SET = settings(max_examples=80, deadline=None)


def test_posterior_update_hand_values():
    a, b = beta_posterior_update(np.array([3.0]), np.array([5.0]), np.array([8]), np.array([0.25]))
    assert a.tolist() == [5.0] and b.tolist() == [11.0]
    # λ = 0.5 pulls halfway back to the prior before adding the evidence
    a, b = beta_posterior_update(
        np.array([3.0]), np.array([5.0]), np.array([4]), np.array([0.5]), 0.5, 1.0, 1.0
    )
    assert a.tolist() == [0.5 * 3 + 0.5 + 2] and b.tolist() == [0.5 * 5 + 0.5 + 2]


@SET
@given(
    a=st.floats(0.1, 50),
    b=st.floats(0.1, 50),
    k=st.integers(1, 16),
    s=st.floats(0, 1),
    lam=st.floats(0, 1),
)
def test_posterior_stays_positive_adds_k_and_mean_moves_toward_s(a, b, k, s, lam):
    """Bug caught: α and β updates swapped (the mean moves away from the observed rate s), k
    pseudo-counts not added, or discounting that drives a parameter to ≤ 0."""
    na, nb = beta_posterior_update(np.array([a]), np.array([b]), np.array([k]), np.array([s]), lam)
    assert na[0] > 0 and nb[0] > 0
    assert np.isclose(na[0] + nb[0], lam * (a + b) + (1 - lam) * 2 + k)
    if lam == 1.0:
        old, new = a / (a + b), na[0] / (na[0] + nb[0])
        assert min(old, s) - 1e-9 <= new <= max(old, s) + 1e-9


def test_closest_to_target_hand_values():
    g = np.array([0.9, 0.45, 0.1, 0.55, 0.5])
    assert closest_to_target(g, 0.5, 3).tolist() == [4, 1, 3]  # tie 0.45/0.55 by position
    assert within_band_first(np.array([0.9, 0.4, 0.05, 0.65]), 0.3, 0.7, 3).tolist() == [1, 3, 0]


draws = hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1))


@SET
@given(g=draws, n=st.integers(1, 40), t=st.floats(0, 1))
def test_closest_to_target_keeps_the_n_nearest(g, n, t):
    """Bug caught: keeping the n farthest draws (partition on −distance) or returning
    repeated indices."""
    idx = closest_to_target(g, t, n)
    assert idx.shape == (min(n, g.size),) and len(set(idx.tolist())) == idx.size
    d = np.abs(g - t)
    rest = np.setdiff1d(np.arange(g.size), idx)
    if rest.size:
        assert d[idx].max() <= d[rest].min()


def test_observe_updates_posterior_from_unguided_rollouts():
    s = make_strategy("mopps")
    s.add_samples([0, 1])
    s.observe(GroupResults.build([0, 1], np.array([[1, 1, 0, 0], [0, 0, 0, 0]], float)))
    assert s.stats["mopps_alpha"].tolist() == [3.0, 1.0]
    assert s.stats["mopps_beta"].tolist() == [3.0, 5.0]
    # guided rollouts do not count
    s.observe(GroupResults.build([0], np.array([[1.0, 1.0]]), guided=np.array([[False, True]])))
    assert s.stats["mopps_alpha"].tolist() == [4.0, 1.0] and s.stats["mopps_beta"].tolist() == [
        3.0,
        5.0,
    ]


def test_selection_prefers_samples_near_target():
    s = make_strategy("mopps", candidate_ratio=4.0, seed=1)
    s.add_samples(np.arange(400))
    # samples 0..199 known to be ~0.5, 200..399 known to be ~0 or ~1
    a = np.concatenate([np.full(200, 50.0), np.full(100, 1.0), np.full(100, 100.0)])
    b = np.concatenate([np.full(200, 50.0), np.full(100, 100.0), np.full(100, 1.0)])
    s.stats["mopps_alpha"][:] = a
    s.stats["mopps_beta"][:] = b
    chosen = np.concatenate([s.select(20) for _ in range(20)])
    assert (chosen < 200).mean() > 0.95


def test_bad_arguments_are_named():
    for kw, name in [
        ({"target": 2}, "target"),
        ({"candidate_ratio": 0.5}, "candidate_ratio"),
        ({"decay": -0.1}, "decay"),
        ({"prior_alpha": 0}, "prior_alpha"),
        ({"mode": "best"}, "mode"),
        ({"band_low": 0.8, "band_high": 0.2}, "band_low"),
    ]:
        with pytest.raises(ValueError, match=name):
            MoPPSSelector(**kw)
