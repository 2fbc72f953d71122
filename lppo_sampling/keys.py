"""Stable sample keys → dense table rows.

Samples are identified by keys from the data (an int id or a string), never by their
position in a shuffled list, because frameworks reorder, filter and shard data (verl's
`extra_info.index`, TRL's repeated prompts). `KeyIndex` maps keys to rows of the
`SampleStats` table and grows as new keys appear.

The common case — integer keys 0..N-1 registered in order — needs no dictionary at all
("identity mode"): the key *is* the row. That keeps a million-sample pool at a few bytes
of index per sample; any other key set switches to a dict once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["KeyIndex", "as_key_array"]

Key = int | str


def _as_key(k: object) -> Key:
    if isinstance(k, (bool, np.bool_)):
        raise ValueError(f"sample keys must be int or str, got bool {k!r}")
    if isinstance(k, (int, np.integer)):
        return int(k)
    if isinstance(k, (str, np.str_)):
        return str(k)
    raise ValueError(f"sample keys must be int or str, got {type(k).__name__} {k!r}")


def as_key_array(keys: object) -> np.ndarray:
    """Keys as a numpy array without numpy's silent coercion of mixed lists.

    `np.asarray(["x", 1])` would turn the int 1 into the string "1" — a different key.
    Mixed int/str sequences become object arrays instead.
    """
    if isinstance(keys, np.ndarray):
        return keys
    seq = list(keys) if not isinstance(keys, (list, tuple)) else keys
    if seq and any(isinstance(k, (str, np.str_)) for k in seq) and not all(
        isinstance(k, (str, np.str_)) for k in seq
    ):
        out = np.empty(len(seq), dtype=object)
        out[:] = [k.item() if isinstance(k, np.generic) else k for k in seq]
        return out
    return np.asarray(seq)


class KeyIndex:
    """Bidirectional map between sample keys and dense rows 0..len-1."""

    def __init__(self) -> None:
        self._n = 0
        self._identity = True
        self._row_of: dict[Key, int] | None = None
        self._keys: list[Key] | None = None

    def __len__(self) -> int:
        return self._n

    @property
    def identity(self) -> bool:
        """True while keys are exactly the ints 0..len-1 (row == key)."""
        return self._identity

    # ------------------------------------------------------------------ lookup
    def lookup(self, keys: Sequence[object] | np.ndarray) -> np.ndarray:
        """Rows of `keys`, -1 where a key is unknown. Never modifies the index."""
        arr = np.asarray(keys)
        if self._identity and arr.dtype.kind in "iu":
            rows = arr.astype(np.int64, copy=True).reshape(-1)
            rows[(rows < 0) | (rows >= self._n)] = -1
            return rows
        if self._identity:
            out = np.full(arr.size, -1, dtype=np.int64)
            for i, k in enumerate(arr.reshape(-1).tolist()):
                if isinstance(k, int) and not isinstance(k, bool) and 0 <= k < self._n:
                    out[i] = k
            return out
        get = self._row_of.get  # type: ignore[union-attr]
        return np.fromiter((get(k, -1) for k in arr.reshape(-1).tolist()), np.int64, arr.size)

    def validate(self, keys: Sequence[object] | np.ndarray, name: str = "keys") -> np.ndarray:
        """Return `keys` as a 1-D array after checking every key is an int or str."""
        arr = as_key_array(keys)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.size == 0:
            return arr.astype(np.int64)  # emptiness is the caller's to judge
        if arr.dtype.kind not in "iuUO":
            raise ValueError(f"{name} must hold int or str sample keys, got dtype {arr.dtype}")
        if arr.dtype.kind == "O":
            for k in arr.tolist():
                _as_key(k)
        return arr

    # ------------------------------------------------------------ registration
    def add(self, keys: Iterable[object]) -> np.ndarray:
        """Register new keys (in order) and return the rows of all given keys.

        Known keys keep their row; a key repeated within `keys` gets one row.
        """
        arr = as_key_array(keys)
        rows = self.lookup(arr)
        missing = rows < 0
        if not missing.any():
            return rows
        new = list(dict.fromkeys(_as_key(k) for k in arr[missing].tolist()))
        if self._identity and all(isinstance(k, int) for k in new) and (
            new == list(range(self._n, self._n + len(new)))
        ):
            self._n += len(new)
        else:
            self._to_dict_mode()
            for k in new:
                self._row_of[k] = self._n  # type: ignore[index]
                self._keys.append(k)  # type: ignore[union-attr]
                self._n += 1
        return self.lookup(arr)

    def _to_dict_mode(self) -> None:
        if not self._identity:
            return
        self._keys = list(range(self._n))
        self._row_of = {k: k for k in self._keys}
        self._identity = False

    # -------------------------------------------------------------- row → key
    def keys_of(self, rows: np.ndarray) -> np.ndarray:
        """Keys at `rows` (int64 array in identity mode, else an object array)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._identity:
            return rows.copy()
        out = np.empty(rows.shape[0], dtype=object)
        keys = self._keys
        for i, r in enumerate(rows.tolist()):
            out[i] = keys[r]  # type: ignore[index]
        return out

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """JSON-serialisable description of the index."""
        if self._identity:
            return {"identity": True, "size": self._n}
        return {"identity": False, "keys": list(self._keys)}  # type: ignore[arg-type]

    @classmethod
    def from_state_dict(cls, state: dict) -> KeyIndex:
        """Rebuild an index saved by `state_dict`."""
        idx = cls()
        if state.get("identity"):
            idx._n = int(state["size"])
        else:
            keys = [_as_key(k) for k in state["keys"]]
            if len(set(keys)) != len(keys):
                raise ValueError("state_dict['stats']['index']['keys'] holds duplicate keys")
            idx._identity = False
            idx._keys = keys
            idx._row_of = {k: i for i, k in enumerate(keys)}
            idx._n = len(keys)
        return idx
