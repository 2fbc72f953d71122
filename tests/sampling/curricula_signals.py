"""Numpy stand-ins for the model-side signals of the curricula (tests and benchmarks only).

They are deterministic functions of the key, so two strategies built from them agree,
and module-level, so a strategy's config names them the same in every process.
"""

from __future__ import annotations

import numpy as np

from lppo_sampling import make_strategy
from lppo_sampling.strategies.catalog import strategy_info
from lppo_sampling.strategies.signals import TablePredictor


def _hash01(keys: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random value in [0, 1] per key (int or str)."""
    return np.array([(hash(str(k)) % 1000) / 999 for k in np.asarray(keys).tolist()])


def score_fn(keys: np.ndarray) -> np.ndarray:
    """Stand-in angle-concentration score."""
    return _hash01(keys) * 2 - 1


def restructure_fn(keys: np.ndarray, modes: list[str]) -> list[str | None]:
    """Stand-in restructurer: a rewritten question per key."""
    return [f"({m}) question {k}" for k, m in zip(np.asarray(keys).tolist(), modes, strict=True)]


def signals_for(name: str) -> dict:
    """Fresh stand-ins for the callables strategy `name` requires."""
    out: dict = {}
    for arg in strategy_info(name).signals:
        if arg in ("predictor", "estimate_fn"):
            out[arg] = TablePredictor(prior=0.5, lr=0.5)
        elif arg == "score_fn":
            out[arg] = score_fn
        elif arg == "restructure_fn":
            out[arg] = restructure_fn
        else:  # a new signal needs a stand-in here
            raise KeyError(arg)
    return out


def build(name: str, **kwargs: object):
    """`make_strategy(name, ...)` with stand-ins for its required callables."""
    return make_strategy(name, **{**signals_for(name), **kwargs})
