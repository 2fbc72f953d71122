"""Properties of the pure rules in lppo_sampling.rules."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lppo_sampling import rules

unit = st.floats(0.0, 1.0, allow_nan=False)
deltas = st.floats(-1.0, 1.0, allow_nan=False)
betas = st.floats(0.0, 0.999, allow_nan=False)


@given(delta=deltas, kappa=st.floats(0, 100), bias=st.floats(0, 5))
def test_lp_weight_bounded(delta: float, kappa: float, bias: float) -> None:
    """Bug caught: a weight outside [b, 1 + b] (e.g. the bias dropped, or a linear κΔ + b),
    which could silence a sample or blow up its advantages."""
    w = rules.lp_weight(np.array([delta]), kappa, bias)[0]
    assert bias <= w <= 1.0 + bias


@given(d1=deltas, d2=deltas, kappa=st.floats(0, 100), bias=st.floats(0, 5))
def test_lp_weight_monotone_in_progress(d1: float, d2: float, kappa: float, bias: float) -> None:
    """Bug caught: a sign flip (σ(−κΔ)) that up-weights regressing samples."""
    lo, hi = sorted((d1, d2))
    w = rules.lp_weight(np.array([lo, hi]), kappa, bias)
    assert w[0] <= w[1]


def test_lp_weight_hand_values() -> None:
    # σ(0) + 0.5 = 1 (neutral); σ(8·0.25) + 0.5 = 1/(1+e^-2) + 0.5
    w = rules.lp_weight(np.array([0.0, 0.25, -0.25]), 8.0, 0.5)
    expected = [1.0, 1 / (1 + np.exp(-2.0)) + 0.5, 1 / (1 + np.exp(2.0)) + 0.5]
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-15)


def test_sigmoid_extreme_inputs_do_not_overflow() -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        s = rules.sigmoid(np.array([-1e6, -800.0, 0.0, 800.0, 1e6]))
    np.testing.assert_array_equal(s[[0, 2, 4]], [0.0, 0.5, 1.0])


@given(old=unit, new=unit, beta=betas, seen=st.booleans())
def test_ema_stays_in_unit_interval(old: float, new: float, beta: float, seen: bool) -> None:
    """Bugs caught: an EMA that leaves [0, 1] (e.g. β·old + p without the 1 − β), and a
    first sight that does not take the observed rate."""
    e = rules.ema_update(np.array([old]), np.array([new]), beta, np.array([seen]))[0]
    assert 0.0 <= e <= 1.0
    if not seen:
        assert e == new  # first sight takes the observed rate


@given(start=unit, target=unit, beta=betas, k=st.integers(1, 60))
def test_ema_converges_to_constant_rate(start: float, target: float, beta: float, k: int) -> None:
    """Bug caught: β and 1 − β swapped (the error then shrinks by 1 − β per step, above the
    β^k bound when β < 0.5), or an update that does not move toward the observed rate."""
    e = np.array([start])
    for _ in range(k):
        e = rules.ema_update(e, np.array([target]), beta, np.array([True]))
    # geometric contraction: |e_k − p| = β^k |e_0 − p| (plus rounding)
    assert abs(e[0] - target) <= beta**k * abs(start - target) + 1e-12


@given(old=unit, new=unit, seen=st.booleans())
def test_progress_zero_on_first_sight(old: float, new: float, seen: bool) -> None:
    """Bug caught: Δ = new − old on first sight (old is the fill 0): a fake jump of p that
    up-weights every newly seen sample."""
    d = rules.learning_progress(np.array([old]), np.array([new]), np.array([seen]))[0]
    assert d == (new - old if seen else 0.0)


@given(
    ema=hnp.arrays(np.float64, 20, elements=unit),
    last=hnp.arrays(np.float64, 20, elements=st.one_of(unit, st.just(np.nan))),
    seen=hnp.arrays(bool, 20),
    sol=hnp.arrays(bool, 20),
    thr=st.floats(0, 0.5),
)
def test_stuck_requires_history_and_solution(ema, last, seen, sol, thr) -> None:
    """Bug caught: guiding unseen samples or samples without a solution, or dropping either
    stuck criterion (last group all failed / EMA ≤ threshold)."""
    stuck = rules.is_stuck(ema, last, seen, sol, thr)
    assert not (stuck & ~seen).any()
    assert not (stuck & ~sol).any()
    expected = seen & sol & ((np.nan_to_num(last, nan=1.0) <= 0) | (ema <= thr))
    np.testing.assert_array_equal(stuck, expected)


@settings(max_examples=50)
@given(
    rows=hnp.arrays(bool, st.integers(0, 30)),
    g=st.integers(1, 16),
    frac=st.floats(0.01, 1.0),
    band=st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.99)).map(sorted),
    seed=st.integers(0, 2**32 - 1),
)
def test_prefix_ratios_in_band_and_layout(rows, g, frac, band, seed) -> None:
    """Bug caught: ratios outside [low, high] (e.g. U[0, 1]), guidance on rows that are not
    stuck, or guided slots not at the end of the group (slot 0 must stay unguided)."""
    lo, hi = band
    k = rules.guided_slot_count(g, frac)
    assert 1 <= k <= g
    r = rules.prefix_ratio_matrix(rows, g, k, lo, hi, np.random.default_rng(seed))
    assert r.shape == (rows.shape[0], g)
    assert (r[~rows] == 0).all()
    guided = r[rows]
    assert (guided[:, : g - k] == 0).all()  # first G-k slots stay unguided
    assert ((guided[:, g - k :] >= lo) & (guided[:, g - k :] <= hi)).all()


def test_guided_slot_count_zero_fraction() -> None:
    assert rules.guided_slot_count(8, 0.0) == 0
    assert rules.guided_slot_count(8, 0.5) == 4
    assert rules.guided_slot_count(2, 0.1) == 1


@given(
    stuck=hnp.arrays(bool, 12),
    guided_only=hnp.arrays(bool, 12),
    g=st.integers(1, 16),
    frac=st.floats(0.01, 1.0),
)
def test_allow_guidance_never_fully_guides_twice_in_a_row(stuck, guided_only, g, frac) -> None:
    """Rule: with every slot guided, a row whose last event was guided-only is not guided now;
    with fewer guided slots every stuck row is guided. Bugs caught: guiding a stuck row's
    whole group on every visit (its unguided EMA frozen), or withholding partial guidance."""
    k = rules.guided_slot_count(g, frac)
    allowed = rules.allow_guidance(stuck, guided_only, k, g)
    assert not (allowed & ~stuck).any()
    if k < g:
        np.testing.assert_array_equal(allowed, stuck)
    else:
        np.testing.assert_array_equal(allowed, stuck & ~guided_only)
