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
pool sits in 1024 scattered string objects, and every Python-level pass over it (`tolist`,
a type check, dict probes) pays a cache miss per key. A step reads the same batch up to
seven times (select, plan, `RolloutPlan`, `GroupResults`, observe, keep, weights), so
batches already checked are recognised by the identity of their key objects (`_Recall`)
instead of being read again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import repeat

import numpy as np

__all__ = ["KeyIndex", "as_key_array", "validate_keys", "encode_keys"]

Key = int | str
_PLAIN = frozenset({int, str})  # key types that need no normalisation
_RECENT = 4  # batches remembered per `_Recall`


class _Recall:
    """The last few object-key batches and what was learned about them (rows, validity).

    An object array's raw bytes are its element pointers, so `arr.tobytes()` names the
    exact key objects, in order, without touching them (~1 µs for 1024 keys). Each entry
    holds its own copy of the batch, so its key objects stay alive and their addresses
    cannot be reused by other objects; int and str are immutable, so the same objects in
    the same order are the same keys. A batch edited in place after it was remembered
    therefore no longer matches, and is read again.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[bytes, np.ndarray, object]] = []

    def get(self, arr: np.ndarray) -> object | None:
        """What was stored for a batch of the very same key objects, else None."""
        sig = _identities(arr)
        for known, _, value in self._entries:
            if known == sig:
                return value
        return None

    def put(self, arr: np.ndarray, value: object) -> None:
        """Remember `value` for `arr` (a 1-D object array of plain int/str keys)."""
        # the copy keeps the key objects alive whatever the caller does to `arr`
        self._entries.insert(0, (_identities(arr), arr.copy(), value))
        del self._entries[_RECENT:]


def _identities(arr: np.ndarray) -> bytes:
    """Which objects an object array holds, in order: its raw element pointers."""
    return arr.tobytes()


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
    Mixed int/str sequences become object arrays instead. A bare string is refused: it
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
    return np.asarray(seq)


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
        self._keys: np.ndarray | None = None  # object array, row → key (dict mode)
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
        keys (`_Recall`); any other batch of object keys takes one pass: `tolist`, a type
        check, one dict probe per key.
        """
        arr = as_key_array(keys, name)
        if arr.dtype.kind != "O" or arr.ndim != 1 or self._identity:
            arr = validate_keys(arr, name)
            return arr, self.lookup(arr)
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
        if keys is None or keys.shape[0] < need:
            cap = max(16, keys.shape[0] if keys is not None else 16)
            while cap < need:
                cap *= 2
            grown = np.empty(cap, dtype=object)
            if keys is not None:
                grown[:n0] = keys[:n0]
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
        """Keys at `rows` (int64 array in identity mode, else an object array)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._identity:
            return rows.copy()
        keys = self._keys[rows]  # type: ignore[index]
        # the batch will be looked up and validated next; the index holds only plain keys
        self._recent.put(keys, rows.copy())
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
        keys = _decode_keys(state, where)
        row_of = dict(zip(keys, range(len(keys)), strict=True))
        if len(row_of) != len(keys):  # a repeated key collapsed into one entry
            raise ValueError(f"{where} holds duplicate keys")
        idx._identity = False
        idx._row_of = row_of
        idx._append_keys(keys)
        idx._n = len(keys)
        return idx


def encode_keys(keys: list[Key]) -> dict:
    """The state of a dict-mode index holding `keys` (plain ints and strs, in row order).

    `ints` (int64) when every key is an int; else `utf8` (uint8 blob of the keys' UTF-8
    bytes, ints written in decimal), `lengths` (bytes per key, the smallest unsigned dtype
    that fits) and, for mixed pools, `is_int` (bool per key).
    """
    kinds = set(map(type, keys))
    if kinds == {int}:
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


def _decode_keys(state: dict, where: str) -> list[Key]:
    """Keys of a dict-mode index state (array layouts, or the JSON list of version 1)."""
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
