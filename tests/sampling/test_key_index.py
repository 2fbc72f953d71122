"""What the key index remembers must never change an answer.

Two caches make string keys cheap (see `lppo_sampling.keys`): batches already checked are
recognised by the identity of their key objects, and the saved key arrays are kept until
the key set changes. Each property drives a strategy through a random sequence of calls
and compares every answer with one computed from scratch; each docstring names the
deliberate bug it catches.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lppo_sampling import GroupResults, KeyIndex, make_strategy
from lppo_sampling import keys as keys_module
from lppo_sampling.keys import encode_keys, validate_keys

SET = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

a_key = st.one_of(st.integers(-3, 40), st.text(alphabet="abé\U0001f600", max_size=3))


def _objects(keys: list) -> np.ndarray:
    """`keys` as a 1-D object array (numpy would turn a mixed list into strings)."""
    arr = np.empty(len(keys), dtype=object)
    arr[:] = keys
    return arr


def _typed(keys: list) -> list[tuple[type, object]]:
    return [(type(k), k) for k in keys]


def _assert_index_state_is_fresh(index: KeyIndex) -> None:
    """`index.state_dict()` equals an encoding computed now, and decodes to the same keys."""
    got = index.state_dict()
    if index.identity:
        assert got == {"identity": True, "size": len(index)}
        return
    want = encode_keys(index.all_keys())
    assert sorted(got) == sorted(want)
    for field, value in want.items():
        if isinstance(value, np.ndarray):
            assert got[field].dtype == value.dtype, field
            np.testing.assert_array_equal(got[field], value, err_msg=field)
        else:
            assert got[field] == value, field
    assert _typed(KeyIndex.from_state_dict(got).all_keys()) == _typed(index.all_keys())


def _scribble(state: dict) -> None:
    """Overwrite every key array of a returned state in place, as a careless caller might."""
    for value in state["stats"]["index"].values():
        if isinstance(value, np.ndarray) and value.size:
            value[...] = value[::-1].copy() if value.dtype != np.bool_ else ~value


op = st.one_of(
    st.tuples(st.just("add"), st.lists(a_key, min_size=1, max_size=6)),
    st.tuples(st.just("observe"), st.lists(a_key, min_size=1, max_size=4)),
    st.tuples(st.just("snapshot"), st.just(None)),
    st.tuples(st.just("restore"), st.integers(0, 50)),
)


@SET
@given(ops=st.lists(op, min_size=1, max_size=14))
def test_saved_key_arrays_always_equal_a_fresh_encoding(ops) -> None:
    """After any sequence of add_samples, observe (which registers new keys), state_dict
    (its arrays then scribbled over by the caller) and load_state_dict, the index's saved
    key arrays equal `encode_keys` of its keys now, and decode to the same typed keys.

    Bugs caught: the cached encoding not dropped when keys are added (`_append_keys`
    leaves `_encoded` set: a checkpoint silently loses the newest keys), and the cache
    handed out without copying (a caller editing a returned state corrupts every later
    checkpoint).
    """
    s = make_strategy("lppo", group_size=4, seed=0)
    snapshots: list[dict] = []
    for kind, arg in ops:
        if kind == "add":
            s.add_samples(_objects(arg))
        elif kind == "observe":
            s.observe(GroupResults.build(_objects(arg), np.full((len(arg), 4), 0.5)))
        elif kind == "snapshot":
            state = s.state_dict()
            snapshots.append(copy.deepcopy(state))
            _scribble(state)
        elif snapshots:
            s.load_state_dict(copy.deepcopy(snapshots[arg % len(snapshots)]))
        _assert_index_state_is_fresh(s.stats.index)


def test_state_dict_encodes_the_keys_once_per_key_set(monkeypatch) -> None:
    """Bug caught: the cache dropped (every per-step snapshot re-encodes the whole pool:
    ~0.5 s at a million string keys)."""
    calls = []
    real = keys_module.encode_keys
    monkeypatch.setattr(keys_module, "encode_keys", lambda k: calls.append(len(k)) or real(k))
    s = make_strategy("lppo", group_size=4, seed=0)
    s.add_samples([f"k{i}" for i in range(50)])
    for _ in range(3):
        s.state_dict()
        k = s.select(8)
        s.observe(GroupResults.from_plan(s.plan(k), np.ones((8, 4))))
    assert calls == [50]
    s.add_samples(["new"])
    s.state_dict()
    s.state_dict()
    assert calls == [50, 51]


# ------------------------------------------------------------ remembered batches
EDITS = ["none", "known", "unknown", "bool", "numpy str", "int"]


@SET
@given(
    pool=st.lists(a_key, min_size=2, max_size=25, unique_by=lambda k: (type(k), k)).filter(
        lambda p: any(isinstance(k, str) for k in p)  # a dict-mode index
    ),
    steps=st.lists(
        st.tuples(st.integers(1, 8), st.sampled_from(EDITS), st.integers(0, 10**6)),
        min_size=1, max_size=8,
    ),
)
def test_remembered_batches_answer_like_a_fresh_lookup(pool, steps) -> None:
    """A batch returned by `select` (so remembered), read once, then edited in place,
    gets exactly the answer a fresh lookup gives for its new contents: the new key's row,
    or a refusal for an unknown key, a bool (bool-as-int, also where 1 is a key) or a key
    of another type.

    Bugs caught: batches recognised by the array object (`id(arr)`) instead of by their
    key objects, and a remembered batch held without a copy (the caller's edit then
    edits the memory too) — either way the edited batch is answered with the old rows,
    or a bool slips past validation.
    """
    s = make_strategy("lppo", group_size=4, seed=0)
    s.add_samples(_objects(pool))
    row_of = {(type(k), k): i for i, k in enumerate(s.stats.index.all_keys())}
    rng = np.random.default_rng(len(pool))
    for n, edit, at in steps:
        keys = s.select(n)
        s.weights(keys)  # the batch is now remembered as checked and found
        validate_keys(keys)
        if edit == "known":
            keys[at % len(keys)] = pool[int(rng.integers(len(pool)))]
        elif edit == "unknown":
            keys[at % len(keys)] = "never-added"
        elif edit == "bool":
            keys[at % len(keys)] = bool(at % 2)
        elif edit == "numpy str":
            keys[at % len(keys)] = np.str_(next(k for k in pool if isinstance(k, str)))
        elif edit == "int":
            keys[at % len(keys)] = 10**6 + at  # never in the pool
        items = [k.item() if isinstance(k, np.generic) else k for k in keys.tolist()]
        if any(isinstance(k, bool) for k in items):
            with pytest.raises(ValueError, match="bool"):
                validate_keys(keys)
            with pytest.raises(ValueError, match="bool"):
                s.weights(keys)
        elif any((type(k), k) not in row_of for k in items):
            with pytest.raises(ValueError, match="not in the pool"):
                s.weights(keys)
        else:
            want = np.array([row_of[(type(k), k)] for k in items])
            np.testing.assert_array_equal(s.stats.rows(keys), want)
            np.testing.assert_array_equal(s.weights(keys), s.weighter.weights(s.stats, want))
        assert len(s) == len(pool)  # read calls never grow the pool


def test_a_bad_key_born_where_a_checked_key_lived_is_still_refused() -> None:
    """Checked batches are recognised by their key objects' addresses, so the memory must
    keep those objects alive: a freed key's address is soon reused by a new object.

    Bug caught: a remembered batch held without a copy of its own (or by its bytes
    alone): once the caller overwrites its array and the checked key is freed, a bytes
    object allocated at the key's address passes as a valid key.
    """
    for t in range(20):
        checked = _objects(["".join(["checked-", str(t)])])  # a fresh str, only held here
        validate_keys(checked)
        addr, size = id(checked[0]), sys.getsizeof(checked[0])
        checked[0] = None  # the caller reuses its array: the checked key is freed
        # many objects of the freed string's size: one usually lands on its address
        others = [bytes([1]) * (size - sys.getsizeof(b"")) for _ in range(5000)]
        impostor = next((b for b in others if id(b) == addr), others[0])
        with pytest.raises(ValueError, match="int or str"):
            validate_keys(_objects([impostor]))
        with pytest.raises(ValueError, match="int or str"):
            GroupResults.build(_objects([impostor]), [1.0])


@SET
@given(
    keys=st.lists(a_key, min_size=1, max_size=12, unique_by=lambda k: (type(k), k)),
    again=st.integers(0, 100),
)
def test_a_saved_index_with_a_repeated_key_is_refused(keys, again) -> None:
    """Distinct keys load back in order (1 and "1" are two keys); a key saved twice is
    refused, since two rows cannot share one key.

    Bug caught: the duplicate check dropped (the dict keeps the later row, and the
    earlier row's statistics answer to no key).
    """
    assert _typed(KeyIndex.from_state_dict(encode_keys(keys)).all_keys()) == _typed(keys)
    repeated = keys + [keys[again % len(keys)]]
    with pytest.raises(ValueError, match="duplicate keys"):
        KeyIndex.from_state_dict(encode_keys(repeated))


# ------------------------------------------------------------- how keys are stored
short_text = st.text(alphabet="ab\x00é\U0001f600", max_size=3)
long_text = st.text(alphabet="xyz", min_size=keys_module.MAX_STR_WIDTH - 1,
                    max_size=keys_module.MAX_STR_WIDTH + 1)
big_int = st.integers(-(2**64), 2**64)
storage_keys = st.sampled_from([  # one kind of pool per example, so pure pools are common
    st.one_of(short_text, long_text),
    big_int,
    st.one_of(st.integers(-3, 40), short_text),
])


@SET
@given(data=st.data(), key=storage_keys)
def test_every_storage_hands_back_exactly_the_keys_added(data, key) -> None:
    """Keys added in batches (ints beyond int64, strings with NUL, at and past the width
    limit, mixed pools) come back from `keys_of`, `all_keys` and a saved-and-loaded index
    as exactly the keys added, with their types; and the keys `keys_of` hands out find
    their own rows. Short-string and int64-range pools are stored as plain numpy arrays.

    Bugs caught: the NUL check dropped (numpy stores "a" + NUL as "a": the key changes),
    the width limit ignored by a later, longer batch (a U40 array truncates it), int
    keys past int64 stored in an int64 array or saved as one (overflow), and storage not switched to
    object when a str joins an int pool (numpy turns 1 into "1").
    """
    batches = data.draw(st.lists(
        st.lists(key, min_size=1, max_size=6, unique_by=lambda k: (type(k), k)),
        min_size=1, max_size=5,
    ))
    index = KeyIndex()
    added: list = []
    for batch in batches:
        index.add(_objects(batch))
        added += [k for k in batch if (type(k), k) not in {(type(a), a) for a in added}]
    assert _typed(index.all_keys()) == _typed(added)
    rows = np.arange(len(added))[::-1]
    handed = index.keys_of(rows)
    assert _typed([k.item() if isinstance(k, np.generic) else k for k in handed.tolist()]) == \
        _typed([added[r] for r in rows])
    np.testing.assert_array_equal(index.find(handed)[1], rows)
    kinds = set(map(type, added))
    if not index.identity:
        if kinds == {str} and not any("\0" in k or len(k) > keys_module.MAX_STR_WIDTH
                                      for k in added):
            assert handed.dtype.kind == "U"
        elif kinds == {int} and all(-(2**63) <= k < 2**63 for k in added):
            assert handed.dtype == np.int64
        else:
            assert handed.dtype == object
    loaded = KeyIndex.from_state_dict(index.state_dict())
    assert _typed(loaded.all_keys()) == _typed(added)
    np.testing.assert_array_equal(loaded.find(handed)[1], rows)


@SET
@given(
    pool=st.lists(st.text(alphabet="ab\x00z~é", max_size=6), min_size=1, max_size=30,
                  unique=True),
    pick=st.lists(st.integers(0, 29), min_size=1, max_size=10),
)
def test_numpy_decoding_of_saved_keys_matches_decoding_each_key(pool, pick) -> None:
    """A saved pool of short ASCII keys is decoded by numpy into the array the index
    reads; every other pool one key at a time. Both give the same keys, in order, and a
    batch of known keys passed back in a narrower string array finds the same rows.

    Bugs caught: bytes placed in the wrong row or column (the mask fill, the reshape of
    equal-length keys), a NUL inside a key decoded by numpy (which drops a trailing NUL),
    and a list of keys turned into a numpy string array as is (a key ending in NUL then
    reads as another key).
    """
    loaded = KeyIndex.from_state_dict(encode_keys(pool))
    assert loaded.all_keys() == pool
    keys = [pool[i % len(pool)] for i in pick]
    want = np.array([pool.index(k) for k in keys])
    np.testing.assert_array_equal(loaded.find(keys)[1], want)
    if not any("\0" in k for k in keys):  # a numpy string array cannot hold a NUL key
        np.testing.assert_array_equal(loaded.find(np.array(keys))[1], want)
