"""All-or-nothing state loading: every invalid state is refused, naming the field, and the
strategy that refused it is left exactly as it was (same checksum, same future choices).

Each corruption below is one deliberate bug in a checkpoint; the property test draws a
strategy and a corruption and checks the refusal. Round trips of the key layouts (ints,
strings, mixed, non-ASCII) and of version-1 files live here too.
"""

from __future__ import annotations

import copy
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lppo_sampling import GroupResults, SampleStats, make_strategy

NAMES = [
    "uniform", "lp_weighting", "prefix_guidance", "lppo", "dapo", "balanced_filter", "sec",
    "dump", "mopps", "cures", "hint_length", "hint_lppo", "saidpo",
]
SETTINGS = settings(
    max_examples=120, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def driven(name: str, seed: int = 0, keys: object = None, steps: int = 3):
    """A strategy with some history: categories, solutions, observed groups."""
    s = make_strategy(name, group_size=4, seed=seed)
    rng = np.random.default_rng(seed)
    keys = np.arange(40) if keys is None else keys
    n = len(keys)
    s.add_samples(keys, has_solution=rng.random(n) < 0.7, category=[f"c{i % 3}" for i in range(n)])
    for _ in range(steps):
        k = s.select(8)
        plan = s.plan(k)
        r = (rng.random(plan.prefix_ratios.shape) < 0.4).astype(float)
        s.observe(GroupResults.from_plan(plan, r, lengths=np.full(r.shape, 20.0)))
    return s


def col(name: str, value_fn):
    """Corruption of one statistics column (value_fn: array -> corrupted array)."""

    def apply(state: dict) -> dict:
        state["stats"]["columns"][name] = value_fn(state["stats"]["columns"][name].copy())
        return state

    return apply


def set_at(value):
    def fn(a: np.ndarray) -> np.ndarray:
        a[0] = value
        return a

    return fn


def other(key_path: tuple, value):
    def apply(state: dict) -> dict:
        d = state
        for k in key_path[:-1]:
            d = d[k]
        d[key_path[-1]] = value
        return state

    return apply


# (corruption, regex the error must match, strategies it applies to or None for all)
CORRUPTIONS = {
    "nan_delta": (col("delta", set_at(np.nan)), r"\['delta'\] must not be NaN", None),
    "ema_7": (col("ema", set_at(7.0)), r"\['ema'\] must lie in \[0.0, 1.0\]", None),
    "ema_negative": (col("ema", set_at(-0.5)), r"\['ema'\]", None),
    "negative_rollouts": (col("n_rollouts", set_at(-3)), r"\['n_rollouts'\] must lie in", None),
    "negative_guided": (col("guided_rollouts", set_at(-1)), r"\['guided_rollouts'\]", None),
    "reward_sum_over_count": (
        col("reward_sum", lambda a: a + 100.0), r"\['reward_sum'\] exceeds 'n_rollouts'", None
    ),
    "events_without_rollouts": (
        col("n_events", lambda a: a + 1), r"\['n_events'\] disagrees", None
    ),
    "last_step_in_future": (col("last_step", lambda a: a + 99), r"\['last_step'\]", None),
    "inf_length": (col("length_sum", set_at(np.inf)), r"\['length_sum'\]", None),
    "group_std_too_big": (col("group_std", set_at(np.float32(0.9))), r"\['group_std'\]", None),
    "category_without_label": (
        lambda s: other(("stats", "categories"), [])(s),
        r"\['category'\] must be -1 or an index into the 0 categories",
        None,
    ),
    "duplicate_category": (
        lambda s: other(("stats", "categories"), ["c0", "c0", "c1"])(s), "duplicate", None
    ),
    "wrong_dtype": (col("ema", lambda a: a.astype(np.float32)), r"dtype float32, expected float64",
                    None),
    "wrong_shape": (col("ema", lambda a: a[:-1]), r"\['ema'\] has shape", None),
    "missing_column": (
        lambda s: (s["stats"]["columns"].pop("n_events"), s)[1], r"lacks columns \['n_events'\]",
        None,
    ),
    "unknown_column": (
        other(("stats", "columns", "zzz"), np.zeros(40)), r"\['zzz'\] not declared", None
    ),
    "group_size": (other(("group_size",), 5), r"group_size.*5.*group_size=4", None),
    "group_size_bool": (other(("group_size",), True), r"group_size", None),
    "beta": (other(("stats", "beta"), 0.5), r"\['beta'\] is 0.5.*beta=0.8", None),
    "beta_out_of_range": (other(("stats", "beta"), 3.0), r"\['beta'\] must lie in", None),
    "config_field": (
        lambda s: other(("config", "group_size"), 16)(s), r"config differs.*group_size", None
    ),
    "config_extra_field": (lambda s: other(("config", "zeta"), 1)(s), r"zeta", None),
    "step_negative": (other(("stats", "step"), -1), r"\['step'\] must be an int >= 0", None),
    "index_size": (other(("stats", "index", "size"), 7), r"shape", None),
    "rng": (other(("rng",), {"bit_generator": "PCG64"}), r"rng", None),
    "other_strategy": (
        lambda s: other(("name",), "mopps" if s["name"] != "mopps" else "sec")(s),
        r"saved by strategy '(mopps|sec)'; this strategy is '\w+'", None,
    ),
    "role_type": (other(("role_types", "selector"), "Nope"), r"'Nope'", None),
    "version": (other(("version",), 99), r"version 99", None),
    "not_a_dict": (lambda s: ["state"], r"must be a dict", None),
    # role columns and role state
    "mopps_alpha_zero": (col("mopps_alpha", set_at(0.0)), r"mopps_alpha", ["mopps"]),
    "cures_more_successes": (
        col("cures_accepted", lambda a: a + 50), r"cures_accepted", ["cures"]
    ),
    "hint_ratio_out_of_band": (
        col("hint_ratio", set_at(0.99)), r"hint_ratio", ["hint_length", "hint_lppo"]
    ),
    "saidpo_band_flag": (
        col("saidpo_in_band", lambda a: ~a), r"saidpo_in_band", ["saidpo"]
    ),
    "saidpo_negative": (col("saidpo_attempts", set_at(-2)), r"saidpo_attempts", ["saidpo"]),
    "role_column_missing": (
        lambda s: (s["stats"]["columns"].pop("hint_ratio"),
                   s["stats"]["extra_columns"].pop("hint_ratio"), s)[2],
        r"lacks the column\(s\) \['hint_ratio'\]", ["hint_length", "hint_lppo"],
    ),
    "role_column_wrong_spec": (
        lambda s: other(("stats", "extra_columns", "dapo_keep"), ["|b1", False])(s),
        r"dapo_keep", ["dapo", "saidpo"],
    ),
    "sec_q_nan": (other(("roles", "selector", "q"), np.array([np.nan, 0.1])), r"'q'", ["sec"]),
    "dump_filled_over_window": (
        lambda s: other(("roles", "selector", "filled"),
                        s["roles"]["selector"]["filled"] + 10_000)(s),
        r"'filled'", ["dump"],
    ),
}


@pytest.fixture(scope="module")
def originals():
    return {name: driven(name) for name in NAMES}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), seed=st.integers(0, 50))
def test_invalid_state_is_refused_naming_the_field_and_changes_nothing(
    originals, kind, data, seed
):
    """Bugs caught: a loader that swaps in stats/RNG/config before it fails (half-loaded
    strategy), or that accepts the corruption `kind` (NaN Δ, ema = 7, negative counts, a
    group_size/β/config that disagrees, labels missing for category ids, wrong dtypes or
    shapes, another strategy's checkpoint, bad role state)."""
    corrupt, message, only = CORRUPTIONS[kind]
    name = data.draw(st.sampled_from(only or NAMES), label="strategy")
    state = corrupt(copy.deepcopy(originals[name].state_dict()))
    target = driven(name, seed=seed + 1, steps=1)
    before = target.state_checksum()
    config, group_size, beta = dict(target.config), target.group_size, target.stats.beta
    with pytest.raises(ValueError, match=message):
        target.load_state_dict(state)
    assert target.state_checksum() == before
    assert (target.config, target.group_size, target.stats.beta) == (config, group_size, beta)
    twin = driven(name, seed=seed + 1, steps=1)  # the refused strategy still works as before
    np.testing.assert_array_equal(target.select(8), twin.select(8))


def test_bad_group_size_leaves_nothing_half_loaded() -> None:
    """The reported bug: stats, RNG and config were replaced before group_size failed."""
    src = driven("lppo", seed=1)
    state = src.state_dict()
    state["group_size"] = "eight"
    dst = driven("lppo", seed=2)
    before = dst.state_checksum()
    with pytest.raises(ValueError, match=r"state_dict\['group_size'\] is 'eight'"):
        dst.load_state_dict(state)
    assert dst.state_checksum() == before and dst.config["seed"] == 2


@SETTINGS
@given(name=st.sampled_from(NAMES), cut=st.floats(0.05, 0.95), seed=st.integers(0, 50))
def test_damaged_file_is_refused_naming_the_file(originals, name, cut, seed, tmp_path_factory):
    """Bug caught: `load` that raises a bare zipfile/EOF error (no file name) or loads part
    of a truncated file."""
    path = tmp_path_factory.mktemp("damaged") / "sampler.npz"
    originals[name].save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    target = driven(name, seed=seed)
    before = target.state_checksum()
    with pytest.raises(ValueError, match="sampler.npz"):
        target.load(path)
    assert target.state_checksum() == before


def test_file_missing_an_array_or_metadata(tmp_path) -> None:
    s = driven("lppo")
    path = tmp_path / "s.npz"
    s.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    victim = next(k for k in arrays if k.endswith("/ema"))
    np.savez(tmp_path / "missing.npz", **{k: v for k, v in arrays.items() if k != victim})
    t = make_strategy("lppo", group_size=4)
    with pytest.raises(ValueError, match=r"missing\.npz: the array .*ema.* is missing"):
        t.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "nometa.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="nometa.npz: not an lppo_sampling state file"):
        t.load(tmp_path / "nometa.npz")
    with pytest.raises(FileNotFoundError, match="no sampler state file"):
        t.load(tmp_path / "absent.npz")
    assert zipfile.is_zipfile(path)


# ------------------------------------------------------------------ round trips
key_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12
)
surrogates = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                     min_size=1, max_size=2)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.lists(st.one_of(key_text, surrogates, st.integers(-(2**62), 2**62)),
                  min_size=1, max_size=30, unique_by=lambda k: (type(k), k)),
    name=st.sampled_from(["lppo", "sec", "saidpo"]),
)
def test_any_key_set_round_trips_through_a_file(keys, name, tmp_path_factory) -> None:
    """Bugs caught: keys re-typed on load ("1" vs 1), non-ASCII or lone-surrogate keys
    mangled by the UTF-8 blob, a length dtype that overflows, or key order lost."""
    s = make_strategy(name, group_size=4, seed=0)
    arr = np.empty(len(keys), dtype=object)
    arr[:] = keys
    s.add_samples(arr, has_solution=np.ones(len(keys), bool))
    s.observe(GroupResults.build(arr, np.ones((len(keys), 4)) * 0.5))
    path = tmp_path_factory.mktemp("keys") / "s.npz"
    s.save(path)
    t = make_strategy(name, group_size=4, seed=1)
    t.load(path)
    assert t.stats.index.all_keys() == s.stats.index.all_keys()
    assert [type(k) for k in t.stats.index.all_keys()] == [type(k) for k in keys]
    assert t.state_checksum() == s.state_checksum()
    np.testing.assert_array_equal(t.select(3), s.select(3))


def test_string_keys_are_arrays_not_json(tmp_path) -> None:
    """The reported bug: a million string keys sat in the JSON metadata (122 MB files)."""
    keys = [f"problem-{i:07d}" for i in range(5000)]
    s = make_strategy("uniform")
    s.add_samples(keys)
    path = tmp_path / "s.npz"
    s.save(path)
    with np.load(path) as z:
        meta = str(z["__meta__"])
        blob = next(z[k] for k in z.files if k.endswith("/utf8"))
        lengths = next(z[k] for k in z.files if k.endswith("/lengths"))
    assert "problem-0000001" not in meta and len(meta) < 5000
    assert blob.nbytes == 15 * 5000 and lengths.dtype == np.uint8
    long_key = "x" * 300  # lengths widen to uint16
    s.add_samples([long_key])
    s.save(path)
    t = make_strategy("uniform")
    t.load(path)
    assert t.stats.index.all_keys()[-1] == long_key


def test_version_1_state_still_loads() -> None:
    """Files written before the key arrays and `last_event_guided_only` load unchanged."""
    s = driven("lppo", keys=[f"k{i}" for i in range(40)])
    state = s.state_dict()
    v1 = copy.deepcopy(state)
    v1["version"] = 1
    v1.pop("role_types")
    v1["stats"]["index"] = {"identity": False, "keys": s.stats.index.all_keys()}
    v1["stats"]["columns"].pop("last_event_guided_only")
    json.dumps(v1["stats"]["index"])
    t = make_strategy("lppo", group_size=4, seed=5)
    t.load_state_dict(v1)
    assert t.stats.index.all_keys() == s.stats.index.all_keys()
    for c in s.stats.columns:
        if c != "last_event_guided_only":
            np.testing.assert_array_equal(t.stats[c], s.stats[c])
    assert not t.stats["last_event_guided_only"].any()


def test_sample_stats_from_state_dict_validates_on_its_own() -> None:
    s = SampleStats()
    s.observe(GroupResults.build([1, 2], [[1.0], [0.0]]))
    st_ = s.state_dict()
    st_["columns"]["ema"] = np.array([0.5, np.inf])
    with pytest.raises(ValueError, match=r"\['ema'\] must lie in .* row 1"):
        SampleStats.from_state_dict(st_)
