"""Properties of SampleStats and the built-in strategies (uniform, lp_weighting,
prefix_guidance, lppo): state rules, round trips, determinism, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lppo_sampling import GroupResults, SampleStats, make_strategy

BUILTIN = ["uniform", "lp_weighting", "prefix_guidance", "lppo"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _binary(rng: np.random.Generator, shape: tuple[int, int], p: float = 0.4) -> np.ndarray:
    return (rng.random(shape) < p).astype(np.float64)


def _drive(s, rng: np.random.Generator, steps: int, batch: int) -> None:
    """A few realistic steps: select, plan, observe (binary rewards), keep, weights."""
    for _ in range(steps):
        keys = s.select(batch)
        plan = s.plan(keys)
        r = _binary(rng, plan.prefix_ratios.shape, rng.uniform(0, 0.6))
        s.observe(GroupResults.from_plan(plan, r))
        s.keep(keys)
        s.weights(keys)


STAT_COLUMNS_EXCEPT_CLOCK = [
    c for c in SampleStats().columns if c not in ("last_step",)
]


# ------------------------------------------------------------------ split rules
UNGUIDED_COLUMNS = ["ema", "delta", "last_pass_rate", "n_rollouts", "reward_sum", "n_events"]
ORACLE_COLUMNS = UNGUIDED_COLUMNS + ["guided_rollouts", "guided_reward_sum"]


def reference_stats(batches: list[tuple], beta: float = 0.8) -> dict[object, dict[str, float]]:
    """The documented rules as a plain loop, one sample at a time (the test oracle).

    Per call, a sample's rollouts are pooled into one event; only unguided rollouts move
    the EMA (first sight: EMA = p, Δ = 0; then EMA ← β·EMA + (1 − β)·p, Δ = new − old).
    """
    out: dict[object, dict[str, float]] = {}
    for keys, r, guided in batches:
        pooled: dict[object, list[list[float]]] = {}
        for i, k in enumerate(keys.tolist()):
            u, gd = pooled.setdefault(k, [[], []])
            for j in range(r.shape[1]):
                (gd if guided[i, j] else u).append(float(r[i, j]))
        for k, (u, gd) in pooled.items():
            st_ = out.setdefault(k, dict.fromkeys(ORACLE_COLUMNS, 0.0) | {"last_pass_rate": np.nan})
            st_["guided_rollouts"] += len(gd)
            st_["guided_reward_sum"] += sum(gd)
            if not u:
                continue
            p = sum(u) / len(u)
            old = st_["ema"]
            new = beta * old + (1.0 - beta) * p if st_["n_events"] > 0 else p
            st_["delta"] = new - old if st_["n_events"] > 0 else 0.0
            st_["ema"], st_["last_pass_rate"] = new, p
            st_["n_events"] += 1
            st_["n_rollouts"] += len(u)
            st_["reward_sum"] += sum(u)
    return out


class GuidedLeakStats(SampleStats):
    """Deliberate bug (mutant): for a sample already seen, the EMA update uses the pass rate
    of *all* its rollouts, guided ones included. Samples seen for the first time are exact,
    which is why properties that only observe fresh samples cannot see it."""

    def observe(self, results: GroupResults) -> np.ndarray:
        known = self.index.lookup(self.index.validate(results.keys))
        at = np.maximum(known, 0)
        seen = (known >= 0) & (self["n_events"][at] > 0) if len(self) else known >= 0
        old = np.where(seen, self["ema"][at], 0.0) if len(self) else np.zeros(known.shape)
        rows = super().observe(results)
        m = results.mask
        total = np.where(m, results.rewards, 0.0).sum(1)
        uniq, first, inv = np.unique(rows, return_index=True, return_inverse=True)
        p_all = np.bincount(inv, weights=total) / np.bincount(inv, weights=m.sum(1))
        leak = seen[first]
        u = uniq[leak]
        new = 0.8 * old[first][leak] + 0.2 * p_all[leak]
        self._cols["delta"][u] = new - old[first][leak]
        self._cols["ema"][u] = new
        return rows


def _history(rng: np.random.Generator, keys: np.ndarray, g: int, seen_frac: float) -> tuple:
    """An earlier batch over a `seen_frac` share of `keys`, some of its slots guided."""
    k = keys[rng.random(keys.shape[0]) < seen_frac]
    if k.size == 0:
        return None
    return k, _binary(rng, (k.size, g)), rng.random((k.size, g)) < 0.3


def check_split_equals_whole(stats_cls, n, g, seed, cut, seen_frac) -> None:
    """Observe one batch whole or split in two (each sample in one part, parts in either
    order), after a shared history; both must equal each other and the reference loop."""
    rng = np.random.default_rng(seed)
    keys = rng.permutation(1000)[:n]
    hist = _history(rng, keys, g, seen_frac)
    r = _binary(rng, (n, g))
    guided = rng.random((n, g)) < 0.3
    lengths = rng.integers(1, 300, (n, g)).astype(float)
    whole, parts = stats_cls(), stats_cls()
    for s in (whole, parts):
        s.register(np.arange(1000))
        if hist is not None:
            s.observe(GroupResults.build(hist[0], hist[1], guided=hist[2]))
    whole.observe(GroupResults.build(keys, r, guided=guided, lengths=lengths))
    perm = rng.permutation(n)
    k = int(cut * n)
    for idx in (perm[k:], perm[:k]):
        if idx.size:
            parts.observe(
                GroupResults.build(keys[idx], r[idx], guided=guided[idx], lengths=lengths[idx])
            )
    for c in STAT_COLUMNS_EXCEPT_CLOCK:
        np.testing.assert_array_equal(whole[c], parts[c], err_msg=c)
    ref = reference_stats(([hist] if hist is not None else []) + [(keys, r, guided)])
    rows = whole.rows(keys)
    for c in ORACLE_COLUMNS:
        expect = np.array([ref[kk][c] for kk in keys.tolist()], dtype=whole[c].dtype)
        np.testing.assert_allclose(whole[c][rows], expect, rtol=0, atol=1e-12, err_msg=c)


def check_guided_never_moves_unguided(stats_cls, n, g, seed, seen_frac) -> None:
    """Flip every guided outcome of a batch (after a shared history): the unguided
    statistics must not change."""
    rng = np.random.default_rng(seed)
    keys = np.arange(n)
    hist = _history(rng, keys, g, seen_frac)
    guided = rng.random((n, g)) < 0.4
    guided[:, g // 2 :] = True
    guided[:, 0] = False  # every sample keeps an unguided slot
    r = _binary(rng, (n, g))
    r_other = r.copy()
    r_other[guided] = 1.0 - r_other[guided]
    a, b = stats_cls(), stats_cls()
    for s, rew in ((a, r), (b, r_other)):
        if hist is not None:
            s.observe(GroupResults.build(hist[0], hist[1], guided=hist[2]))
        s.register(keys)
        s.observe(GroupResults.build(keys, rew, guided=guided))
    for c in UNGUIDED_COLUMNS:
        np.testing.assert_array_equal(a[c], b[c], err_msg=c)
    np.testing.assert_array_equal(a["guided_rollouts"], b["guided_rollouts"])


split_case = {
    "n": st.integers(1, 40),
    "g": st.integers(1, 8),
    "seed": st.integers(0, 10_000),
    "cut": st.floats(0, 1),
    "seen_frac": st.floats(0.5, 1.0),
}
guided_case = {
    "n": st.integers(1, 30),
    "g": st.integers(2, 8),
    "seed": st.integers(0, 10_000),
    "seen_frac": st.floats(0.5, 1.0),
}


@SETTINGS
@given(**split_case)
def test_split_with_unique_keys_is_exact(n: int, g: int, seed: int, cut: float, seen_frac) -> None:
    """Each sample in one part, parts in any order → identical statistics, equal to the
    reference loop — on samples that already have history. Bugs caught: an update that
    depends on how the batch is split (e.g. a batch-level mean), and guided rewards leaking
    into a seen sample's EMA (`GuidedLeakStats`: whole and split agree with each other, so
    only the comparison with the reference loop on seen samples exposes it)."""
    check_split_equals_whole(SampleStats, n, g, seed, cut, seen_frac)


@SETTINGS
@given(n=st.integers(2, 40), g=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_counts_and_sums_are_order_free_even_with_repeated_keys(n: int, g: int, seed: int) -> None:
    """Counts and sums do not depend on how rollouts of a sample are split across calls. Bug
    caught: a key repeated in one call counted once (`col[rows] += x` with duplicate rows,
    which numpy applies once) instead of pooling its rollouts."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 5, n)  # many repeats
    r = _binary(rng, (n, g))
    guided = rng.random((n, g)) < 0.3
    sums = ["n_rollouts", "reward_sum", "guided_rollouts", "guided_reward_sum"]
    a = SampleStats()
    a.observe(GroupResults.build(keys, r, guided=guided))
    b = SampleStats()
    b.register(np.unique(keys))  # same row order as a's first-appearance order is not needed
    for i in rng.permutation(n):
        b.observe(GroupResults.build(keys[i : i + 1], r[i : i + 1], guided=guided[i : i + 1]))
    for c in sums:
        np.testing.assert_array_equal(a[c][a.rows(np.unique(keys))], b[c][b.rows(np.unique(keys))])


def test_repeated_key_in_one_call_is_one_event() -> None:
    """Documented non-order-free rule: duplicates in one call are pooled into one EMA event."""
    s = SampleStats(beta=0.5)
    s.observe(GroupResults.build([7, 7], [[1.0, 1.0], [0.0, 0.0]]))
    row = s.rows([7])
    assert s["n_events"][row][0] == 1
    assert s["ema"][row][0] == 0.5  # pooled pass rate 2/4, first sight
    t = SampleStats(beta=0.5)
    t.observe(GroupResults.build([7], [[1.0, 1.0]]))
    t.observe(GroupResults.build([7], [[0.0, 0.0]]))
    assert t["ema"][t.rows([7])][0] == 0.5 * 1.0 + 0.5 * 0.0
    assert t["n_events"][t.rows([7])][0] == 2


@SETTINGS
@given(**guided_case)
def test_guided_results_never_move_unguided_stats(n: int, g: int, seed: int, seen_frac) -> None:
    """Flipping every guided outcome leaves EMA, Δ, last pass rate and unguided counts
    unchanged, for samples with history as well as new ones. Bug caught: guided rewards
    leaking into the EMA of a sample already seen (`GuidedLeakStats`), which a test on
    fresh samples only — first sight takes the unguided rate — cannot see."""
    check_guided_never_moves_unguided(SampleStats, n, g, seed, seen_frac)


def test_strengthened_properties_kill_the_guided_leak_mutant() -> None:
    """Both properties fail on `GuidedLeakStats`; restricted to fresh samples (the old
    tests: no history) they pass it, which is the gap the history closes."""
    fast = settings(max_examples=60, deadline=None, database=None)

    @fast
    @given(**split_case)
    def split_on_mutant(n, g, seed, cut, seen_frac):
        check_split_equals_whole(GuidedLeakStats, n, g, seed, cut, seen_frac)

    @fast
    @given(**guided_case)
    def guided_on_mutant(n, g, seed, seen_frac):
        check_guided_never_moves_unguided(GuidedLeakStats, n, g, seed, seen_frac)

    for prop in (split_on_mutant, guided_on_mutant):
        with pytest.raises(AssertionError):
            prop()

    @fast
    @given(n=st.integers(1, 30), g=st.integers(2, 8), seed=st.integers(0, 10_000),
           cut=st.floats(0, 1))
    def fresh_only(n, g, seed, cut):
        check_split_equals_whole(GuidedLeakStats, n, g, seed, cut, 0.0)
        check_guided_never_moves_unguided(GuidedLeakStats, n, g, seed, 0.0)

    fresh_only()  # the mutant is invisible without history


def test_ema_and_delta_follow_lppo_rule() -> None:
    s = SampleStats(beta=0.8)
    s.observe(GroupResults.build(["q"], [[0, 0, 1, 1]]))  # first sight: p = 0.5
    assert s["ema"][0] == 0.5 and s["delta"][0] == 0.0
    s.observe(GroupResults.build(["q"], [[1, 1, 1, 1]]))
    assert s["ema"][0] == pytest.approx(0.8 * 0.5 + 0.2 * 1.0)
    assert s["delta"][0] == pytest.approx(0.1)
    assert s.steps_since_seen()[0] == 0
    s.observe(GroupResults.build(["other"], [[1]]))
    assert s.steps_since_seen(s.rows(["q"]))[0] == 1


# ------------------------------------------------------------------ selection
@SETTINGS
@given(
    name=st.sampled_from(BUILTIN),
    pool=st.integers(1, 200),
    n=st.integers(1, 300),
    seed=st.integers(0, 10_000),
)
def test_selection_stays_in_pool_and_respects_size(name, pool, n, seed) -> None:
    """Bug caught: a selector drawing with replacement while the pool allows none, returning
    fewer than n, or returning rows instead of keys (outside the pool for string keys)."""
    s = make_strategy(name, seed=seed)
    keys = [f"id-{i}" for i in range(pool)]
    s.add_samples(keys)
    out = s.select(n)
    assert len(out) == n
    assert set(out.tolist()) <= set(keys)
    if n <= pool:
        assert len(set(out.tolist())) == n  # without replacement when possible


# ------------------------------------------------------------------ state
@SETTINGS
@given(name=st.sampled_from(BUILTIN), seed=st.integers(0, 10_000), steps=st.integers(0, 6))
def test_state_round_trip_is_exact_and_replays_choices(name, seed, steps, tmp_path_factory) -> None:
    """Bug caught: a state that misses the RNG or a column (the restored strategy then
    chooses differently), or a load that keeps the target's own seed."""
    rng = np.random.default_rng(seed)
    s = make_strategy(name, group_size=4, seed=seed)
    s.add_samples(np.arange(50), has_solution=rng.random(50) < 0.7)
    _drive(s, rng, steps, 8)
    path = tmp_path_factory.mktemp("state") / "s.npz"
    s.save(path)
    t = make_strategy(name, group_size=4, seed=seed + 1)  # different seed: state must win
    t.load(path)
    u = make_strategy(name, group_size=4, seed=seed + 2)
    u.load_state_dict(s.state_dict())
    assert s.state_checksum() == t.state_checksum() == u.state_checksum()
    rng_a, rng_b, rng_c = (np.random.default_rng(seed + 99) for _ in range(3))
    for strat, r in ((s, rng_a), (t, rng_b), (u, rng_c)):
        _drive(strat, r, 3, 8)
    assert s.state_checksum() == t.state_checksum() == u.state_checksum()
    k = [x.select(8) for x in (s, t, u)]
    np.testing.assert_array_equal(k[0], k[1])
    np.testing.assert_array_equal(k[0], k[2])
    np.testing.assert_array_equal(s.plan(k[0]).prefix_ratios, t.plan(k[1]).prefix_ratios)


@SETTINGS
@given(name=st.sampled_from(BUILTIN), seed=st.integers(0, 10_000))
def test_replicas_fed_same_results_are_bit_identical(name, seed) -> None:
    """Bug caught: randomness outside the strategy's own generator (global np.random, set
    ordering), which makes two ranks' strategies diverge."""
    a = make_strategy(name, seed=seed)
    b = make_strategy(name, seed=seed)
    for s in (a, b):
        s.add_samples(np.arange(30), has_solution=np.ones(30, bool))
    rng = np.random.default_rng(seed)
    for _ in range(5):
        ka, kb = a.select(6), b.select(6)
        np.testing.assert_array_equal(ka, kb)
        pa, pb = a.plan(ka), b.plan(kb)
        np.testing.assert_array_equal(pa.prefix_ratios, pb.prefix_ratios)
        r = rng.random(pa.prefix_ratios.shape).round(3)  # same results to both ranks
        a.observe(GroupResults.from_plan(pa, r))
        b.observe(GroupResults.from_plan(pb, r))
        np.testing.assert_array_equal(a.weights(ka), b.weights(kb))
    assert a.state_checksum() == b.state_checksum()


# ------------------------------------------------------------- lppo behaviour
def test_lppo_guides_only_stuck_samples_with_solutions() -> None:
    s = make_strategy("lppo", group_size=8, seed=0, guided_fraction=0.5)
    s.add_samples(["stuck", "nosol", "fine", "new"], has_solution=[True, False, True, True])
    s.observe(
        GroupResults.build(["stuck", "nosol", "fine"], np.array([[0] * 8, [0] * 8, [1, 0] * 4]))
    )
    plan = s.plan(np.array(["stuck", "nosol", "fine", "new"]))
    g = plan.guided
    assert g[0].sum() == 4 and g[0, 4:].all()  # last half of the group guided
    assert not g[1:].any()
    assert ((plan.prefix_ratios[0, 4:] >= 0.15) & (plan.prefix_ratios[0, 4:] <= 0.55)).all()
    # guided success does not unstick the sample: unguided EMA is still 0
    s.observe(
        GroupResults.from_plan(plan, np.array([[0] * 4 + [1] * 4, [0] * 8, [1] * 8, [0] * 8]))
    )
    assert s.stats["ema"][s.stats.rows(["stuck"])][0] == 0.0
    assert s.stats["guided_reward_sum"][s.stats.rows(["stuck"])][0] == 4.0
    assert s.plan(np.array(["stuck"])).guided.any()


def test_lppo_weights_follow_progress() -> None:
    s = make_strategy("lppo", seed=0)
    s.add_samples(["up", "down", "flat", "unseen"])
    s.observe(GroupResults.build(["up", "down", "flat"], [[0, 0], [1, 1], [0, 1]]))
    s.observe(GroupResults.build(["up", "down", "flat"], [[1, 1], [0, 0], [0, 1]]))
    w = s.weights(np.array(["up", "down", "flat", "unseen"]))
    assert w[0] > 1.0 > w[1]
    assert w[2] == 1.0 and w[3] == 1.0
    np.testing.assert_allclose(w[0], 1 / (1 + np.exp(-8 * 0.2)) + 0.5)


def test_uniform_is_the_plain_baseline() -> None:
    s = make_strategy("uniform", seed=0)
    s.add_samples(np.arange(10), has_solution=np.ones(10, bool))
    s.observe(GroupResults.build(np.arange(10), np.zeros((10, 8))))
    keys = s.select(10)
    assert not s.plan(keys).guided.any()
    assert s.keep(keys).all() and (s.weights(keys) == 1.0).all()


def test_pool_grows_with_unknown_keys_and_string_keys() -> None:
    s = make_strategy("lppo")
    s.add_samples(np.arange(3))
    s.observe(GroupResults.from_flat(["x", 1, "x", 5], [1.0, 0.0, 0.0, 1.0]))
    assert len(s) == 5
    np.testing.assert_array_equal(s.stats["n_rollouts"][s.stats.rows(["x", 1, 5])], [2, 1, 1])


def test_from_flat_groups_ragged_rollouts() -> None:
    res = GroupResults.from_flat(["b", "a", "b", "b"], [1, 0, 0, 1], guided=[0, 0, 1, 0])
    assert res.keys.tolist() == ["b", "a"]
    np.testing.assert_array_equal(res.mask, [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(res.rewards[0], [1, 0, 1])
    np.testing.assert_array_equal(res.guided[0], [0, 1, 0])


def test_large_int_pool_stays_in_identity_mode() -> None:
    s = make_strategy("uniform")
    s.add_samples(np.arange(100_000))
    assert s.stats.index.identity
    state = s.state_dict()
    assert state["stats"]["index"] == {"identity": True, "size": 100_000}


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.observe(GroupResults.build([0, 1], [[np.nan], [1.0]])), "NaN or inf"),
        (lambda s: s.observe(GroupResults.build([0, 1], [[np.inf], [1.0]])), "NaN or inf"),
        (lambda s: s.observe(GroupResults.build([0, 1], [[1.0]])), "rewards must have shape"),
        (lambda s: s.observe(GroupResults.build([], np.zeros((0, 2)))), "keys is empty"),
        (lambda s: s.observe(GroupResults.build([0], [[2.0]])), "rewards must lie in"),
        (
            lambda s: s.observe(GroupResults.build([0], [[1.0]], guided=[[1, 0]])),
            "guided must have shape",
        ),
        (lambda s: s.observe(GroupResults.from_flat([0, 1], [1.0])), "rewards must have shape"),
        (lambda s: s.observe({"keys": [0]}), "must be a GroupResults"),
        (lambda s: s.select(0), "n must be an int >= 1"),
        (lambda s: s.weights([]), "keys is empty"),
        (lambda s: s.plan([[1, 2]]), "must be 1-D"),
        (lambda s: s.add_samples([1.5]), "int or str"),
        (lambda s: s.add_samples([0, 1], has_solution=[True]), "has_solution must have shape"),
        (lambda s: s.load_state_dict({**s.state_dict(), "version": 99}), "version 99"),
        (lambda s: s.load_state_dict({**s.state_dict(), "name": "uniform"}), "strategy 'uniform'"),
        (lambda s: s.load_state_dict({**s.state_dict(), "config": {"kappa": 1}}), "config"),
        (lambda s: s.load_state_dict({**s.state_dict(), "rng": {"x": 1}}), "rng"),
    ],
)
def test_bad_input_raises_clear_error_and_leaves_state_unchanged(call, message) -> None:
    s = make_strategy("lppo", seed=3)
    s.add_samples(np.arange(5), has_solution=np.ones(5, bool))
    s.observe(GroupResults.build(np.arange(5), np.eye(5)[:, :4]))
    before = s.state_checksum()
    with pytest.raises(ValueError, match=message):
        call(s)
    assert s.state_checksum() == before


def test_unknown_strategy_and_argument_names() -> None:
    with pytest.raises(ValueError, match="Did you mean 'lppo'"):
        make_strategy("lpp")
    with pytest.raises(ValueError, match="kapa"):
        make_strategy("lppo", kapa=3)
    with pytest.raises(ValueError, match="prefix_low must be <= prefix_high"):
        make_strategy("lppo", prefix_low=0.6, prefix_high=0.2)
    with pytest.raises(ValueError, match="beta must lie in"):
        make_strategy("lppo", beta=1.0)


def test_select_on_empty_pool_explains_fix() -> None:
    with pytest.raises(ValueError, match="add_samples"):
        make_strategy("uniform").select(4)


def test_metrics_are_flat_floats() -> None:
    s = make_strategy("lppo")
    s.add_samples(np.arange(10), has_solution=np.ones(10, bool))
    _drive(s, np.random.default_rng(0), 3, 5)
    m = s.metrics()
    assert all(k.startswith("sampler/") for k in m)
    assert all(isinstance(v, float) for v in m.values())
    assert m["sampler/pool_size"] == 10.0


def test_core_imports_numpy_only() -> None:
    code = (
        "import sys, lppo_sampling; lppo_sampling.make_strategy('lppo');"
        "bad=[m for m in ('torch','transformers','trl','verl','sklearn') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_extra_nan_column_survives_state_round_trip() -> None:
    s = SampleStats()
    s.add_column("posterior", np.float32, np.nan)
    s.observe(GroupResults.build([1, 2], [[1.0], [0.0]]))
    t = SampleStats.from_state_dict(s.state_dict())
    t.add_column("posterior", np.float32, np.nan)  # a role re-binding after load
    assert np.isnan(t["posterior"]).all() and len(t) == 2
    with pytest.raises(ValueError, match="already exists"):
        t.add_column("posterior", np.float64, 0.0)


@SETTINGS
@given(chunks=st.lists(st.integers(1, 70), min_size=2, max_size=6), seed=st.integers(0, 10_000))
def test_growing_the_table_keeps_every_value_and_the_record_layout(chunks, seed) -> None:
    """Growth by doubling (from capacity 1) copies every column, hot record or plain array,
    and keeps the hot columns in one cache-line-aligned 64-byte record per row.

    Deliberate bugs this catches (tried): `_reserve` copying only the hot table (the
    strategy's own and the cold columns reset to their fill), copying only the plain
    arrays (ema and counts reset), and an unaligned hot table (row 0 at a 16-byte offset).
    """
    from lppo_sampling.stats import HOT_COLUMNS

    rng = np.random.default_rng(seed)
    stats = SampleStats(capacity=1)
    stats.add_column("mine", np.float64, np.nan)
    before: dict[str, np.ndarray] = {}
    start = 0
    for size in chunks:
        keys = np.arange(start, start + size)
        labels = ["a", "b"] * (size // 2) + ["a"] * (size % 2)
        stats.register(keys, has_solution=rng.random(size) < 0.5, category=labels)  # grows
        for c, was in before.items():  # the rows from before the growth kept every value
            np.testing.assert_array_equal(stats[c][:start], was, err_msg=c)
        stats.observe(GroupResults.build(keys, _binary(rng, (size, 3)),
                                         lengths=np.full((size, 3), 7.0)))
        stats["mine"][keys] = rng.random(size)
        start += size
        before = {c: stats[c].copy() for c in stats.columns}
    assert stats["n_measured"].sum() == 3 * start  # the cold columns were written and kept
    assert not np.isnan(stats["mine"]).any()
    for name in HOT_COLUMNS:
        assert stats._cols[name].strides == (64,), name  # one record per row
    assert stats._cols[HOT_COLUMNS[0]].ctypes.data % 64 == 0, "row 0 starts a cache line"
    # memory: the packed columns plus the record's 2 padding bytes per row
    packed = sum(a.nbytes for a in stats.state_dict()["columns"].values())
    assert stats.nbytes == packed + 2 * start


@SETTINGS
@given(n=st.integers(0, 300), block=st.integers(1, 64), seed=st.integers(0, 10_000))
def test_blocked_row_copy_equals_a_plain_copy(n, block, seed) -> None:
    """`_copy_rows` (used by growth, state_dict and loading) copies rows block by block; any
    block size gives the plain copy. Deliberate bugs this catches (tried): a block end one
    short (`start + block - 1`: a row per block skipped), the last partial block dropped."""
    from lppo_sampling.stats import _copy_rows

    rng = np.random.default_rng(seed)
    src = {"a": rng.random(n + 5), "b": rng.integers(0, 9, n + 5).astype(np.int32)}
    dst = {k: np.full(n + 5, -1, a.dtype) for k, a in src.items()}
    _copy_rows(src, dst, n, block=block)
    for k in src:
        np.testing.assert_array_equal(dst[k][:n], src[k][:n])
        assert (dst[k][n:] == -1).all()  # rows past n untouched
