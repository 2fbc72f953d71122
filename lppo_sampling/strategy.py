"""`Strategy`: four roles over one `SampleStats` table, and the registry of named strategies.

The protocol a trainer (ours, verl, TRL, OpenRLHF) drives once per step::

    keys    = strategy.select(n)                 # which samples
    plan    = strategy.plan(keys)                # per-slot prefix ratios (0 = unguided)
    ...generate plan.group_size rollouts per key, score them...
    strategy.observe(GroupResults.from_plan(plan, rewards))
    keep    = strategy.keep(keys)                # which groups enter the update
    weights = strategy.weights(keys)             # multiplies each sample's advantages

A strategy owns its random generator, so `state_dict()` → `load_state_dict()` restores
future choices exactly, and two replicas fed the same results stay bit-identical.

Samples enter the pool through `add_samples` (or `observe`, which registers the keys it is
given results for); the read calls `plan`, `keep` and `weights` refuse a key that is not in
the pool, so a typo is an error instead of a new sample. Every argument is checked at this
boundary and refused with a `ValueError` that names it; `load_state_dict` and `load` are
all or nothing.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lppo_sampling.batch import GroupResults, RolloutPlan
from lppo_sampling.checks import check_bool, check_int, check_seed
from lppo_sampling.roles import (
    Filter,
    Guide,
    KeepAll,
    LPWeighter,
    NoGuide,
    PrefixGuide,
    Selector,
    UniformSelector,
    UnitWeighter,
    Weighter,
    check_range,
)
from lppo_sampling.stats import COLUMNS, SampleStats

__all__ = [
    "Strategy",
    "STATE_VERSION",
    "register_strategy",
    "make_strategy",
    "available_strategies",
    "strategy_parameters",
]

STATE_VERSION = 2  # 2: keys as arrays, column last_event_guided_only, role_types
_READABLE_VERSIONS = (1, 2)
_ROLE_NAMES = ("selector", "guide", "filter", "weighter")


class Strategy:
    """A sampling strategy: Selector + Guide + Filter + Weighter over one `SampleStats`.

    Args:
        selector, guide, filter, weighter: the four roles.
        group_size: G, rollouts per sample in a plan.
        beta: EMA coefficient of the unguided pass rate.
        seed: seed of the strategy's own `numpy.random.Generator`.
        name: registry name (checked on `load_state_dict`).
        config: the arguments the strategy was built with (checked on `load_state_dict`).
    """

    def __init__(
        self,
        *,
        selector: Selector,
        guide: Guide,
        filter: Filter,  # noqa: A002 - the role's name
        weighter: Weighter,
        group_size: int = 8,
        beta: float = 0.8,
        seed: int = 0,
        name: str = "custom",
        config: dict | None = None,
    ) -> None:
        self.selector, self.guide, self.filter, self.weighter = selector, guide, filter, weighter
        self.group_size = check_int("group_size", group_size, 1)
        self.stats = SampleStats(beta=check_range("beta", beta, 0.0, 1.0, closed="left"))
        self.rng = np.random.default_rng(check_seed(seed))
        self.name = name
        self.config = dict(config or {})
        self._last: dict[str, float] = {}
        for role in self.roles.values():
            role.bind(self.stats)

    @property
    def roles(self) -> dict[str, object]:
        """The four roles by name."""
        return {r: getattr(self, r) for r in _ROLE_NAMES}

    # ------------------------------------------------------------------ pool
    def add_samples(
        self, keys: object, has_solution: object | None = None, category: object | None = None
    ) -> np.ndarray:
        """Register samples (known keys keep their stats); return their rows.

        Args:
            keys: (n,) stable sample keys (ints or strings from the data).
            has_solution: (n,) bool (or 0/1), whether an expert solution exists (PG-sampling
                only guides samples that have one). Omitted: left unchanged (False for new
                keys). Strings are refused: "no" is not False.
            category: (n,) labels for category-level strategies (SEC, DUMP, SAI-DPO
                clusters): data source, topic, difficulty level. Omitted: unchanged.
        """
        return self.stats.register(keys, has_solution, category)

    def __len__(self) -> int:
        return len(self.stats)

    # -------------------------------------------------------------- protocol
    def select(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Keys of the next `n` samples to roll out (without replacement when possible)."""
        n = check_int("n", n, 1)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator or None, got {rng!r}")
        if len(self.stats) == 0:
            raise ValueError("the pool is empty: call add_samples(keys) first")
        rows = self.selector.select(self.stats, n, self.rng if rng is None else rng)
        return self.stats.index.keys_of(rows)

    def plan(self, keys: object) -> RolloutPlan:
        """Rollout plan for `keys` (registered samples): G slots each, per-slot prefix ratios."""
        arr, rows = self._rows(keys)
        ratios = self.guide.plan(self.stats, rows, self.group_size, self.rng)
        self._last["sampler/guided_rollout_frac"] = float((ratios > 0).mean())
        # guides that also set env options (token budget, format, restructuring)
        sample_options = getattr(self.guide, "sample_options", None)
        options = sample_options(self.stats, rows) if sample_options is not None else None
        return RolloutPlan(keys=arr, prefix_ratios=ratios, options=options)

    def observe(self, results: GroupResults) -> None:
        """Fold finished groups into the statistics (unknown keys are registered)."""
        if not isinstance(results, GroupResults):
            raise ValueError(
                f"results must be a GroupResults (see GroupResults.from_plan / from_flat), "
                f"got {type(results).__name__}"
            )
        rows = self.stats.observe(results)
        for role in self.roles.values():
            role.on_observe(self.stats, rows, results)
        # padding is zeroed and guided slots are valid ones (GroupResults guarantees both),
        # so plain sums give the pass rates without boolean indexing
        r = results.rewards
        n_valid, n_guided = np.count_nonzero(results.mask), np.count_nonzero(results.guided)
        guided_sum = float(r.ravel() @ results.guided.ravel())
        unguided_sum = max(0.0, float(r.sum()) - guided_sum)  # no -1e-17 from rounding
        nan = float("nan")
        self._last["sampler/batch_pass_rate"] = (
            unguided_sum / (n_valid - n_guided) if n_valid > n_guided else nan
        )
        self._last["sampler/batch_guided_pass_rate"] = guided_sum / n_guided if n_guided else nan

    def keep(self, keys: object) -> np.ndarray:
        """(n,) bool: which of these samples' last groups enter the update."""
        rows = self._rows(keys)[1]
        mask = np.asarray(self.filter.keep(self.stats, rows), dtype=bool)
        self._last["sampler/keep_frac"] = float(mask.mean())
        return mask

    def weights(self, keys: object) -> np.ndarray:
        """(n,) float64: how much each sample counts (multiplies its advantages)."""
        rows = self._rows(keys)[1]
        w = np.asarray(self.weighter.weights(self.stats, rows), dtype=np.float64)
        self._last.update(
            {
                "sampler/weight_mean": float(w.mean()),
                "sampler/weight_min": float(w.min()),
                "sampler/weight_max": float(w.max()),
            }
        )
        return w

    def _rows(self, keys: object) -> tuple[np.ndarray, np.ndarray]:
        """Validated keys and their rows; read calls never grow the pool (see add_samples)."""
        arr, rows = self.stats.find_rows(keys)
        if arr.shape[0] == 0:
            raise ValueError("keys is empty")
        return arr, rows

    # --------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, float]:
        """Scalars for logs: pool summary, last batch, role-specific values."""
        s = self.stats
        seen = s.seen()
        out = {
            "sampler/pool_size": float(len(s)),
            "sampler/seen_frac": float(seen.mean()) if len(s) else 0.0,
            "sampler/ema_mean": float(s["ema"][seen].mean()) if seen.any() else float("nan"),
            "sampler/delta_mean": float(s["delta"][seen].mean()) if seen.any() else float("nan"),
            "sampler/never_solved_frac": float((s["reward_sum"][seen] == 0).mean())
            if seen.any()
            else float("nan"),
            "sampler/step": float(s.step),
        }
        out.update(self._last)
        for role in self.roles.values():
            out.update(role.metrics(s))
        return out

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: stats, RNG, role state, config."""
        return {
            "version": STATE_VERSION,
            "name": self.name,
            "config": self.config,
            "group_size": self.group_size,
            "rng": self.rng.bit_generator.state,
            "stats": self.stats.state_dict(),
            "roles": {r: role.state_dict() for r, role in self.roles.items()},
            "role_types": {r: type(role).__name__ for r, role in self.roles.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`, all or nothing.

        Everything is validated first — version, strategy name, config (every field, seed
        aside), group size, β, each statistics column (shape, dtype, range), the RNG and
        every role's state (loaded into a copy of the role and checked against the new
        table) — and only then swapped in, so a refused state leaves the strategy exactly
        as it was.

        Raises:
            ValueError: naming the first offending field.
        """
        stats, rng, role_states = self._validated(state)
        # nothing below can fail: every role state was loaded into a copy already
        self.stats, self.rng = stats, rng
        for r, role in self.roles.items():
            role.load_state_dict(role_states[r])
            role.bind(stats)
        self.config = dict(state["config"])  # carries the original seed

    def _validated(self, state: object) -> tuple[SampleStats, np.random.Generator, dict]:
        """The table, RNG and role states of `state`, checked against this strategy."""
        if not isinstance(state, dict):
            raise ValueError(f"state_dict must be a dict, got {type(state).__name__}")
        version = state.get("version")
        if version not in _READABLE_VERSIONS:
            raise ValueError(
                f"state_dict has version {version!r}; this lppo_sampling reads versions "
                f"{', '.join(map(str, _READABLE_VERSIONS))}"
            )
        for field in ("name", "config", "group_size", "rng", "stats"):
            if field not in state:
                raise ValueError(f"state_dict lacks the entry {field!r}")
        if state["name"] != self.name:
            raise ValueError(
                f"state_dict was saved by strategy {state['name']!r}; this strategy is "
                f"{self.name!r}: build it with make_strategy({state['name']!r}, ...) to load it"
            )
        types = state.get("role_types", {})
        for r, role in self.roles.items():
            saved = types.get(r, type(role).__name__)
            if saved != type(role).__name__:
                raise ValueError(
                    f"state_dict['role_types'][{r!r}] is {saved!r}; this strategy's {r} is "
                    f"{type(role).__name__!r}"
                )
        _check_config(state["config"], self.config)
        group_size = state["group_size"]
        if isinstance(group_size, bool) or group_size != self.group_size:
            raise ValueError(
                f"state_dict['group_size'] is {group_size!r}; this strategy has "
                f"group_size={self.group_size}"
            )
        raw_stats = state["stats"]
        if version == 1 and isinstance(raw_stats, dict):
            raw_stats = _stats_from_v1(raw_stats)
        stats = SampleStats.from_state_dict(raw_stats)
        if stats.beta != self.stats.beta:
            raise ValueError(
                f"state_dict['stats']['beta'] is {stats.beta!r}; this strategy has "
                f"beta={self.stats.beta!r}"
            )
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as e:
            kind = type(rng.bit_generator).__name__
            raise ValueError(f"state_dict['rng'] is not a {kind} state") from e
        role_states = state.get("roles", {})
        if not isinstance(role_states, dict):
            raise ValueError("state_dict['roles'] must be a dict")
        declared = set(stats.columns)
        checked = {}
        for r, role in self.roles.items():
            sub = role_states.get(r, {})
            if not isinstance(sub, dict):
                raise ValueError(f"state_dict['roles'][{r!r}] must be a dict")
            trial = copy.deepcopy(role)
            try:
                trial.load_state_dict(sub)
            except (TypeError, KeyError, IndexError) as e:
                raise ValueError(f"state_dict['roles'][{r!r}] is invalid: {e!r}") from e
            trial.bind(stats)
            added = set(stats.columns) - declared
            if added:
                raise ValueError(
                    f"state_dict['stats'] lacks the column(s) {sorted(added)} that this "
                    f"strategy's {r} ({type(role).__name__}) keeps"
                )
            trial.check(stats)
            checked[r] = sub
        return stats, rng, checked

    def save(self, path: str | os.PathLike) -> Path:
        """Write the state to one `.npz` file atomically (temp file + rename)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        meta = _extract_arrays(self.state_dict(), arrays, "")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Load a file written by `save`, all or nothing (see `load_state_dict`).

        Raises:
            FileNotFoundError: no such file.
            ValueError: naming the file, if it is damaged or holds an incompatible state.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no sampler state file at {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "__meta__" not in z.files:
                    raise ValueError("not an lppo_sampling state file (no __meta__)")
                meta = json.loads(str(z["__meta__"]))
                state = _insert_arrays(meta, {k: z[k] for k in z.files if k != "__meta__"})
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, zlib.error, ...
            raise ValueError(
                f"{path}: unreadable sampler state file ({type(e).__name__}: {e})"
            ) from e
        try:
            self.load_state_dict(state)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def state_checksum(self) -> str:
        """Hash of the full state: replicas on different ranks must agree."""
        h = hashlib.sha256()
        arrays: dict[str, np.ndarray] = {}
        meta = _extract_arrays(self.state_dict(), arrays, "")
        h.update(json.dumps(meta, sort_keys=True).encode())
        for k in sorted(arrays):
            h.update(k.encode())
            h.update(np.ascontiguousarray(arrays[k]).tobytes())
        return h.hexdigest()


def _check_config(saved: object, mine: dict) -> None:
    """Refuse a saved config that differs from `mine` in any field but the seed."""
    if not isinstance(saved, dict):
        raise ValueError(f"state_dict['config'] must be a dict, got {type(saved).__name__}")
    a, b = _jsonable(saved), _jsonable(mine)
    unset = "<unset>"
    diff = sorted(k for k in set(a) | set(b) if k != "seed" and a.get(k, unset) != b.get(k, unset))
    if diff:
        detail = ", ".join(
            f"{k}: saved {a.get(k, unset)!r}, here {b.get(k, unset)!r}" for k in diff
        )
        raise ValueError(
            f"state_dict config differs from this strategy's in {detail}; build the strategy "
            f"with the same arguments"
        )


def _stats_from_v1(stats: dict) -> dict:
    """A version-1 table state with the column version 2 added (False: not guided-only)."""
    cols = stats.get("columns")
    if not isinstance(cols, dict) or "last_event_guided_only" in cols:
        return stats
    n = next((np.shape(v)[0] for v in cols.values() if np.ndim(v) == 1), 0)
    fill = COLUMNS["last_event_guided_only"]
    return {**stats, "columns": {**cols, "last_event_guided_only": np.full(n, fill[1], fill[0])}}


def _jsonable(x: object) -> object:
    return json.loads(json.dumps(x, sort_keys=True, default=str))


def _extract_arrays(obj: object, arrays: dict, prefix: str) -> object:
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, dict):
        return {k: _extract_arrays(v, arrays, f"{prefix}/{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_extract_arrays(v, arrays, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _insert_arrays(obj: object, arrays: dict) -> object:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            if obj["__array__"] not in arrays:
                raise ValueError(f"the array {obj['__array__']!r} is missing")
            return arrays[obj["__array__"]]
        return {k: _insert_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_insert_arrays(v, arrays) for v in obj]
    return obj


# ------------------------------------------------------------------ registry
_REGISTRY: dict[str, Callable[..., Strategy]] = {}


def register_strategy(name: str) -> Callable[[Callable[..., Strategy]], Callable[..., Strategy]]:
    """Register a strategy factory under `name` (a different factory under a taken name fails)."""

    def deco(fn: Callable[..., Strategy]) -> Callable[..., Strategy]:
        prev = _REGISTRY.get(name)
        if prev is not None and prev is not fn and prev.__qualname__ != fn.__qualname__:
            raise ValueError(f"strategy {name!r} is already registered to {prev.__qualname__}")
        _REGISTRY[name] = fn
        return fn

    return deco


def available_strategies() -> list[str]:
    """Names accepted by `make_strategy`."""
    _load_builtin_strategies()
    return sorted(_REGISTRY)


def strategy_parameters(name: str) -> dict[str, tuple[object, object]]:
    """Each argument of strategy `name`: (declared type, default); `ValueError` if unknown.

    Why: configs read from YAML or flags carry strings ("1e-5"); a config layer converts
    them by the declared type before `make_strategy`, which refuses strings for numbers.
    """
    import typing

    _load_builtin_strategies()
    if name not in _REGISTRY:
        make_strategy(name)  # raises the unknown-name error with its suggestion
    fn = _REGISTRY[name]
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: types unknown
        hints = {}
    return {
        p: (hints.get(p, object), param.default)
        for p, param in inspect.signature(fn).parameters.items()
    }


def make_strategy(name: str, **kwargs: object) -> Strategy:
    """Build a registered strategy by name, e.g. `make_strategy("lppo", kappa=4.0)`.

    Raises:
        ValueError: unknown name (with a suggestion) or an argument the strategy lacks.
    """
    _load_builtin_strategies()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown strategy {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}"
        )
    fn = _REGISTRY[name]
    sig = inspect.signature(fn)
    try:
        bound = sig.bind(**kwargs)
    except TypeError as e:
        valid = ", ".join(sig.parameters)
        raise ValueError(f"make_strategy({name!r}): {e}; valid arguments: {valid}") from e
    bound.apply_defaults()
    strategy = fn(**bound.arguments)
    strategy.name = name
    strategy.config = _jsonable(  # type: ignore[assignment]
        {k: _config_value(v) for k, v in bound.arguments.items()}
    )
    return strategy


def _config_value(value: object) -> object:
    """A model-side callable (predictor, estimator) by its type, not its memory address.

    The config is compared on `load_state_dict`; a repr with an address would differ in
    every process, and the callable's own state is saved with its role.
    """
    if value is None or isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return value
    if callable(value) and hasattr(value, "__qualname__") and hasattr(value, "__module__"):
        return f"<{value.__module__}.{value.__qualname__}>"  # function, method or class
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _load_builtin_strategies() -> None:
    # peer strategies live in their own modules and register on import
    import lppo_sampling.strategies  # noqa: F401


# ------------------------------------------------------------ built-in LPPO
@register_strategy("uniform")
def uniform(group_size: int = 8, beta: float = 0.8, seed: int = 0) -> Strategy:
    """Baseline: uniform random batches, no guidance, keep all groups, weight 1."""
    return Strategy(
        selector=UniformSelector(), guide=NoGuide(), filter=KeepAll(), weighter=UnitWeighter(),
        group_size=group_size, beta=beta, seed=seed,
    )


@register_strategy("lp_weighting")
def lp_weighting(
    group_size: int = 8,
    beta: float = 0.8,
    kappa: float = 8.0,
    bias: float = 0.5,
    normalize_weights: bool = False,
    seed: int = 0,
) -> Strategy:
    """LPPO ablation: LP-weighting only (uniform batches, no prefixes)."""
    return Strategy(
        selector=UniformSelector(), guide=NoGuide(), filter=KeepAll(),
        weighter=LPWeighter(kappa, bias, check_bool("normalize_weights", normalize_weights)),
        group_size=group_size, beta=beta, seed=seed,
    )


@register_strategy("prefix_guidance")
def prefix_guidance(
    group_size: int = 8,
    beta: float = 0.8,
    prefix_low: float = 0.15,
    prefix_high: float = 0.55,
    guided_fraction: float = 0.5,
    stuck_threshold: float = 0.05,
    seed: int = 0,
) -> Strategy:
    """LPPO ablation: PG-sampling only (uniform batches, weight 1)."""
    return Strategy(
        selector=UniformSelector(),
        guide=PrefixGuide(prefix_low, prefix_high, guided_fraction, stuck_threshold),
        filter=KeepAll(), weighter=UnitWeighter(),
        group_size=group_size, beta=beta, seed=seed,
    )


@register_strategy("lppo")
def lppo(
    group_size: int = 8,
    beta: float = 0.8,
    kappa: float = 8.0,
    bias: float = 0.5,
    normalize_weights: bool = False,
    prefix_low: float = 0.15,
    prefix_high: float = 0.55,
    guided_fraction: float = 0.5,
    stuck_threshold: float = 0.05,
    seed: int = 0,
) -> Strategy:
    """LPPO (arXiv 2507.06573): LP-weighting + prefix-guided sampling over uniform batches."""
    return Strategy(
        selector=UniformSelector(),
        guide=PrefixGuide(prefix_low, prefix_high, guided_fraction, stuck_threshold),
        filter=KeepAll(),
        weighter=LPWeighter(kappa, bias, check_bool("normalize_weights", normalize_weights)),
        group_size=group_size, beta=beta, seed=seed,
    )
