"""`UnicodeText`: a Gymnasium `Text` space that accepts any unicode string.

Why: `gymnasium.spaces.Text.contains` rejects any character outside a finite charset
(alphanumeric by default), and the env checker warns when an observation is outside
its space. Math prompts carry LaTeX, `$`, `×`, `£` and arbitrary unicode, so
membership here checks only the type and the length. Sampling still draws from a
finite charset (sampling needs one); the charset below adds what math text uses.

Why shared-memory functions of our own: `AsyncVectorEnv` (shared memory is its
default) stores a `Text` observation as indices into the space's charset, so any
character outside it (":" in a prompt) failed with KeyError in the worker; and it
reads the buffer once, at creation, which for strings (immutable) is a snapshot, so
every later observation would read "". A `UnicodeText` slot stores its length then its
code points, so any string fits, and it is read through a live view (`SharedTexts`).
"""

from __future__ import annotations

import multiprocessing as mp
import string
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from gymnasium.spaces import Text
from gymnasium.vector.utils import (
    create_shared_memory,
    read_from_shared_memory,
    write_to_shared_memory,
)

__all__ = ["UnicodeText", "SharedTexts", "SAMPLE_CHARSET"]

SAMPLE_CHARSET = string.ascii_letters + string.digits + " +-*/=()[]{}^_.,$\\\n"


class UnicodeText(Text):
    r"""Any `str` whose length is in [min_length, max_length].

    Example:
        >>> space = UnicodeText(max_length=16)
        >>> space.contains("½ × $\\frac{1}{2}$")
        True
        >>> space.contains(b"bytes")
        False
    """

    def __init__(
        self, max_length: int, *, min_length: int = 0, seed: int | None = None
    ) -> None:
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        """Type and length only: every unicode character is allowed."""
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return (
            isinstance(other, UnicodeText)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )


# ----------------------------------------------------------------------- AsyncVectorEnv support


@create_shared_memory.register(UnicodeText)
def _create_unicode_shared_memory(space: UnicodeText, n: int = 1, ctx: ModuleType = mp) -> Any:
    """One int32 slot per env: the length, then max_length code points."""
    return ctx.Array(np.dtype(np.int32).char, n * (space.max_length + 1))


class SharedTexts(Sequence[str]):
    """The n strings in a shared-memory buffer, decoded when read (a live view).

    `AsyncVectorEnv` keeps this view and returns a deep copy of it (a plain tuple) on
    every `reset`/`step`, the way it returns copies of a numpy view for array spaces.
    """

    def __init__(self, data: np.ndarray) -> None:
        self._data = data  # (n, 1 + max_length) int32: length, then code points

    def __len__(self) -> int:
        return self._data.shape[0]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self)[index]
        row = self._data[index]
        return "".join(map(chr, row[1 : 1 + int(row[0])].tolist()))

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return repr(tuple(self))


@read_from_shared_memory.register(UnicodeText)
def _read_unicode_from_shared_memory(
    space: UnicodeText, shared_memory: Any, n: int = 1
) -> SharedTexts:
    data = np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape(
        (n, space.max_length + 1)
    )
    return SharedTexts(data)


@write_to_shared_memory.register(UnicodeText)
def _write_unicode_to_shared_memory(
    space: UnicodeText, index: int, values: str, shared_memory: Any
) -> None:
    if not space.contains(values):
        raise ValueError(f"UnicodeText expects a str of at most {space.max_length} characters, "
                         f"got {type(values).__name__} of length {len(values)}")
    size = space.max_length + 1
    destination = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)
    slot = destination[index * size : (index + 1) * size]
    slot[0] = len(values)
    slot[1 : 1 + len(values)] = np.fromiter(map(ord, values), np.int32, len(values))
