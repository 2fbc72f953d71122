"""The exception tree of `lppo_env`.

Why a tree: callers catch one base (`LppoEnvError`) or one precise case, and the
standard bases (`ValueError`, `KeyError`) keep working for code that does not know us.
Messages follow one template, "expected X, got Y", and data errors carry the file,
row and field as attributes so tools can point at the offending line.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "LppoEnvError", "DataError", "DuplicateIdError", "UnknownDatasetError", "VerifierError",
]


class LppoEnvError(Exception):
    """Base class of every error raised on purpose by `lppo_env`."""


class DataError(LppoEnvError, ValueError):
    """A data file or row does not have the expected shape.

    Attributes:
        file: the offending file (or a dataset name for embedded data), or None.
        row: 1-based row number (JSONL line or Parquet row + 1), or None for file-level errors.
        field: the offending field, or None when the whole row is unreadable.
        reason: the bare "expected X, got Y" message without the location.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.row = row
        self.field = field
        self.reason = reason
        parts = []
        if self.file is not None:
            parts.append(self.file)
        if row is not None:
            parts.append(f"row {row}")
        if field is not None:
            parts.append(f"field {field!r}")
        where = ", ".join(parts)
        super().__init__(f"{where}: {reason}" if where else reason)


class DuplicateIdError(DataError):
    """Two problems share one id; stable ids are what the sampler keys its statistics on."""


class UnknownDatasetError(LppoEnvError, ValueError):
    """`load_problems` got a name that is neither a registered dataset nor an existing file."""


class VerifierError(LppoEnvError, RuntimeError):
    """The math-verify workers cannot run here; raised rather than scoring items 0."""
