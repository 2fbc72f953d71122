"""Argument checks at the API boundary: one-line `ValueError`s that name the argument.

Every public entry point of `lppo_sampling` (strategy constructors, `select`, `add_samples`,
`GroupResults`) funnels user input through these, so that a typo never becomes a numpy
`TypeError` deep inside a rule, a NaN weight, or a silently truthy flag: `True` is not a
group size, `inf` is not a steepness and `"no"` is not a bool.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_range", "check_int", "check_bool", "check_seed", "bool_array"]


def _is_bool(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def check_range(
    name: str, value: object, low: float, high: float, *, closed: str = "both"
) -> float:
    """`value` as a finite float inside the range, or `ValueError` naming `name` and the range.

    `closed` is "both", "left", "right" or "neither". Non-finite values are refused even
    when `high` is inf (κ = inf gives NaN weights), and so are bools and strings.
    """
    lb = "[" if closed in ("both", "left") else "("
    rb = "]" if closed in ("both", "right") else ")"
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{name} must be a finite number in {lb}{low}, {high}{rb}, "
            f"got {type(value).__name__} {value!r}"
        )
    v = float(value)
    lo_ok = v >= low if closed in ("both", "left") else v > low
    hi_ok = v <= high if closed in ("both", "right") else v < high
    if not np.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not (lo_ok and hi_ok):
        raise ValueError(f"{name} must lie in {lb}{low}, {high}{rb}, got {value!r}")
    return v


def check_int(name: str, value: object, low: int | None = None) -> int:
    """`value` as an int (integral floats accepted, bools refused) that is >= `low`."""
    ok = not _is_bool(value) and (
        isinstance(value, numbers.Integral)
        or (isinstance(value, numbers.Real) and float(value).is_integer())
    )
    if not ok or (low is not None and int(value) < low):  # type: ignore[call-overload]
        bound = f" >= {low}" if low is not None else ""
        raise ValueError(f"{name} must be an int{bound}, got {type(value).__name__} {value!r}")
    return int(value)  # type: ignore[call-overload]


def check_bool(name: str, value: object) -> bool:
    """`value` as a bool; only bools and the ints 0/1 are accepted (`"false"` is truthy)."""
    if _is_bool(value) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def check_seed(value: object) -> int | None:
    """A seed for `numpy.random.default_rng`: an int >= 0, or None for fresh entropy."""
    if value is None:
        return None
    return check_int("seed", value, 0)


def bool_array(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    """`value` as a bool array of `shape`; only bools and 0/1 numbers are accepted.

    `np.asarray(["no"], dtype=bool)` is `[True]`: strings, None and other objects are
    refused instead of being read by truthiness.
    """
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    kind = arr.dtype.kind
    if kind == "b":
        return arr
    if kind in "iuf" or (kind == "O" and arr.size and set(map(type, arr.ravel().tolist())) <= {
        bool, int, float, np.bool_
    }):
        with np.errstate(invalid="ignore"):
            bad = ~((arr == 0) | (arr == 1))
        if not bad.any():
            return arr.astype(bool)
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), arr.shape)
        raise ValueError(f"{name} must hold bools (or 0/1), got {arr[i]!r} at index {i}")
    if arr.size == 0:
        return arr.astype(bool)
    first = arr.ravel()[0]
    raise ValueError(
        f"{name} must hold bools (or 0/1), got dtype {arr.dtype} (e.g. {first!r}); "
        f"strings are not read by truthiness"
    )
