"""SAI-DPO sampler side: NoP, lexicographic difficulty, band, cluster error weights, probes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lppo_sampling import GroupResults, make_strategy
from lppo_sampling.strategies.rules_peer import (
    cluster_error_weights,
    saidpo_hardness_order,
    saidpo_in_band,
    saidpo_nop,
)
from lppo_sampling.strategies.saidpo import SAIDPOSelector, probe_keys

SET = settings(max_examples=60, deadline=None)


def test_rule_hand_values():
    assert saidpo_nop(np.array([3, 0, 4]), np.array([8, 0, 4])).tolist()[0::2] == [3.0, 8.0]
    assert np.isnan(saidpo_nop(np.array([0]), np.array([0]))[0])
    assert saidpo_in_band(np.array([0, 1, 7, 8, np.nan])).tolist() == [
        False,
        True,
        True,
        False,
        False,
    ]
    nop = np.array([2, 1, 2, 2, 2])
    steps = np.array([5, 1, 9, 9, np.nan])
    length = np.array([100, 10, 50, 80, 999])
    # NoP 1 first; then among NoP 2: more steps first (9, 9 → longer first), then 5, then unmeasured
    assert saidpo_hardness_order(nop, steps, length).tolist() == [1, 3, 2, 0, 4]
    q = cluster_error_weights(
        np.array([0.2, 0.6, np.nan, 0.9]), np.array([True, True, True, False])
    )
    assert np.allclose(q, [0.25, 0.75, 0, 0])
    assert np.allclose(cluster_error_weights(np.zeros(2), np.array([True, True])), [0.5, 0.5])


meas = st.tuples(st.integers(0, 8), st.floats(0, 20), st.floats(0, 1000))


@SET
@given(items=st.lists(meas, min_size=1, max_size=15))
def test_hardness_order_is_lexicographic(items):
    """Bug caught: a wrong priority (steps before NoP) or direction (more passes counted as
    harder)."""
    nop, steps, length = (np.array(x, dtype=float) for x in zip(*items, strict=True))
    order = saidpo_hardness_order(nop, steps, length)
    assert sorted(order.tolist()) == list(range(len(items)))
    keys = [(nop[i], -steps[i], -length[i]) for i in order]
    assert keys == sorted(keys)


@SET
@given(
    err=hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(0, 1)),
    i=st.integers(0, 5),
    bump=st.floats(0, 1),
)
def test_cluster_weights_distribution_and_monotone_in_error(err, i, bump):
    """Bug caught: weights that are not a distribution, or that fall as a cluster's error
    rises (q ∝ 1 − err)."""
    avail = np.ones(err.size, bool)
    q = cluster_error_weights(err, avail)
    assert np.isclose(q.sum(), 1) and (q >= 0).all()
    i %= err.size
    e2 = err.copy()
    e2[i] = min(1.0, e2[i] + bump)
    assert cluster_error_weights(e2, avail)[i] >= q[i] - 1e-12


def _probed(seed=0, n=300):
    """Clusters a (easy), b (hard); per-sample correct counts out of 8 chosen by hand."""
    s = make_strategy("saidpo", seed=seed, candidate_factor=1000)
    keys = np.arange(n)
    cat = np.where(keys < n // 2, "a", "b")
    s.add_samples(keys, category=cat)
    correct = np.where(keys < n // 2, 6, 2)
    correct[::10] = 0  # out of band (never solved)
    correct[5::10] = 8  # out of band (always solved)
    r = (np.arange(8)[None, :] < correct[:, None]).astype(float)
    steps = np.tile((keys % 7)[:, None], (1, 8)).astype(float)
    s.observe(GroupResults.build(keys, r, steps=steps, lengths=np.full((n, 8), 100.0)))
    return s, correct, cat


def test_band_cluster_error_and_probe_state():
    s, correct, cat = _probed()
    sel = s.selector
    assert np.array_equal(s.stats["saidpo_in_band"], (correct > 0) & (correct < 8))
    err = sel.cluster_error(s.stats)
    for arm, lab in ((1, "a"), (2, "b")):
        m = cat == lab
        assert np.isclose(err[arm], 1 - correct[m].sum() / (8 * m.sum()))
    # the filter keeps exactly the groups that give a DPO pair
    assert np.array_equal(s.keep(np.arange(300)), (correct > 0) & (correct < 8))


def test_selection_in_band_weighted_by_cluster_error_harder_first():
    s, correct, cat = _probed()
    err = s.selector.cluster_error(s.stats)
    q_b = err[2] / (err[1] + err[2])
    chosen = np.concatenate([s.select(20) for _ in range(30)])
    assert ((correct[chosen] > 0) & (correct[chosen] < 8)).all()  # only the band
    assert abs((cat[chosen] == "b").mean() - q_b) < 0.08
    # with a huge tournament, each cluster's picks are its hardest (most steps: keys % 7 == 6)
    one = s.select(4)
    assert ((one % 7) == 6).all()


def test_cold_start_is_uniform_and_fill_when_band_is_small():
    s = make_strategy("saidpo", seed=0)
    s.add_samples(np.arange(50))
    k = s.select(10)
    assert len(set(k.tolist())) == 10
    s.observe(GroupResults.build([3], np.array([[1, 0, 0, 0, 0, 0, 0, 0.0]])))
    k = s.select(10)
    assert 3 in k.tolist() and len(set(k.tolist())) == 10


def test_probe_keys_default_size_and_determinism():
    a, b = make_strategy("saidpo", seed=5), make_strategy("saidpo", seed=5)
    for s in (a, b):
        s.add_samples(np.arange(1000))
    pa, pb = probe_keys(a), probe_keys(b)
    assert pa.shape == (10,) and len(set(pa.tolist())) == 10 and np.array_equal(pa, pb)
    assert probe_keys(a, 25).shape == (25,)
    with pytest.raises(ValueError, match="SAIDPOSelector"):
        probe_keys(make_strategy("uniform"))
    with pytest.raises(ValueError, match="n must"):
        probe_keys(a, 0)


def test_relabelled_clusters_are_picked_up():
    s, correct, cat = _probed()
    s.add_samples(np.arange(300), category=np.where(np.arange(300) % 2 == 0, "a", "b"))
    s.selector.invalidate()
    err = s.selector.cluster_error(s.stats)
    m = np.arange(300) % 2 == 1
    assert np.isclose(err[2], 1 - correct[m].sum() / (8 * m.sum()))


def test_bad_arguments_are_named():
    for kw, name in [
        ({"k": 1}, "k must"),
        ({"probe_fraction": 0}, "probe_fraction"),
        ({"candidate_factor": 0.5}, "candidate_factor"),
        ({"error_floor": -1}, "error_floor"),
    ]:
        with pytest.raises(ValueError, match=name):
            SAIDPOSelector(**kw)
