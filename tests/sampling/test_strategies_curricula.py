"""Rules of the curricula PCL, ADCL, GAIN-RL, length budget, h1, Cog-DRIFT and CLPO.

Each rule is a property over hypothesis-drawn inputs; each strategy's state round-trips
exactly (same checksum, same future choices); a missing or misbehaving model-side
callable is a one-line ValueError naming the strategy and the argument.
"""

from __future__ import annotations

import numpy as np
import pytest
from curricula_signals import build, restructure_fn, score_fn, signals_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lppo_sampling import GroupResults, RolloutPlan, make_strategy
from lppo_sampling.strategies.formats import FORMATS, next_format
from lppo_sampling.strategies.gain import gain_mu_step, gaussian_rank_draw
from lppo_sampling.strategies.horizon import next_depth_level
from lppo_sampling.strategies.length import token_budget
from lppo_sampling.strategies.predictive import closest_to_threshold, resort_window
from lppo_sampling.strategies.restructure import restructure_modes
from lppo_sampling.strategies.signals import TablePredictor

CURRICULA = ["pcl", "adcl", "gain_rl", "length_curriculum", "h1", "cog_drift", "clpo"]
SET = settings(max_examples=30, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
unit = st.floats(0.0, 1.0, allow_nan=False)


def drive(s, steps: int, batch: int, seed: int, pool: int = 40) -> list[np.ndarray]:
    """select → plan → observe rounds over a pool with chain-depth categories."""
    rng = np.random.default_rng(seed)
    if len(s) == 0:
        s.add_samples(np.arange(pool), category=[f"depth:{1 + i % 3}" for i in range(pool)])
    p = rng.random(pool)
    out = []
    for _ in range(steps):
        keys = s.select(batch)
        plan = s.plan(keys)
        r = (rng.random(plan.prefix_ratios.shape) < p[keys][:, None]).astype(float)
        s.observe(GroupResults.from_plan(plan, r, lengths=np.ones_like(r)))
        s.keep(keys)
        s.weights(keys)
        out.append(np.asarray(keys))
    return out


# ------------------------------------------------------------------ state
@pytest.mark.parametrize("name", CURRICULA)
@SET
@given(steps=st.integers(0, 5), batch=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_state_round_trips_exactly(name, steps, batch, seed, tmp_path):
    """Bug caught: role state (predictor table, order/cursor, μ, depth level, format
    columns) missing from state_dict, so a resumed run chooses differently."""
    a = build(name, seed=seed, group_size=3)
    drive(a, steps, batch, seed)
    b = build(name, seed=seed + 1, group_size=3)
    b.load_state_dict(a.state_dict())
    assert b.state_checksum() == a.state_checksum()
    c = build(name, seed=seed + 2, group_size=3)
    c.load(a.save(tmp_path / f"{name}.npz"))
    assert c.state_checksum() == a.state_checksum()
    ka, kb, kc = (drive(x, 2, batch, seed + 7) for x in (a, b, c))
    for x, y, z in zip(ka, kb, kc, strict=True):
        assert np.array_equal(x, y) and np.array_equal(x, z)


@pytest.mark.parametrize("name", CURRICULA)
@SET
@given(batch=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_select_returns_n_pool_keys_without_repeats(name, batch, seed):
    """Bug caught: a curriculum selector that repeats a sample while the pool has others."""
    s = build(name, seed=seed, group_size=2)
    for keys in drive(s, 3, batch, seed, pool=40):
        assert keys.shape == (batch,) and set(keys.tolist()) <= set(range(40))
        if name != "h1":  # h1 draws within one depth (~13 samples): repeats allowed there
            assert len(set(keys.tolist())) == batch


# ------------------------------------------------------------------- PCL
@SET
@given(pred=st.lists(unit, min_size=1, max_size=60), tau=unit, n=st.integers(1, 60))
def test_closest_to_threshold_is_the_closest_set(pred, tau, n):
    """Bug caught: argsort of p instead of |p − τ|, or the n farthest."""
    p = np.array(pred)
    keep = closest_to_threshold(p, tau, n)
    assert keep.shape == (min(n, p.size),) and len(set(keep.tolist())) == keep.size
    rest = np.setdiff1d(np.arange(p.size), keep)
    if rest.size and keep.size:
        assert np.abs(p[keep] - tau).max() <= np.abs(p[rest] - tau).min()


class Recording(TablePredictor):
    """A predictor that remembers the candidates it was asked about."""

    def predict(self, keys):
        self.asked = np.asarray(keys).copy()
        return super().predict(keys)


@SET
@given(seed=st.integers(0, 2**16), n=st.integers(1, 10), k=st.integers(1, 5),
       tau=unit)
def test_pcl_keeps_the_candidates_closest_to_tau(seed, n, k, tau):
    """Bug caught: PCL keeping candidates by rank instead of distance to τ, or drawing
    fewer than k·n candidates."""
    rng = np.random.default_rng(seed)
    pool = 50
    pred = Recording(initial={i: float(v) for i, v in enumerate(rng.random(pool))})
    s = make_strategy("pcl", predictor=pred, k=k, tau=tau, seed=seed)
    s.add_samples(np.arange(pool))
    chosen = s.select(n)
    asked = pred.asked
    assert asked.shape == (min(k * n, pool),) and len(set(asked.tolist())) == asked.size
    assert set(chosen.tolist()) <= set(asked.tolist())
    d = {int(x): abs(pred.table[int(x)] - tau) for x in asked}
    others = set(asked.tolist()) - set(chosen.tolist())
    if others:
        assert max(d[int(c)] for c in chosen) <= min(d[o] for o in others)


def test_pcl_predictor_is_fitted_on_mean_unguided_reward():
    """Bug caught: the value model updated with guided rewards or never updated."""
    pred = TablePredictor(prior=0.5, lr=1.0)
    s = make_strategy("pcl", predictor=pred, group_size=4)
    s.add_samples([0, 1])
    s.observe(GroupResults.build([0, 1], [[1, 0, 0, 0], [1, 1, 1, 0]],
                                 guided=[[True, False, False, False], [False] * 4]))
    assert pred.predict(np.array([0, 1])).tolist() == [0.0, 0.75]


class Bad:
    def __init__(self, out):
        self.out = out

    def predict(self, keys):
        return np.full(len(keys), self.out) if np.isscalar(self.out) else self.out


@pytest.mark.parametrize("name,arg", [("pcl", "predictor"), ("adcl", "estimate_fn")])
@pytest.mark.parametrize("out,match", [(np.nan, "NaN"), (1.5, r"\[0, 1\]"), (-0.1, r"\[0, 1\]"),
                                       (np.zeros(2), "shape")])
def test_bad_predictions_name_strategy_and_argument(name, arg, out, match):
    """Bug caught: NaN predictions ranked silently (argsort puts NaN last), values > 1."""
    s = make_strategy(name, **{arg: Bad(out)})
    s.add_samples(np.arange(20))
    with pytest.raises(ValueError, match=f"'{name}'.*{arg}.*{match}"):
        s.select(4)


@pytest.mark.parametrize("name", ["pcl", "adcl", "gain_rl", "clpo"])
def test_missing_callable_is_refused_at_construction(name):
    """Bug caught: a curriculum built without its model signal, failing at step 1."""
    (arg,) = signals_for(name)
    with pytest.raises(ValueError, match=f"strategy '{name}' needs the argument '{arg}'"):
        make_strategy(name)
    with pytest.raises(ValueError, match=f"'{name}'.*{arg} must be callable"):
        make_strategy(name, **{arg: 3})


# ------------------------------------------------------------------ ADCL
@SET
@given(seed=st.integers(0, 2**16), n=st.integers(1, 8), every=st.integers(1, 3),
       look=st.integers(1, 3), steps=st.integers(1, 8))
def test_adcl_reestimation_touches_only_the_upcoming_window(seed, n, every, look, steps):
    """Bug caught: re-sorting the whole remaining order (or already served samples), or
    re-estimating on the wrong steps."""
    rng = np.random.default_rng(seed)
    est = TablePredictor(initial={i: float(v) for i, v in enumerate(rng.random(30))})
    s = make_strategy("adcl", estimate_fn=est, reestimate_every=every, lookahead_batches=look)
    s.add_samples(np.arange(30))
    first = s.select(n)
    order = s.selector.order
    vals = est.predict(order)
    assert (np.diff(vals) <= 0).all()  # initial order is easy → hard
    assert np.array_equal(first, order[:n])
    for _ in range(steps):
        calls, cursor, before = s.selector.calls, s.selector.cursor, s.selector.order.copy()
        for k in range(30):  # the model changed its mind about every sample
            est.table[k] = float(rng.random())
        s.select(n)
        after = s.selector.order
        stop = min(30, cursor + look * n)
        if calls % every == 0:
            assert sorted(after[cursor:stop]) == sorted(before[cursor:stop])
            assert (np.diff(est.predict(after[cursor:stop])) <= 0).all()
        else:
            assert np.array_equal(after, before)
        mask = np.ones(30, bool)
        mask[cursor:stop] = False
        assert np.array_equal(after[mask], before[mask])


@SET
@given(est=st.lists(unit, min_size=2, max_size=30), data=st.data())
def test_resort_window_is_a_permutation_of_the_window_only(est, data):
    order = np.arange(len(est))[::-1].copy()
    a = data.draw(st.integers(0, len(est)))
    b = data.draw(st.integers(a, len(est)))
    out = resort_window(order, a, b, np.array(est[: b - a]))
    assert np.array_equal(out[:a], order[:a]) and np.array_equal(out[b:], order[b:])
    assert sorted(out[a:b]) == sorted(order[a:b])


# ------------------------------------------------------------------ GAIN-RL
@SET
@given(acc=unit, angle=st.floats(-1, 1), lo=st.floats(-500, 500), span=st.floats(0, 1000),
       n_adj=st.floats(0, 1000), alpha=st.floats(0, 5), div=st.sampled_from([1.0, 2.0]))
def test_gain_mu_step_is_bounded_and_monotone_in_accuracy(acc, angle, lo, span, n_adj, alpha,
                                                          div):
    """Bug caught: an unclipped centre move, or one that falls as accuracy rises."""
    hi = lo + span
    m = gain_mu_step(acc, angle, n_adj, alpha, 0.5, lo, hi, div)
    assert lo <= m <= hi
    assert gain_mu_step(min(1.0, acc + 0.1), angle, n_adj, alpha, 0.5, lo, hi, div) >= m


@SET
@given(size=st.integers(1, 5000), n=st.integers(1, 300), mu=st.floats(-100, 6000),
       sigma=st.floats(0.01, 3000), seed=st.integers(0, 2**16))
def test_gaussian_rank_draw_gives_distinct_in_range_ranks(size, n, mu, sigma, seed):
    """Bug caught: repeated ranks, ranks past the pool, or fewer than n (μ off the pool)."""
    r = gaussian_rank_draw(mu, sigma, size, n, np.random.default_rng(seed))
    assert r.shape == (min(n, size),) and len(set(r.tolist())) == r.size
    assert (r >= 0).all() and (r < size).all()


def test_gaussian_rank_draw_concentrates_around_mu_at_a_million():
    """Bug caught: weights over the whole pool (O(pool)) or a draw ignoring μ."""
    r = gaussian_rank_draw(400_000, 1000, 1_000_000, 1024, np.random.default_rng(0))
    assert r.size == 1024 and np.abs(r - 400_000).max() < 6000
    assert abs(np.median(r) - 400_000) < 150


@SET
@given(seed=st.integers(0, 2**16), steps=st.integers(1, 6))
def test_gain_centre_never_moves_back_and_follows_the_score_order(seed, steps):
    """Bug caught: an order sorted ascending, or μ decreasing with adj_min = 0."""
    s = build("gain_rl", seed=seed, acc_divisor=1.0, sigma=2.0, group_size=2)
    mus = []
    for _ in range(steps):
        drive(s, 1, 4, seed)
        mus.append(s.selector.mu)
    assert all(b >= a for a, b in zip(mus, mus[1:], strict=False))
    sc = score_fn(s.stats.index.keys_of(s.selector.order))
    assert (np.diff(sc) <= 0).all()


# ------------------------------------------------------------- length budget
@SET
@given(b0=st.integers(1, 4096), frac=unit, sched=st.sampled_from(["exponential", "linear"]),
       gamma=st.floats(0.01, 1.0), period=st.integers(1, 100), decay=st.integers(1, 1000),
       t=st.integers(0, 5000), dt=st.integers(0, 500))
def test_token_budget_never_increases_and_stays_in_bounds(b0, frac, sched, gamma, period, decay,
                                                          t, dt):
    """Bug caught: a budget that grows back (e.g. γ^t with t mod period), falls under the
    floor, or starts above B0."""
    bmin = max(1, int(frac * b0))
    b1 = token_budget(t, b0, bmin, sched, gamma, period, decay)
    b2 = token_budget(t + dt, b0, bmin, sched, gamma, period, decay)
    assert bmin <= b2 <= b1 <= b0
    assert token_budget(0, b0, bmin, sched, gamma, period, decay) == b0


def test_length_plan_carries_the_steps_budget():
    s = make_strategy("length_curriculum", initial_budget=100, min_budget=10, gamma=0.5,
                      period=1, group_size=2)
    s.add_samples(np.arange(5))
    budgets = []
    for _ in range(5):
        keys = s.select(3)
        plan = s.plan(keys)
        assert len({o["max_new_tokens"] for o in plan.options}) == 1
        budgets.append(plan.options[0]["max_new_tokens"])
        assert plan.options[0]["length_reward"] is True
        s.observe(GroupResults.from_plan(plan, np.ones((3, 2))))
    assert budgets == [100, 50, 25, 12, 10]


# ------------------------------------------------------------------------ h1
@SET
@given(level=st.integers(0, 5), ema=unit, thr=unit, n_levels=st.integers(1, 7))
def test_depth_level_advances_one_at_threshold_and_never_back(level, ema, thr, n_levels):
    level = min(level, n_levels - 1)
    nxt = next_depth_level(level, ema, thr, n_levels)
    assert nxt in (level, level + 1) and nxt < n_levels
    assert (nxt == level + 1) == (ema >= thr and level + 1 < n_levels)


@SET
@given(seed=st.integers(0, 2**16), replay=st.floats(0, 0.99), n=st.integers(1, 20))
def test_h1_draws_current_depth_plus_replay_share(seed, replay, n):
    """Bug caught: replay drawn from deeper chains, or the current depth never advancing."""
    s = make_strategy("h1", threshold=0.5, replay=replay, seed=seed, group_size=2)
    s.add_samples(np.arange(30), category=[f"depth:{1 + i % 3}" for i in range(30)])
    depth = 1 + np.arange(30) % 3
    levels = []
    for _ in range(6):
        keys = s.select(n)
        cur = 1 + s.selector.level
        d = depth[keys]
        assert (d <= cur).all()
        assert (d < cur).sum() == (min(round(replay * n), n - 1) if cur > 1 else 0)
        plan = s.plan(keys)
        s.observe(GroupResults.from_plan(plan, np.ones((n, 2))))  # all solved: advance
        levels.append(s.selector.level)
    assert levels[:3] == [1, 2, 2] and levels == sorted(levels)


def test_h1_needs_depth_labels():
    s = make_strategy("h1")
    s.add_samples(np.arange(3), category=["a", "b", "c"])
    with pytest.raises(ValueError, match="'h1'.*'a'.*chain depth"):
        s.select(2)


# --------------------------------------------------------------- Cog-DRIFT
@SET
@given(data=st.data(), n=st.integers(1, 20), promote=unit, hard=unit, b=st.floats(0, 0.99))
def test_format_promotion_rule(data, n, promote, hard, b):
    """Bug caught: promotion below the threshold, a level past open, or a sample demoted
    without demotion enabled."""
    level = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), np.int8)
    ema = np.array(data.draw(st.lists(st.one_of(unit, st.just(np.nan)), min_size=n,
                                      max_size=n)))
    started = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    p = np.array(data.draw(st.lists(unit, min_size=n, max_size=n)))
    lv, e, stt = next_format(level, ema, started, p, hard, promote, None, b)
    assert stt.all() and ((lv >= 0) & (lv <= 2)).all()
    assert (lv[~started] == np.where(p[~started] <= hard, 0, 2)).all()
    s = started
    assert (lv[s] >= level[s]).all() and (lv[s] - level[s] <= 1).all()
    new = np.where(np.isnan(ema), p, b * ema + (1 - b) * p)
    up = s & (lv > level)
    assert (new[up] >= promote).all()
    due = s & (new >= promote) & (level < 2)
    assert (lv[due] == level[due] + 1).all()


def test_cog_drift_hard_sample_starts_at_mcq_and_climbs():
    s = make_strategy("cog_drift", promote_threshold=0.75, group_size=4)
    s.add_samples([0, 1])
    seq = []
    for r in ([0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]):
        plan = s.plan([0, 1])
        seq.append(plan.options[0]["format"])
        s.observe(GroupResults.from_plan(plan, [r, [1, 1, 1, 0]]))
    assert seq == ["open", "mcq", "cloze"] and s.plan([0]).options[0]["format"] == "open"
    assert s.plan([1]).options[0]["format"] == "open" and FORMATS[-1] == "open"


# -------------------------------------------------------------------- CLPO
@SET
@given(ema=st.lists(unit, min_size=1, max_size=40), a=unit, b=unit)
def test_clpo_modes_follow_the_bands(ema, a, b):
    lo, hi = min(a, b), max(a, b)
    e = np.array(ema)
    seen = np.arange(e.size) % 3 > 0
    m = restructure_modes(e, seen, lo, hi)
    assert (m[~seen] == 0).all()
    assert (m[seen & (e < lo)] == 2).all()
    assert (m[seen & (e >= lo) & (e < hi)] == 1).all() and (m[seen & (e >= hi)] == 0).all()


def test_clpo_plan_carries_restructured_questions():
    s = make_strategy("clpo", restructure_fn=restructure_fn, group_size=2)
    s.add_samples([0, 1, 2])
    s.observe(GroupResults.build([0, 1, 2], [[0, 0], [1, 0], [1, 1]]))
    opts = s.plan([0, 1, 2]).options
    assert opts[0] == {"question": "(simplify) question 0", "restructure": "simplify"}
    assert opts[1] == {"question": "(diversify) question 1", "restructure": "diversify"}
    assert opts[2] == {}


@pytest.mark.parametrize("out", [lambda k, m: ["x"], lambda k, m: [3] * len(k),
                                 lambda k, m: [""] * len(k)])
def test_clpo_bad_restructuring_names_the_argument(out):
    s = make_strategy("clpo", restructure_fn=out, group_size=2)
    s.add_samples([0, 1])
    s.observe(GroupResults.build([0, 1], [[0, 0], [0, 0]]))
    with pytest.raises(ValueError, match="'clpo'.*restructure_fn"):
        s.plan([0, 1])


# ---------------------------------------------------------------- the plan
@pytest.mark.parametrize("bad,match", [
    ({"a": 1}, "list"), ([{"a": 1}], "one dict per key"), ([{"a": [1]}, {}], "str, int"),
    ([{1: 1}, {}], "keys must be str"), ([{"a": float("nan")}, {}], "finite"),
    (["x", {}], "must be a dict"),
])
def test_plan_options_are_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        RolloutPlan(np.arange(2), np.zeros((2, 2)), options=bad)
