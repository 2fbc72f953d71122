"""What flows between a strategy and a trainer: the rollout plan and the group results.

Both are laid out as (n samples, G rollouts) so that a whole step is handled with
array operations. Variable-size groups are padded and carry a `mask`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lppo_sampling.checks import bool_array
from lppo_sampling.keys import as_key_array, validate_keys

__all__ = ["RolloutPlan", "GroupResults"]


@dataclass(frozen=True)
class RolloutPlan:
    """Which rollouts to generate for a batch of samples.

    Attributes:
        keys: (n,) sample keys, in batch order.
        prefix_ratios: (n, G) fraction of each sample's expert solution to give as an
            assistant prefix for rollout slot j; 0 means an unguided rollout.
        options: None, or (n,) dicts of extra per-sample reset options for the environment
            (string keys; values str, int, float or bool), e.g. a token budget
            ``{"max_new_tokens": 192}`` or a format ``{"format": "mcq"}``. A trainer merges
            them into the reset options of every slot of that sample.
    """

    keys: np.ndarray
    prefix_ratios: np.ndarray
    options: tuple[dict, ...] | None = None

    def __post_init__(self) -> None:
        """Validate: 1-D keys, (n, G ≥ 1) finite ratios in [0, 1]."""
        keys = validate_keys(self.keys, "keys")
        ratios = _numeric("prefix_ratios", self.prefix_ratios)
        if ratios.ndim != 2 or ratios.shape[0] != keys.shape[0] or ratios.shape[1] == 0:
            raise ValueError(
                f"prefix_ratios must have shape (n={keys.shape[0]}, G>=1), got {ratios.shape}"
            )
        if not _within_unit(ratios):
            raise ValueError("prefix_ratios must be finite and lie in [0, 1]")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "prefix_ratios", ratios)
        if self.options is not None:
            object.__setattr__(self, "options", _sample_options(self.options, keys.shape[0]))

    @property
    def group_size(self) -> int:
        """G, rollouts per sample."""
        return int(self.prefix_ratios.shape[1])

    @property
    def guided(self) -> np.ndarray:
        """(n, G) bool, True where a rollout starts from a prefix."""
        return self.prefix_ratios > 0

    def __len__(self) -> int:
        return int(self.keys.shape[0])


def _sample_options(options: object, n: int) -> tuple[dict, ...]:
    """`options` as n validated dicts (str keys, scalar values); `ValueError` naming it."""
    if isinstance(options, (str, bytes, dict)) or not isinstance(options, (list, tuple)):
        raise ValueError(f"options must be a list of n={n} dicts or None, got "
                         f"{type(options).__name__}")
    if len(options) != n:
        raise ValueError(f"options must have one dict per key (n={n}), got {len(options)}")
    out = []
    done: dict[int, dict] = {}  # a dict shared by many samples is checked once
    for i, d in enumerate(options):
        if id(d) in done:
            out.append(done[id(d)])
            continue
        if not isinstance(d, dict):
            raise ValueError(f"options[{i}] must be a dict, got {type(d).__name__}")
        for k, v in d.items():
            if not isinstance(k, str):
                raise ValueError(f"options[{i}] keys must be str, got {k!r}")
            if not isinstance(v, (str, int, float, bool, np.integer, np.floating)):
                raise ValueError(f"options[{i}][{k!r}] must be str, int, float or bool, got "
                                 f"{type(v).__name__}")
            if isinstance(v, (float, np.floating)) and not np.isfinite(v):
                raise ValueError(f"options[{i}][{k!r}] must be finite, got {v!r}")
        done[id(d)] = {k: v.item() if isinstance(v, np.generic) else v for k, v in d.items()}
        out.append(done[id(d)])
    return tuple(out)


def _within_unit(a: np.ndarray) -> bool:
    """All of `a` finite and in [0, 1]: two reductions (NaN fails both comparisons)."""
    return a.size == 0 or bool(a.min() >= 0.0) and bool(a.max() <= 1.0)


def _numeric(name: str, x: object) -> np.ndarray:
    """`x` as a float64 array; strings and objects are refused (numpy would parse "1")."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _matrix(x: object, shape: tuple[int, int], name: str) -> np.ndarray:
    arr = _numeric(name, x)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (like rewards), got {arr.shape}")
    return arr


@dataclass(frozen=True)
class GroupResults:
    """Outcome of the rollouts of n samples, G slots each (validated on construction).

    Attributes:
        keys: (n,) sample keys.
        rewards: (n, G) float64 in [0, 1]: a pass indicator or partial credit.
        guided: (n, G) bool, rollouts that started from an expert prefix.
        mask: (n, G) bool, valid slots (False = padding in a ragged batch).
        lengths: (n, G) response lengths in tokens, or None.
        steps: (n, G) reasoning steps per response, or None.
    """

    keys: np.ndarray
    rewards: np.ndarray
    guided: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray | None = None
    steps: np.ndarray | None = None

    def __post_init__(self) -> None:
        """Validate every field, however the results were built; `ValueError` naming it.

        Rewards must be finite and lie in [0, 1] in valid slots; padding (mask False) is
        zeroed, and guided slots outside the mask are cleared, so no padding value can
        reach the statistics.
        """
        keys = validate_keys(self.keys, "keys")
        n = keys.shape[0]
        if n == 0:
            raise ValueError("keys is empty: observe needs at least one sample")
        r = _numeric("rewards", self.rewards)
        if r.ndim != 2 or r.shape[0] != n or r.shape[1] == 0:
            raise ValueError(f"rewards must have shape (n={n}, G>=1), got {r.shape}")
        shape = r.shape
        m = np.asarray(bool_array("mask", self.mask, shape), dtype=bool)
        g = np.asarray(bool_array("guided", self.guided, shape), dtype=bool)
        padded = not m.all()
        if padded:  # only a padded mask can have a row without a valid rollout
            rows_ok = m.any(axis=1)
            if not rows_ok.all():
                bad = int(np.flatnonzero(~rows_ok)[0])
                raise ValueError(f"mask row {bad} (key {keys[bad]!r}) has no valid rollout")
        valid = r[m] if padded else r
        if not _within_unit(valid):
            if not np.isfinite(valid).all():
                raise ValueError("rewards contain NaN or inf in valid slots")
            raise ValueError(
                "rewards must lie in [0, 1] (pass indicator or partial credit), got values in "
                f"[{valid.min()}, {valid.max()}]; rescale rewards before observe"
            )
        if padded:
            r = np.where(m, r, 0.0)
            g = g & m
        extras: dict[str, np.ndarray | None] = {}
        for name in ("lengths", "steps"):
            val = getattr(self, name)
            if val is None:
                extras[name] = None
                continue
            arr = _matrix(val, shape, name)
            v = arr[m] if padded else arr
            if not np.isfinite(v).all() or (v < 0).any():
                raise ValueError(f"{name} must be finite and >= 0 in valid slots")
            extras[name] = np.where(m, arr, 0.0) if padded else arr
        for name, value in (("keys", keys), ("rewards", r), ("guided", g), ("mask", m)):
            object.__setattr__(self, name, value)
        for name, value in extras.items():
            object.__setattr__(self, name, value)

    @classmethod
    def build(
        cls,
        keys: Sequence[object] | np.ndarray,
        rewards: object,
        *,
        guided: object | None = None,
        mask: object | None = None,
        lengths: object | None = None,
        steps: object | None = None,
    ) -> GroupResults:
        """Assemble results with defaults (all valid, none guided; 1-D rewards = G of 1).

        Validation is `__post_init__`'s: `ValueError` naming the bad argument.
        """
        keys_arr = as_key_array(keys, "keys")  # validated once, in __post_init__
        if keys_arr.ndim != 1:
            raise ValueError(f"keys must be 1-D, got shape {keys_arr.shape}")
        r = _numeric("rewards", rewards)
        if r.ndim == 1:
            r = r[:, None]
        if r.ndim != 2 or r.shape[0] != keys_arr.shape[0] or r.shape[1] == 0:
            if keys_arr.shape[0] == 0:
                raise ValueError("keys is empty: observe needs at least one sample")
            raise ValueError(
                f"rewards must have shape (n={keys_arr.shape[0]}, G>=1), got {np.shape(rewards)}"
            )
        shape = r.shape
        m = np.ones(shape, bool) if mask is None else mask
        g = np.zeros(shape, bool) if guided is None else guided
        return cls(keys_arr, r, g, m, lengths, steps)

    @classmethod
    def from_plan(
        cls,
        plan: RolloutPlan,
        rewards: object,
        *,
        lengths: object | None = None,
        steps: object | None = None,
        mask: object | None = None,
    ) -> GroupResults:
        """Results laid out like `plan`; guided slots are taken from the plan."""
        return cls.build(
            plan.keys, rewards, guided=plan.guided, mask=mask, lengths=lengths, steps=steps
        )

    @classmethod
    def from_flat(
        cls,
        keys: Sequence[object] | np.ndarray,
        rewards: Sequence[float] | np.ndarray,
        *,
        guided: Sequence[bool] | np.ndarray | None = None,
        lengths: Sequence[float] | np.ndarray | None = None,
        steps: Sequence[float] | np.ndarray | None = None,
    ) -> GroupResults:
        """Group one-row-per-rollout data by key (first-appearance order), padding ragged groups.

        This is the layout most RL libraries hand back (verl `DataProto`, TRL gathered
        rewards): rollout k belongs to sample `keys[k]`.
        """
        k = as_key_array(keys)
        n = k.shape[0] if k.ndim == 1 else -1
        if n <= 0:
            raise ValueError(f"keys must be a non-empty 1-D sequence, got shape {k.shape}")
        k = validate_keys(k, "keys")
        cols = {"rewards": rewards, "guided": guided, "lengths": lengths, "steps": steps}
        flat = {}
        for name, v in cols.items():
            if v is None:
                continue
            a = bool_array(name, v, (n,)) if name == "guided" else _numeric(name, v)
            if a.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) like keys, got {a.shape}")
            flat[name] = a
        ids: dict[object, int] = {}  # group id per key, in first-appearance order
        gid = np.fromiter((ids.setdefault(x, len(ids)) for x in k.tolist()), np.int64, n)
        group_keys = np.empty(len(ids), dtype=k.dtype if k.dtype != object else object)
        group_keys[:] = list(ids)
        counts = np.bincount(gid, minlength=len(ids))
        width = int(counts.max())
        # slot of each rollout within its group, in original order
        sort = np.argsort(gid, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.empty(n, np.int64)
        slot[sort] = np.arange(n) - np.repeat(starts, counts)
        shape = (len(ids), width)
        mask = np.zeros(shape, bool)
        mask[gid, slot] = True

        def place(name: str, dtype: type, fill: object) -> np.ndarray | None:
            if name not in flat:
                return None
            out = np.full(shape, fill, dtype=dtype)
            out[gid, slot] = flat[name]
            return out

        return cls.build(
            group_keys,
            place("rewards", np.float64, 0.0),
            guided=place("guided", bool, False),
            mask=mask,
            lengths=place("lengths", np.float64, 0.0),
            steps=place("steps", np.float64, 0.0),
        )

    def __len__(self) -> int:
        return int(self.keys.shape[0])
