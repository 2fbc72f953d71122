"""The sampler API validates at its boundary: every bad input is a one-line `ValueError`
naming the argument, and a refused call changes nothing. Each test's docstring names the
deliberate bug it catches; "no sample is guided forever" is a rule with its own property.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lppo_sampling import GroupResults, RolloutPlan, make_strategy
from lppo_sampling.strategy import _REGISTRY, available_strategies

SET = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OURS = [
    "uniform", "lp_weighting", "prefix_guidance", "lppo", "dapo", "balanced_filter", "sec",
    "dump", "mopps", "cures", "hint_length", "hint_lppo", "saidpo",
]
GUIDED = ["prefix_guidance", "lppo", "hint_length", "hint_lppo"]


def pool(name: str = "lppo", n: int = 20, seed: int = 0):
    s = make_strategy(name, group_size=4, seed=seed)
    s.add_samples([f"k{i}" for i in range(n)], has_solution=np.ones(n, bool))
    keys = s.select(8)
    s.observe(GroupResults.from_plan(s.plan(keys), np.eye(8, 4)))
    return s


# ----------------------------------------------------------------- GroupResults
bad_reward = st.sampled_from([np.nan, np.inf, -np.inf, 5.0, -0.1, 1.0000001])


@SET
@given(
    r=hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 5)),
                 elements=st.sampled_from([0.0, 0.25, 1.0])),
    bad=bad_reward, where=st.integers(0, 10_000),
)
def test_direct_construction_refuses_rewards_outside_unit_interval(r, bad, where) -> None:
    """Bug caught: `GroupResults(...)` built without `build` skipped validation, so NaN or
    5.0 rewards reached the EMA."""
    n, g = r.shape
    keys = np.arange(n)
    ok = GroupResults(keys, r, np.zeros((n, g), bool), np.ones((n, g), bool))
    assert ok.rewards.dtype == np.float64
    r = r.copy()
    r.flat[where % r.size] = bad
    with pytest.raises(ValueError, match="rewards"):
        GroupResults(keys, r, np.zeros((n, g), bool), np.ones((n, g), bool))


@SET
@given(
    n=st.integers(1, 6), g=st.integers(2, 5), seed=st.integers(0, 1000),
    junk=st.sampled_from([np.nan, np.inf, 7.0, -3.0]),
)
def test_padding_values_never_reach_the_statistics(n, g, seed, junk) -> None:
    """Bug caught: NaN (or any value) in a padded slot (mask False) turned the EMA NaN
    through the masked sums (0 · NaN = NaN)."""
    rng = np.random.default_rng(seed)
    r = (rng.random((n, g)) < 0.5).astype(float)
    mask = np.ones((n, g), bool)
    mask[:, -1] = False
    dirty = r.copy()
    dirty[:, -1] = junk
    a, b = make_strategy("lppo"), make_strategy("lppo")
    for s, rew in ((a, r), (b, dirty)):
        s.add_samples(np.arange(n))
        s.observe(GroupResults(np.arange(n), rew, np.zeros((n, g), bool), mask))
    assert np.isfinite(b.stats["ema"]).all()
    assert a.state_checksum() == b.state_checksum()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"guided": [["no", "yes"]]}, "guided must hold bools"),
        ({"guided": [[2, 0]]}, "guided must hold bools"),
        ({"mask": [[1, 0, 1]]}, "mask must have shape"),
        ({"rewards": [["1", "0"]]}, "rewards must be numeric"),
        ({"lengths": [[np.nan, 1.0]]}, "lengths must be finite"),
        ({"keys": "k"}, "single str"),
        ({"keys": [1.5]}, "int or str"),
        ({"keys": [True]}, "bool"),
    ],
)
def test_bad_fields_are_named(kwargs, message) -> None:
    """Bug caught: truthiness read of strings ("no" → True), numpy parsing "1" as a reward,
    a float or bool taken as a sample key."""
    base = {"keys": [0], "rewards": [[1.0, 0.0]], "guided": [[False, False]],
            "mask": [[True, True]]}
    with pytest.raises(ValueError, match=message):
        GroupResults(**{**base, **kwargs})


def test_rollout_plan_is_validated() -> None:
    with pytest.raises(ValueError, match="prefix_ratios"):
        RolloutPlan(np.arange(2), np.array([[0.0, np.nan], [0.0, 0.0]]))


# ----------------------------------------------------------- constructor args
def _params(kind: type) -> list[tuple[str, str]]:
    available_strategies()  # imports the peer strategies, which register on import
    out = []
    for name in OURS:
        for p in inspect.signature(_REGISTRY[name]).parameters.values():
            if type(p.default) is kind:
                out.append((name, p.name))
    return out


@SET
@given(case=st.sampled_from(_params(float)),
       bad=st.sampled_from([np.inf, -np.inf, np.nan, True, "1.0", None, [0.5]]))
def test_float_arguments_refuse_non_finite_bool_and_text(case, bad) -> None:
    """Bug caught: `kappa=inf` accepted (σ(inf · 0) = NaN weights), `True` read as 1.0,
    `"1.0"` parsed by float() deep inside a role."""
    name, arg = case
    with pytest.raises(ValueError, match=arg):
        make_strategy(name, **{arg: bad})


@SET
@given(case=st.sampled_from(_params(int)), bad=st.sampled_from([True, False, 2.5, "3", None]))
def test_int_arguments_refuse_bool_fraction_and_text(case, bad) -> None:
    """Bug caught: `group_size=True` accepted as a group of 1; `seed="abc"` a TypeError."""
    name, arg = case
    if arg == "seed" and bad is None:
        return  # seed=None: fresh entropy, allowed
    if arg == "max_num_gen_batches" and bad is False:
        return  # 0 = no chunk limit; False is still a bool, checked below
    with pytest.raises(ValueError, match=arg):
        make_strategy(name, **{arg: bad})


def test_bool_arguments_refuse_strings() -> None:
    """Bug caught: `normalize_weights="false"` is truthy."""
    for name, arg in _params(bool):
        with pytest.raises(ValueError, match=arg):
            make_strategy(name, **{arg: "false"})
        make_strategy(name, **{arg: 0})


def test_seed_and_select_arguments_are_named() -> None:
    """Bug caught: `select(None)` and `seed="abc"` raised TypeError from numpy."""
    with pytest.raises(ValueError, match="seed must be an int"):
        make_strategy("lppo", seed="abc")
    with pytest.raises(ValueError, match="group_size must be an int"):
        make_strategy("lppo", group_size=True)
    s = pool()
    before = s.state_checksum()
    for bad in (None, True, 2.5, "4"):
        with pytest.raises(ValueError, match="n must be an int"):
            s.select(bad)
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator"):
        s.select(2, rng=3)
    assert s.state_checksum() == before


# --------------------------------------------------------------- keys in calls
@SET
@given(name=st.sampled_from(OURS), key=st.text(min_size=2, max_size=6))
def test_bare_string_is_one_key_not_a_sequence(name, key) -> None:
    """Bug caught: `weights("a7x")` iterated the string into three keys and grew the pool."""
    s = pool(name)
    before, size = s.state_checksum(), len(s)
    for call in (s.weights, s.keep, s.plan, s.add_samples):
        with pytest.raises(ValueError, match="single str"):
            call(key)
    assert s.state_checksum() == before and len(s) == size


@SET
@given(name=st.sampled_from(OURS),
       unknown=st.one_of(st.integers(100, 10**9), st.text(min_size=1).filter(
           lambda k: not k.startswith("k"))),
       at=st.integers(0, 7))
def test_read_calls_refuse_unknown_keys_and_never_grow_the_pool(name, unknown, at) -> None:
    """Bug caught: `weights`/`keep`/`plan` registered unknown keys (a typo grew the pool)."""
    s = pool(name)
    keys = list(s.select(8))
    before, size = s.state_checksum(), len(s)
    keys[at] = unknown
    arr = np.empty(8, dtype=object)
    arr[:] = keys
    for call in (s.weights, s.keep, s.plan):
        with pytest.raises(ValueError, match="not in the pool.*add_samples"):
            call(arr)
    assert len(s) == size
    assert s.state_checksum() == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["no"] * 3, "has_solution must hold bools"), ([2, 0, 1], "has_solution must hold bools"),
     ([None] * 3, "has_solution must hold bools"), ([True], "has_solution must have shape")],
)
def test_has_solution_takes_only_bools(flags, message) -> None:
    """Bug caught: `has_solution=["no"]` stored as True (string truthiness)."""
    s = make_strategy("lppo")
    with pytest.raises(ValueError, match=message):
        s.add_samples(["a", "b", "c"], has_solution=flags)
    assert len(s) == 0
    s.add_samples(["a", "b", "c"], has_solution=[1, 0, True])
    assert s.stats["has_solution"].tolist() == [True, False, True]


def test_category_labels_are_str_or_int() -> None:
    s = make_strategy("sec")
    with pytest.raises(ValueError, match="category labels must be str or int"):
        s.add_samples([1, 2], category=["a", None])
    assert len(s) == 0


# ------------------------------------------------------ no sample guided forever
@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(GUIDED),
    g=st.integers(1, 6),
    fraction=st.floats(0.01, 1.0),
    visits=st.integers(4, 14),
    solve_at=st.integers(1, 10),
    seed=st.integers(0, 10_000),
)
def test_no_sample_is_guided_forever(name, g, fraction, visits, solve_at, seed) -> None:
    """Rule: when the guided slots fill the group (G = 1, or guided_fraction rounds to G), a
    stuck sample whose last visit had no unguided rollout gets a fully unguided visit. So no
    two consecutive visits are unguided-free, and once the sample solves unguided its EMA
    moves within two visits. Bug caught: a guide that fills every slot of a stuck sample
    forever (its unguided EMA can never move, so it stays "stuck")."""
    s = make_strategy(name, group_size=g, guided_fraction=fraction, seed=seed)
    s.add_samples(["q"], has_solution=[True])
    s.observe(GroupResults.build(["q"], np.zeros((1, g))))  # seen, failed: stuck
    rng = np.random.default_rng(seed)
    unguided_free = []
    ema_before_solving = None
    for v in range(visits):
        plan = s.plan(["q"])
        solves = v >= solve_at
        r = np.where(plan.guided, rng.random(plan.guided.shape) < 0.5, float(solves)).astype(float)
        if solves and ema_before_solving is None:
            ema_before_solving = float(s.stats["ema"][0])
            solved_visit = v
        s.observe(GroupResults.from_plan(plan, r))
        unguided_free.append(bool(plan.guided.all()))
        if solves and v >= solved_visit + 1:
            assert s.stats["ema"][0] > ema_before_solving, "unguided EMA never moved"
    assert not any(a and b for a, b in zip(unguided_free, unguided_free[1:], strict=False))


def test_partial_guidance_keeps_an_unguided_slot_every_visit() -> None:
    """With guided slots < G nothing changes: the stuck sample is guided on every visit."""
    s = make_strategy("lppo", group_size=4, guided_fraction=0.5, seed=0)
    s.add_samples(["q"], has_solution=[True])
    s.observe(GroupResults.build(["q"], np.zeros((1, 4))))
    for _ in range(5):
        plan = s.plan(["q"])
        assert plan.guided[0].tolist() == [False, False, True, True]
        s.observe(GroupResults.from_plan(plan, np.zeros((1, 4))))


def test_registry_lists_the_strategies_tested_here() -> None:
    assert set(OURS) <= set(available_strategies())


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(GUIDED), g=st.integers(1, 3), visits=st.integers(1, 6),
       seed=st.integers(0, 1000))
def test_guidance_rule_state_round_trips(name, g, visits, seed, tmp_path_factory) -> None:
    """The rule's state (`last_event_guided_only`) survives save → load: the restored
    strategy plans the same guided/unguided visits. Bug caught: the column left out of the
    state (a resumed run would guide a stuck sample twice in a row, or never)."""
    s = make_strategy(name, group_size=g, guided_fraction=1.0, seed=seed)
    s.add_samples(["q", "r"], has_solution=[True, True])
    s.observe(GroupResults.build(["q", "r"], np.zeros((2, g))))
    for _ in range(visits):
        plan = s.plan(["q", "r"])
        s.observe(GroupResults.from_plan(plan, np.zeros((2, g))))
    path = tmp_path_factory.mktemp("rule") / "s.npz"
    s.save(path)
    t = make_strategy(name, group_size=g, guided_fraction=1.0, seed=seed + 1)
    t.load(path)
    for _ in range(3):
        a, b = s.plan(["q", "r"]), t.plan(["q", "r"])
        np.testing.assert_array_equal(a.prefix_ratios, b.prefix_ratios)
        for x, p in ((s, a), (t, b)):
            x.observe(GroupResults.from_plan(p, np.zeros((2, g))))
