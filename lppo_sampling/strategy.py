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
"""

from __future__ import annotations

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
from lppo_sampling.stats import SampleStats

__all__ = [
    "Strategy",
    "STATE_VERSION",
    "register_strategy",
    "make_strategy",
    "available_strategies",
]

STATE_VERSION = 1
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
        if int(group_size) != group_size or group_size < 1:
            raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
        self.selector, self.guide, self.filter, self.weighter = selector, guide, filter, weighter
        self.group_size = int(group_size)
        self.stats = SampleStats(beta=check_range("beta", beta, 0.0, 1.0, closed="left"))
        self.rng = np.random.default_rng(seed)
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
            has_solution: (n,) bool, whether an expert solution exists (PG-sampling only
                guides samples that have one). Omitted: left unchanged (False for new keys).
            category: (n,) labels for category-level strategies (SEC, DUMP, SAI-DPO
                clusters): data source, topic, difficulty level. Omitted: unchanged.
        """
        return self.stats.register(keys, has_solution, category)

    def __len__(self) -> int:
        return len(self.stats)

    # -------------------------------------------------------------- protocol
    def select(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Keys of the next `n` samples to roll out (without replacement when possible)."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        if len(self.stats) == 0:
            raise ValueError("the pool is empty: call add_samples(keys) first")
        rows = self.selector.select(self.stats, int(n), self.rng if rng is None else rng)
        return self.stats.index.keys_of(rows)

    def plan(self, keys: object) -> RolloutPlan:
        """Rollout plan for `keys`: G slots each, with per-slot prefix ratios."""
        arr = self._nonempty(keys)
        rows = self.stats.register(arr)
        ratios = self.guide.plan(self.stats, rows, self.group_size, self.rng)
        self._last["sampler/guided_rollout_frac"] = float((ratios > 0).mean())
        return RolloutPlan(keys=arr, prefix_ratios=ratios)

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
        unguided = results.mask & ~results.guided
        nan = float("nan")
        r = results.rewards
        self._last["sampler/batch_pass_rate"] = float(r[unguided].mean()) if unguided.any() else nan
        self._last["sampler/batch_guided_pass_rate"] = (
            float(r[results.guided].mean()) if results.guided.any() else nan
        )

    def keep(self, keys: object) -> np.ndarray:
        """(n,) bool: which of these samples' last groups enter the update."""
        rows = self.stats.register(self._nonempty(keys))
        mask = np.asarray(self.filter.keep(self.stats, rows), dtype=bool)
        self._last["sampler/keep_frac"] = float(mask.mean())
        return mask

    def weights(self, keys: object) -> np.ndarray:
        """(n,) float64: how much each sample counts (multiplies its advantages)."""
        rows = self.stats.register(self._nonempty(keys))
        w = np.asarray(self.weighter.weights(self.stats, rows), dtype=np.float64)
        self._last.update(
            {
                "sampler/weight_mean": float(w.mean()),
                "sampler/weight_min": float(w.min()),
                "sampler/weight_max": float(w.max()),
            }
        )
        return w

    def _nonempty(self, keys: object) -> np.ndarray:
        arr = self.stats.index.validate(keys)
        if arr.shape[0] == 0:
            raise ValueError("keys is empty")
        return arr

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
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`; `ValueError` (and no change) if it is incompatible."""
        if not isinstance(state, dict):
            raise ValueError(f"state_dict must be a dict, got {type(state).__name__}")
        version = state.get("version")
        if version != STATE_VERSION:
            raise ValueError(
                f"state_dict has version {version!r}; this lppo_sampling reads version "
                f"{STATE_VERSION}"
            )
        if state.get("name") != self.name:
            raise ValueError(
                f"state_dict is for strategy {state.get('name')!r}, not {self.name!r}"
            )
        # the seed only initialises the RNG, whose state is restored below
        if _without_seed(state.get("config")) != _without_seed(self.config):
            raise ValueError(
                f"state_dict config {state.get('config')} differs from this strategy's "
                f"{self.config}; build the strategy with the same arguments"
            )
        stats = SampleStats.from_state_dict(state["stats"])
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = state["rng"]
        except (TypeError, ValueError, KeyError) as e:
            kind = type(rng.bit_generator).__name__
            raise ValueError(f"state_dict['rng'] is not a {kind} state") from e
        # roles may validate too; snapshot so a failure leaves everything unchanged
        snapshots = {r: role.state_dict() for r, role in self.roles.items()}
        try:
            for r, role in self.roles.items():
                role.load_state_dict(state.get("roles", {}).get(r, {}))
        except Exception:
            for r, role in self.roles.items():
                role.load_state_dict(snapshots[r])
            raise
        self.stats, self.rng = stats, rng
        self.config = dict(state["config"])  # carries the original seed
        self.group_size = int(state["group_size"])
        for role in self.roles.values():
            role.bind(self.stats)

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
        """Load a file written by `save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            if "__meta__" not in z:
                raise ValueError(f"{path} is not an lppo_sampling state file (no __meta__)")
            meta = json.loads(str(z["__meta__"]))
            state = _insert_arrays(meta, {k: z[k] for k in z.files if k != "__meta__"})
        self.load_state_dict(state)

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


def _without_seed(config: object) -> object:
    cfg = _jsonable(config)
    return {k: v for k, v in cfg.items() if k != "seed"} if isinstance(cfg, dict) else cfg


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
    strategy.config = _jsonable(dict(bound.arguments))  # type: ignore[assignment]
    return strategy


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
        weighter=LPWeighter(kappa, bias, normalize_weights),
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
        filter=KeepAll(), weighter=LPWeighter(kappa, bias, normalize_weights),
        group_size=group_size, beta=beta, seed=seed,
    )
