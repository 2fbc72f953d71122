"""Model-side signals a curriculum needs, as callables checked at the sampling boundary.

Some curricula decide from what only the policy can tell: PCL's predicted pass rate, ADCL's
re-estimated difficulty, GAIN-RL's angle concentration of hidden states, CLPO's restructured
question. `lppo_sampling` stays numpy-only, so each enters as a callable over sample keys
that the training side supplies (`agents.signals` ships ones computed on our policy). This
module checks them: a missing callable, a wrong shape, NaN or a value outside [0, 1] is a
`ValueError` that names the strategy and the argument, never a silent NaN in a ranking.

`TablePredictor` is a plain numpy predictor (a running estimate per key, with a prior):
the reference implementation of the `Predictor` protocol, for tests, benchmarks and
users whose data comes with difficulty estimates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from lppo_sampling.checks import check_range

__all__ = [
    "Predictor",
    "TablePredictor",
    "require_callable",
    "predict_fn",
    "check_unit_values",
    "check_scores",
]


@runtime_checkable
class Predictor(Protocol):
    """A pass-rate predictor over sample keys (PCL's value model, ADCL's estimator).

    `predict(keys) -> (m,)` floats in [0, 1]. Optional: `update(keys, targets)` (fit on
    the mean unguided reward of each key's group), `state_dict()` / `load_state_dict(d)`
    (saved with the strategy, so a resumed run predicts exactly as before).
    """

    def predict(self, keys: np.ndarray) -> np.ndarray:
        """Predicted pass rates of `keys`."""


def require_callable(strategy: str, arg: str, fn: object, what: str) -> Callable:
    """`fn` (or its `predict` method), or `ValueError` naming strategy and argument."""
    if fn is None:
        raise ValueError(
            f"strategy {strategy!r} needs the argument {arg!r}: {what} "
            f"(agents.signals builds one on the policy; lppo train does this for you)"
        )
    call = getattr(fn, "predict", fn)
    if not callable(call):
        raise ValueError(
            f"strategy {strategy!r}: {arg} must be callable or have a predict method, "
            f"got {type(fn).__name__}"
        )
    return call


def predict_fn(strategy: str, arg: str, fn: object) -> Callable:
    """The prediction callable of a pass-rate predictor argument."""
    return require_callable(strategy, arg, fn, "a pass-rate predictor predict(keys) -> (m,)")


def check_unit_values(strategy: str, arg: str, values: object, m: int) -> np.ndarray:
    """`values` as (m,) float64 in [0, 1]; `ValueError` naming strategy and argument."""
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"strategy {strategy!r}: {arg} returned non-numeric values ({e})") from e
    if arr.shape != (m,):
        raise ValueError(f"strategy {strategy!r}: {arg} returned shape {np.shape(values)} for "
                         f"{m} keys; expected ({m},)")
    if not np.isfinite(arr).all():
        raise ValueError(f"strategy {strategy!r}: {arg} returned NaN or inf "
                         f"(first at position {int(np.flatnonzero(~np.isfinite(arr))[0])})")
    if (arr < 0).any() or (arr > 1).any():
        bad = int(np.flatnonzero((arr < 0) | (arr > 1))[0])
        raise ValueError(f"strategy {strategy!r}: {arg} returned {arr[bad]!r} at position "
                         f"{bad}; pass-rate predictions must lie in [0, 1]")
    return arr


def check_scores(strategy: str, arg: str, values: object, m: int) -> np.ndarray:
    """`values` as (m,) finite float64 (scores of any scale, e.g. a mean cosine)."""
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"strategy {strategy!r}: {arg} returned non-numeric values ({e})") from e
    if arr.shape != (m,):
        raise ValueError(f"strategy {strategy!r}: {arg} returned shape {np.shape(values)} for "
                         f"{m} keys; expected ({m},)")
    if not np.isfinite(arr).all():
        raise ValueError(f"strategy {strategy!r}: {arg} returned NaN or inf")
    return arr


class TablePredictor:
    """Per-key pass-rate estimate: a prior, moved towards each observed target.

    `estimate ← (1 − lr)·estimate + lr·target` per update; keys never updated predict
    `prior` (or the value given in `initial`). Pure numpy, exact state round trip.

    Args:
        prior: prediction for an unknown key, in [0, 1].
        lr: step towards a new target, in (0, 1].
        initial: optional {key: estimate} to start from (e.g. a dataset difficulty).
    """

    def __init__(self, prior: float = 0.5, lr: float = 0.5,
                 initial: dict[object, float] | None = None) -> None:
        self.prior = check_range("prior", prior, 0.0, 1.0)
        self.lr = check_range("lr", lr, 0.0, 1.0, closed="right")
        self.table: dict[object, float] = {}
        for k, v in (initial or {}).items():
            self.table[_key(k)] = check_range(f"initial[{k!r}]", v, 0.0, 1.0)

    def predict(self, keys: np.ndarray) -> np.ndarray:
        """Current estimates of `keys` ((m,) float64 in [0, 1])."""
        return np.fromiter((self.table.get(_key(k), self.prior) for k in np.asarray(keys).tolist()),
                           np.float64, len(keys))

    __call__ = predict

    def update(self, keys: np.ndarray, targets: np.ndarray) -> None:
        """Move each key's estimate towards its target (mean unguided reward)."""
        for k, t in zip(np.asarray(keys).tolist(), np.asarray(targets, np.float64).tolist(),
                        strict=True):
            k = _key(k)
            old = self.table.get(k, self.prior)
            self.table[k] = (1.0 - self.lr) * old + self.lr * float(t)

    def state_dict(self) -> dict:
        """Keys (as str or int lists) and estimates."""
        ks = list(self.table)
        return {"keys": [k for k in ks], "values": np.asarray([self.table[k] for k in ks])}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`; `ValueError` if keys and values do not pair up."""
        ks, vs = list(state.get("keys", [])), np.asarray(state.get("values", []), np.float64)
        if len(ks) != vs.shape[0] or not np.isfinite(vs).all() or (vs < 0).any() or (vs > 1).any():
            raise ValueError("TablePredictor state needs one estimate in [0, 1] per key")
        self.table = {_key(k): float(v) for k, v in zip(ks, vs.tolist(), strict=True)}


def _key(k: object) -> object:
    return k.item() if isinstance(k, np.generic) else k
