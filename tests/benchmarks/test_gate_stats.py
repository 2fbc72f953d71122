"""Statistics of the viability gate and the power analysis, checked against scipy/closed forms."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gate = _load("viability_gate")
power = _load("power")


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), frac=st.floats(0, 1))
def test_intervals_contain_the_estimate_and_nest(n, frac):
    k = round(frac * n)
    lo, hi = gate.wilson(k, n)
    clo, chi = gate.clopper_pearson(k, n)
    assert 0 <= lo <= k / n <= hi <= 1
    assert 0 <= clo <= k / n <= chi <= 1


def test_intervals_match_scipy():
    from scipy.stats import binomtest

    for k, n in [(0, 8), (3, 8), (8, 8), (17, 800)]:
        exact = binomtest(k, n).proportion_ci(method="exact")
        wilson = binomtest(k, n).proportion_ci(method="wilson")
        assert gate.clopper_pearson(k, n) == pytest.approx((exact.low, exact.high), abs=1e-9)
        assert gate.wilson(k, n) == pytest.approx((wilson.low, wilson.high), abs=1e-6)


def test_sign_test_and_fisher():
    assert gate.sign_test_p([0, 0, 0]) == (0, 0, 1.0)
    pos, neg, p = gate.sign_test_p([1] * 10 + [-1] * 0 + [0] * 5)
    assert (pos, neg) == (10, 0) and p == pytest.approx(2 / 2**10)
    # the "guided pass less often": 4/117 vs 10/129 is not significant
    assert gate.fisher_p(4, 117, 10, 129) == pytest.approx(0.17, abs=0.01)


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_is_monotone_bounded_and_identical_in_both_modules(ps):
    adj = gate.holm(ps)
    assert adj == power.holm(ps)
    assert all(p <= a <= 1 for p, a in zip(ps, adj, strict=True))
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    assert all(adj[order[i]] <= adj[order[i + 1]] for i in range(len(ps) - 1))
    assert min(adj) == pytest.approx(min(1.0, len(ps) * min(ps)))


def test_mcnemar_exact_matches_binomial():
    from scipy.stats import binomtest

    for b, c in [(0, 0), (5, 0), (7, 3), (20, 31)]:
        want = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
        assert power.mcnemar_exact(b, c) == pytest.approx(want)


@given(sigma=st.floats(0.001, 0.1), q=st.floats(0, 0.2), s=st.integers(1, 30),
       n=st.integers(50, 3000))
def test_mde_shrinks_with_seeds_and_problems(sigma, q, s, n):
    m = power.mde(sigma, s, n, q)
    assert power.mde(sigma, s + 1, n, q) <= m
    assert power.mde(sigma, s, n + 100, q) <= m
    assert m == pytest.approx(2.8016 * math.sqrt(2 * sigma**2 / s + q / n), rel=1e-3)


def test_plan_reaches_the_target_and_is_cheapest_in_seeds():
    plan = power.plan_size(0.019, 0.02)
    assert plan["mde"] <= 0.03
    assert power.plan_size(0.019, 0.02, max_seeds=plan["seeds"] - 1) is None


def test_paired_table_bootstrap_and_q():
    a = {"p1": 1, "p2": 1, "p3": 0, "p4": 0}
    b = {"p1": 1, "p2": 0, "p3": 1, "p4": 0, "p5": 1}
    assert power.paired_table(a, b) == (4, 1, 1)
    mean, lo, hi = power.paired_bootstrap({k: 1.0 for k in "abcd"}, {k: 0.0 for k in "abcd"})
    assert (mean, lo, hi) == (1.0, 1.0, 1.0)
    # identical arms have no systematic difference; opposite arms the largest
    same = [{"x": 1, "y": 0}, {"x": 1, "y": 0}]
    assert power.estimate_q(same, same) == 0.0
    assert power.estimate_q([{"x": 1, "y": 0}] * 2, [{"x": 0, "y": 1}] * 2) == pytest.approx(2.0)
