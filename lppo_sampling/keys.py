"""Stable sample keys → dense table rows.

Samples are identified by keys from the data (an int id or a string), never by their
position in a shuffled list, because frameworks reorder, filter and shard data (verl's
`extra_info.index`, TRL's repeated prompts). `KeyIndex` maps keys to rows of the
`SampleStats` table and grows as new keys appear.

The common case — integer keys 0..N-1 registered in order — needs no dictionary at all
("identity mode"): the key *is* the row. That keeps a million-sample pool at a few bytes
of index per sample; any other key set switches to a dict once (plus an object array for
row → key, so a batch of keys is one fancy index). On disk the keys are numpy arrays
(an int64 array, or a UTF-8 blob with per-key byte lengths), never JSON: a million
15-character keys cost ~16 bytes each.

String keys cost time where ints do not: a batch of 1024 keys drawn from a million-key
pool held as Python objects sits in 1024 scattered string objects, and every pass over it
(a copy, `tolist`, a type check, dict probes, even freeing it) pays a cache miss per key.
So the index keeps row → key in a plain numpy array where it can: int64 for int keys, a
fixed-width unicode array (`<U w`) for string keys of at most `MAX_STR_WIDTH` characters.
A batch handed out by `keys_of` is then contiguous values, not objects, and a step reads it
up to seven times (select, plan, `RolloutPlan`, `GroupResults`, observe, keep, weights):
batches seen before are recognised by their bytes (`_Recall`) instead of being looked up
again. Mixed int/str pools, longer keys and keys holding a NUL (a numpy string array
drops trailing NULs) stay Python objects; their batches are recognised by the identity of
their key objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import repeat

import numpy as np

__all__ = ["KeyIndex", "as_key_array", "validate_keys", "encode_keys"]

Key = int | str
_PLAIN = frozenset({int, str})  # key types that need no normalisation
_RECENT = 4  # batches remembered per `_Recall`
MAX_STR_WIDTH = 40
"""Longest string key (characters) kept in a numpy unicode array: 160 bytes a key at most,
and wide enough for UUIDs, SHA-1 ids and dataset ids like ``gsm8k/train/01234``."""
_INT64 = np.dtype(np.int64)


class _Recall:
    """The last few key batches and what was learned about them (rows, validity).

    A batch is named by its dtype and raw bytes (`_signature`, ~1 µs for 1024 keys). For
    int and unicode arrays the bytes *are* the keys. For an object array they are its
    element pointers: the exact key objects, in order, named without touching them. Such
    an entry holds its own copy of the batch, so its key objects stay alive and their
    addresses cannot be reused by other objects; int and str are immutable, so the same
    objects in the same order are the same keys. A batch edited in place after it was
    remembered therefore no longer matches, and is read again.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[tuple[str, bytes], np.ndarray | None, object]] = []

    def get(self, arr: np.ndarray) -> object | None:
        """What was stored for a batch of the very same keys (or key objects), else None."""
        sig = _signature(arr)
        for known, _, value in self._entries:
            if known == sig:
                return value
        return None

    def put(self, arr: np.ndarray, value: object) -> None:
        """Remember `value` for `arr` (a 1-D int, unicode or object array of plain keys)."""
        # an object batch's copy keeps its key objects alive whatever the caller does
        alive = arr.copy() if arr.dtype.kind == "O" else None
        self._entries.insert(0, (_signature(arr), alive, value))
        del self._entries[_RECENT:]


def _signature(arr: np.ndarray) -> tuple[str, bytes]:
    """Which keys (values, or for object arrays which objects) an array holds, in order."""
    return arr.dtype.str, arr.tobytes()


# object arrays that `validate_keys` found to hold plain int/str keys (validity depends
# on the key objects alone, so one memo serves every index)
_VALID = _Recall()


def _as_key(k: object) -> Key:
    if isinstance(k, (bool, np.bool_)):
        raise ValueError(f"sample keys must be int or str, got bool {k!r}")
    if isinstance(k, (int, np.integer)):
        return int(k)
    if isinstance(k, (str, np.str_)):
        return str(k)
    raise ValueError(f"sample keys must be int or str, got {type(k).__name__} {k!r}")


def as_key_array(keys: object, name: str = "keys") -> np.ndarray:
    """Keys as a numpy array without numpy's silent coercion of mixed lists.

    `np.asarray(["x", 1])` would turn the int 1 into the string "1" — a different key.
    Mixed int/str sequences become object arrays instead, and so do strings holding a NUL
    (a numpy string array drops trailing NULs: another key). A bare string is refused: it
    is one key, not a sequence of one-character keys.
    """
    if isinstance(keys, np.ndarray):
        return keys
    if isinstance(keys, (str, bytes)):
        raise ValueError(
            f"{name} must be a sequence of sample keys, got a single {type(keys).__name__} "
            f"{keys!r}; pass [{keys!r}] for one key"
        )
    if isinstance(keys, (list, tuple)):
        seq = keys
    else:
        try:
            seq = list(keys)  # type: ignore[call-overload]
        except TypeError:
            raise ValueError(
                f"{name} must be a sequence of int or str sample keys, got {type(keys).__name__}"
            ) from None
    if seq and any(isinstance(k, (str, np.str_)) for k in seq) and not all(
        isinstance(k, (str, np.str_)) for k in seq
    ):
        out = np.empty(len(seq), dtype=object)
        out[:] = [k.item() if isinstance(k, np.generic) else k for k in seq]
        return out
    arr = np.asarray(seq)
    # a numpy string array drops trailing NULs: "a" + NUL would become the key "a"
    if arr.dtype.kind == "U" and arr.ndim == 1 and "\0" in "".join(seq):
        arr = np.empty(len(seq), dtype=object)
        arr[:] = [str(k) for k in seq]
    return arr


def validate_keys(keys: object, name: str = "keys") -> np.ndarray:
    """`keys` as a 1-D int, str or object array of plain int/str keys; `ValueError` otherwise.

    Object arrays holding numpy scalars are normalised to Python ints and strs, so that
    every key has one spelling in the index.
    """
    arr = as_key_array(keys, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)  # emptiness is the caller's to judge
    kind = arr.dtype.kind
    if kind in "iuU":
        return arr
    if kind != "O":
        raise ValueError(f"{name} must hold int or str sample keys, got dtype {arr.dtype}")
    if _VALID.get(arr) is not None:  # this very batch was checked already
        return arr
    items = arr.tolist()
    if set(map(type, items)) <= _PLAIN:
        _VALID.put(arr, True)
        return arr
    out = np.empty(len(items), dtype=object)
    out[:] = [_as_key(k) for k in items]
    return out


class KeyIndex:
    """Bidirectional map between sample keys and dense rows 0..len-1."""

    def __init__(self) -> None:
        self._n = 0
        self._identity = True
        self._row_of: dict[Key, int] | None = None
        # row → key (dict mode): int64, `<U w` or object array (see `_storage_dtype`)
        self._keys: np.ndarray | None = None
        # rows of the last few batches found or handed out (dict mode): a step looks up
        # the same batch up to five times (select, plan, observe, keep, weights). Rows
        # never change once assigned (the index only grows), so a remembered answer
        # stays right; only batches of known keys are remembered.
        self._recent = _Recall()
        # `state_dict`'s key arrays, kept until the key set changes (see `_append_keys`)
        self._encoded: dict | None = None

    def __len__(self) -> int:
        return self._n

    @property
    def identity(self) -> bool:
        """True while keys are exactly the ints 0..len-1 (row == key)."""
        return self._identity

    # ------------------------------------------------------------------ lookup
    def lookup(self, keys: Sequence[object] | np.ndarray) -> np.ndarray:
        """Rows of `keys` (validated with `validate_keys`), -1 where a key is unknown.

        Never modifies the index.
        """
        arr = np.asarray(keys)
        if self._identity and arr.dtype.kind in "iu":
            rows = arr.astype(np.int64, copy=True).reshape(-1)
            rows[(rows < 0) | (rows >= self._n)] = -1
            return rows
        return self._lookup_items(arr.reshape(-1).tolist())

    def find(self, keys: object, name: str = "keys") -> tuple[np.ndarray, np.ndarray]:
        """Validated keys (see `validate_keys`) and their rows, -1 where unknown.

        A batch handed out by `keys_of` or found before is answered without reading its
        keys (`_Recall`); any other batch takes one pass: `tolist`, (for object arrays) a
        type check, one dict probe per key.
        """
        arr = as_key_array(keys, name)
        if arr.ndim != 1 or self._identity:
            arr = validate_keys(arr, name)
            return arr, self.lookup(arr)
        if arr.dtype.kind != "O":
            arr = validate_keys(arr, name)
            same = self._as_stored(arr)
            known = None if same is None else self._recent.get(same)
            if known is not None:
                return arr, known.copy()  # type: ignore[attr-defined]
            rows = self.lookup(arr)
            if same is not None and rows.size and rows.min() >= 0:
                self._recent.put(same, rows.copy())
            return arr, rows
        known = self._recent.get(arr)  # a remembered batch holds valid, known keys
        if known is not None:
            return arr, known.copy()  # type: ignore[attr-defined]
        items = arr.tolist()
        if not set(map(type, items)) <= _PLAIN:  # numpy scalars or bad keys: normalise
            arr = validate_keys(arr, name)
            items = arr.tolist()
        rows = self._lookup_items(items)
        if rows.size and rows.min() >= 0:
            self._recent.put(arr, rows.copy())
        return arr, rows

    def _as_stored(self, arr: np.ndarray) -> np.ndarray | None:
        """`arr` (int or unicode) in the dtype `keys_of` hands out; None if it cannot be.

        A batch handed out and passed back then matches its remembered bytes. A narrower
        unicode batch is widened (the same strings); any other dtype is not a batch of ours.
        """
        stored = self._keys.dtype if self._keys is not None else None
        if stored is None or arr.dtype == stored:
            return arr
        if arr.dtype.kind == "U" and stored.kind == "U" and arr.itemsize < stored.itemsize:
            return arr.astype(stored)
        return None

    def _lookup_items(self, items: list) -> np.ndarray:
        """Rows of plain int/str keys (-1 = unknown)."""
        if self._identity:
            out = np.full(len(items), -1, dtype=np.int64)
            for i, k in enumerate(items):
                if type(k) is int and 0 <= k < self._n:
                    out[i] = k
            return out
        get = self._row_of.get  # type: ignore[union-attr]
        return np.fromiter(map(get, items, repeat(-1)), np.int64, len(items))

    def validate(self, keys: Sequence[object] | np.ndarray, name: str = "keys") -> np.ndarray:
        """Return `keys` as a 1-D array after checking every key is an int or str."""
        return validate_keys(keys, name)

    # ------------------------------------------------------------ registration
    def add(self, keys: Iterable[object]) -> np.ndarray:
        """Register new keys (in order) and return the rows of all given keys.

        Known keys keep their row; a key repeated within `keys` gets one row.
        """
        arr, rows = self.find(keys)
        return self.add_found(arr, rows)

    def add_found(self, arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """`add` for keys and rows already returned by `find` (no second pass over them)."""
        missing = rows < 0
        if not missing.any():
            return rows
        absent = arr[missing].tolist()
        new = list(dict.fromkeys(absent))
        n0 = self._n
        if (
            self._identity
            and set(map(type, new)) == {int}
            and new == list(range(n0, n0 + len(new)))
        ):
            self._n += len(new)
        else:
            self._to_dict_mode()
            self._row_of.update(zip(new, range(n0, n0 + len(new)), strict=True))  # type: ignore[union-attr]
            self._append_keys(new)
            self._n += len(new)
        if len(new) == len(absent):  # no repeats among the new keys: rows in order
            rows[missing] = np.arange(n0, n0 + len(new))
            return rows
        return self.lookup(arr)

    def _append_keys(self, new: list[Key]) -> None:
        self._encoded = None  # the only writer of `_keys`: the saved key arrays go stale
        n0, need = self._n, self._n + len(new)
        keys = self._keys
        dtype = _storage_dtype(new, None if keys is None else keys.dtype, n0)
        if keys is None or keys.shape[0] < need or keys.dtype != dtype:
            cap = max(16, keys.shape[0] if keys is not None else 16)
            while cap < need:
                cap *= 2
            grown = np.empty(cap, dtype=dtype)
            if keys is not None:
                grown[:n0] = keys[:n0]  # int64 / str values become Python ints / strs
            self._keys = keys = grown
        keys[n0:need] = new

    def _to_dict_mode(self) -> None:
        if not self._identity:
            return
        self._row_of = {k: k for k in range(self._n)}
        self._keys = None
        self._identity = False
        n, self._n = self._n, 0
        self._append_keys(list(range(n)))
        self._n = n

    # -------------------------------------------------------------- row → key
    def keys_of(self, rows: np.ndarray) -> np.ndarray:
        """Keys at `rows`, as the index stores them (see `_storage_dtype`).

        An int64 array for int keys, a `<U w` array for string keys of at most
        `MAX_STR_WIDTH` characters, else (mixed or longer keys) an object array.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self._identity:
            return rows.copy()
        keys = self._keys[rows]  # type: ignore[index]
        # the batch will be looked up and validated next; the index holds only plain keys
        self._recent.put(keys, rows.copy())
        if keys.dtype.kind == "O":
            _VALID.put(keys, True)
        return keys

    def all_keys(self) -> list[Key]:
        """Every key, in row order."""
        if self._identity:
            return list(range(self._n))
        return self._keys[: self._n].tolist()  # type: ignore[index]

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """The index as numpy arrays (kept out of JSON metadata by `Strategy.save`).

        Identity mode: `{"identity": True, "size": n}`; otherwise `encode_keys` of every
        key. The encoding is kept until the key set changes: a trainer snapshots the
        state every step, and encoding a million string keys takes ~0.5 s. Callers get
        copies, so editing a returned state cannot corrupt the next one.
        """
        if self._identity:
            return {"identity": True, "size": self._n}
        if self._encoded is None:
            self._encoded = encode_keys(self.all_keys())
        return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self._encoded.items()}

    @classmethod
    def from_state_dict(cls, state: dict, where: str = "state_dict['stats']['index']") -> KeyIndex:
        """Rebuild an index saved by `state_dict`; `ValueError` naming the bad entry."""
        if not isinstance(state, dict):
            raise ValueError(f"{where} must be a dict, got {type(state).__name__}")
        idx = cls()
        if state.get("identity"):
            size = state.get("size")
            if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or (
                size < 0
            ):
                raise ValueError(f"{where}['size'] must be an int >= 0, got {size!r}")
            idx._n = int(size)
            return idx
        decoded = _decode_keys(state, where)
        keys = decoded.tolist() if isinstance(decoded, np.ndarray) else decoded
        row_of = dict(zip(keys, range(len(keys)), strict=True))
        if len(row_of) != len(keys):  # a repeated key collapsed into one entry
            raise ValueError(f"{where} holds duplicate keys")
        idx._identity = False
        idx._row_of = row_of
        if isinstance(decoded, np.ndarray):  # already the array `keys_of` reads
            idx._keys = decoded
        else:
            idx._append_keys(keys)
        idx._n = len(keys)
        return idx


def _fit_int64(keys: list[int]) -> bool:
    """Whether every int key fits an int64 array (Python ints have no bound)."""
    return not keys or (-(2**63) <= min(keys) and max(keys) < 2**63)


def _storage_dtype(new: list[Key], current: np.dtype | None, n_current: int) -> np.dtype:
    """The dtype that holds the index's keys once `new` (plain ints/strs) is appended.

    int64 while every key is an int in range; `<U w` while every key is a str of at most
    `MAX_STR_WIDTH` characters without NUL (numpy drops trailing NULs: "a" + NUL would
    read back as "a"); else object. Never narrows, and never goes back from object.
    """
    if current is not None and current.kind == "O":
        return current
    kinds = set(map(type, new))
    empty = current is None or n_current == 0
    if kinds <= {int} and (empty or current == _INT64):
        if _fit_int64(new):
            return _INT64
        return np.dtype(object)
    if kinds <= {str} and (empty or current.kind == "U"):  # type: ignore[union-attr]
        width = max(map(len, new), default=0)
        # any NUL, not only a trailing one: one C-level scan instead of a call per key
        if width <= MAX_STR_WIDTH and "\0" not in "".join(new):  # type: ignore[arg-type]
            have = 0 if empty else current.itemsize // 4  # type: ignore[union-attr]
            return np.dtype(f"<U{max(width, have, 1)}")
    return np.dtype(object)


def encode_keys(keys: list[Key]) -> dict:
    """The state of a dict-mode index holding `keys` (plain ints and strs, in row order).

    `ints` (int64) when every key is an int that fits; else `utf8` (uint8 blob of the keys'
    UTF-8 bytes, ints written in decimal), `lengths` (bytes per key, the smallest unsigned
    dtype that fits) and, where some key is an int, `is_int` (bool per key).
    """
    kinds = set(map(type, keys))
    if kinds == {int} and _fit_int64(keys):
        return {"identity": False, "ints": np.asarray(keys, dtype=np.int64)}
    enc = [(k if type(k) is str else str(k)).encode("utf-8", "surrogatepass") for k in keys]
    lengths = np.fromiter(map(len, enc), np.int64, len(enc))
    top = int(lengths.max()) if lengths.size else 0
    dt = next(d for d in (np.uint8, np.uint16, np.uint32, np.uint64) if top <= np.iinfo(d).max)
    out = {
        "identity": False,
        "utf8": np.frombuffer(b"".join(enc), dtype=np.uint8).copy(),
        "lengths": lengths.astype(dt),
    }
    if int in kinds:
        out["is_int"] = np.fromiter((type(k) is int for k in keys), bool, len(keys))
    return out


def _decode_keys(state: dict, where: str) -> list[Key] | np.ndarray:
    """Keys of a dict-mode index state (array layouts, or the JSON list of version 1).

    Short ASCII string keys come back as the `<U w` array the index stores (decoded by
    numpy, ~10x faster than a `decode` per key); any other keys as a list.
    """
    if "keys" in state:  # version-1 files: keys in the JSON metadata
        raw = state["keys"]
        if not isinstance(raw, (list, tuple, np.ndarray)):
            raise ValueError(f"{where}['keys'] must be a list, got {type(raw).__name__}")
        try:
            return [_as_key(k) for k in (raw.tolist() if isinstance(raw, np.ndarray) else raw)]
        except ValueError as e:
            raise ValueError(f"{where}['keys']: {e}") from None
    if "ints" in state:
        ints = np.asarray(state["ints"])
        if ints.ndim != 1 or ints.dtype.kind not in "iu":
            raise ValueError(
                f"{where}['ints'] must be a 1-D int array, got {ints.dtype} {ints.shape}"
            )
        return ints.tolist()
    for field in ("utf8", "lengths"):
        if field not in state:
            raise ValueError(f"{where} lacks the entry {field!r}")
    blob, lengths = np.asarray(state["utf8"]), np.asarray(state["lengths"])
    if blob.ndim != 1 or blob.dtype != np.uint8:
        raise ValueError(
            f"{where}['utf8'] must be a 1-D uint8 array, got {blob.dtype} {blob.shape}"
        )
    if lengths.ndim != 1 or lengths.dtype.kind != "u":
        raise ValueError(
            f"{where}['lengths'] must be a 1-D unsigned int array, got {lengths.dtype} "
            f"{lengths.shape}"
        )
    ends = np.cumsum(lengths, dtype=np.int64)
    if (ends[-1] if ends.size else 0) != blob.shape[0]:
        raise ValueError(
            f"{where}['lengths'] sum to {int(ends[-1]) if ends.size else 0} bytes but "
            f"['utf8'] holds {blob.shape[0]}"
        )
    if "is_int" not in state:
        fast = _decode_ascii(blob, lengths.astype(np.int64))
        if fast is not None:
            return fast
    data = blob.tobytes()
    starts = (ends - lengths.astype(np.int64)).tolist()
    try:
        keys: list[Key] = [
            data[a:b].decode("utf-8", "surrogatepass")
            for a, b in zip(starts, ends.tolist(), strict=True)
        ]
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}['utf8'] is not valid UTF-8: {e}") from None
    if "is_int" in state:
        is_int = np.asarray(state["is_int"])
        if is_int.dtype != np.bool_ or is_int.shape != lengths.shape:
            raise ValueError(f"{where}['is_int'] must be a bool array of shape {lengths.shape}")
        for i in np.flatnonzero(is_int).tolist():
            try:
                keys[i] = int(keys[i])
            except ValueError:
                raise ValueError(f"{where}: key {i} is marked int but reads {keys[i]!r}") from None
    return keys


def _decode_ascii(blob: np.ndarray, lengths: np.ndarray) -> np.ndarray | None:
    """Keys of a checked UTF-8 blob as a `<U w` array; None unless every key is short ASCII.

    Short: at most `MAX_STR_WIDTH` characters, and no NUL (see `_storage_dtype`).
    """
    n = lengths.shape[0]
    width = int(lengths.max()) if n else 0
    if not n or width > MAX_STR_WIDTH or (blob.size and (blob.max() >= 128 or blob.min() == 0)):
        return None
    width = max(width, 1)
    if blob.shape[0] == n * width:  # every key has the same length: the blob is the grid
        grid = blob.reshape(n, width)
    else:  # one NUL-padded row per key; a mask fills the rows' first bytes in order
        grid = np.zeros((n, width), np.uint8)
        grid[np.arange(width) < lengths[:, None]] = blob
    return grid.view(f"S{width}").ravel().astype(f"<U{width}")
