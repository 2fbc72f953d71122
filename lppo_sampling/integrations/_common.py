"""Helpers shared by the library adapters: version checks, reward scaling, a fallback grader.

Kept free of torch and of any RL library so that every adapter (and its tests) can use
it; each adapter imports its own library lazily.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "require",
    "unit_rewards",
    "exact_match_score",
    "check_strategy_name",
    "build_strategy",
    "check_sample_keys",
    "declared_reward_bounds",
    "plan_option_keys",
    "refuse_plan_options",
    "check_plan_options",
    "check_pool",
]


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in re.split(r"[.+-]", v):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def require(dist: str, minimum: str, *, below: str | None = None, purpose: str = "") -> str:
    """Return the installed version of `dist`, or raise ImportError saying what is needed.

    Adapters hook private methods of fast-moving libraries, so a version outside the
    tested range must fail loudly at construction, not misbehave mid-training.

    Args:
        dist: distribution name on PyPI (e.g. "trl").
        minimum: lowest supported version (inclusive).
        below: first unsupported version (exclusive upper bound), or None.
        purpose: what the adapter needs it for (goes into the message).
    """
    why = f" for {purpose}" if purpose else ""
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError as e:
        rng = f">={minimum}" + (f",<{below}" if below else "")
        raise ImportError(
            f"{dist}{rng} is required{why} but is not installed; see docs/integrations.md "
            f"for the install line"
        ) from e
    v = _version_tuple(version)
    if v < _version_tuple(minimum) or (below is not None and v >= _version_tuple(below)):
        rng = f">={minimum}" + (f",<{below}" if below else "")
        raise ImportError(
            f"{dist} {version} is installed, but lppo_sampling's adapter{why} is tested with "
            f"{dist}{rng}; install a version in that range"
        )
    return version


def unit_rewards(rewards: Sequence[float] | np.ndarray, reward_range: tuple[float, float],
                 source: str) -> np.ndarray:
    """Map rewards from `reward_range` onto [0, 1], the scale strategies observe.

    Strategies track pass rates, so a reward must be a pass indicator or partial credit
    in [0, 1]. Libraries hand back arbitrary scalars (format bonuses, -1/+1 schemes);
    rather than clip silently, an out-of-range value is an error naming the fix.

    Raises:
        ValueError: `reward_range` is empty, or a reward falls outside it.
    """
    lo, hi = (float(x) for x in reward_range)
    if not hi > lo:
        raise ValueError(f"reward_range must be (low, high) with high > low, got {reward_range}")
    r = np.asarray(rewards, dtype=np.float64)
    u = (r - lo) / (hi - lo)
    tol = 1e-6
    bad = np.isfinite(u) & ((u < -tol) | (u > 1 + tol))
    if bad.any():
        v = r[bad][0]
        raise ValueError(
            f"{source}: reward {v} lies outside reward_range={tuple(reward_range)}; strategies "
            f"observe pass rates in [0, 1], so pass the adapter the range your rewards use "
            f"(reward_range=(low, high))"
        )
    return np.clip(u, 0.0, 1.0)


_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _final_answer(text: str) -> str | None:
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1]
    nums = _NUMBER.findall(text)
    return nums[-1] if nums else None


def _norm(ans: str) -> str:
    return ans.strip().strip("$ .").replace(",", "").replace(" ", "")


def exact_match_score(completion: str, answer: str) -> float:
    r"""1.0 if the completion's final answer (last `\\boxed{}` or last number) equals `answer`.

    A dependency-free grader for adapters and tests; real training should use
    `lppo_env`'s math-verify reward, which understands equivalent forms.
    """
    got = _final_answer(str(completion))
    return float(got is not None and _norm(got) == _norm(str(answer)))


# ------------------------------------------------------------- start-up checks
# Adapters run inside other libraries' long start-ups (model load, Ray actors); a bad
# setting must fail there, naming the setting, never at the first update.


def check_strategy_name(name: str, setting: str) -> None:
    """Raise `ValueError` naming `setting` if `name` is not a registered strategy."""
    from lppo_sampling.strategy import available_strategies

    names = available_strategies()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{setting}: unknown strategy {name!r}.{hint} Available: {', '.join(names)}"
        )


def build_strategy(name: str, setting: str, **kwargs: object) -> object:
    """`make_strategy(name, **kwargs)` whose errors name `setting` (unknown name or argument)."""
    from lppo_sampling.strategy import make_strategy

    check_strategy_name(name, setting)
    try:
        return make_strategy(name, **kwargs)
    except ValueError as e:
        raise ValueError(f"{setting}: {e}") from e


def check_sample_keys(keys: Sequence[object], source: str) -> list:
    """Return `keys` as a list after checking they can be stable sample keys.

    A key must be an int or a non-empty str, unique, all of one kind: a float, None or
    a bool is usually a position or a missing value, and would not survive a reload or
    a reshuffle of the data.

    Raises:
        ValueError: naming `source` and the first offending row.
    """
    out = list(keys)
    if not out:
        raise ValueError(f"{source}: no rows")
    seen: dict[object, int] = {}
    kind = None
    for row, k in enumerate(out):
        if isinstance(k, np.generic):
            k = out[row] = k.item()
        ok = (isinstance(k, int) and not isinstance(k, bool)) or (isinstance(k, str) and k != "")
        if not ok:
            raise ValueError(
                f"{source}: row {row} has key {k!r} ({type(k).__name__}); sample keys must be "
                "unique ints or non-empty strings taken from the data (an id column), not "
                "positions, floats or missing values"
            )
        if kind is None:
            kind = type(k)
        elif type(k) is not kind:
            raise ValueError(
                f"{source}: row {row} has a {type(k).__name__} key {k!r} but row 0 a "
                f"{kind.__name__} key; use one kind of key"
            )
        if k in seen:
            raise ValueError(
                f"{source}: duplicate key {k!r} (rows {seen[k]} and {row}); sample keys must "
                "be unique"
            )
        seen[k] = row
    return out


def declared_reward_bounds(reward_funcs: Sequence[object], weights: Sequence[float]
                           ) -> tuple[float | None, float | None]:
    """Bounds of the weighted reward sum, if every reward function declares its range.

    A reward function may carry `reward_range = (low, high)`; with all of them declared,
    the range of `sum(w_i * r_i)` is known at start-up and a mismatch with the
    adapter's `reward_range` is caught before training. Returns (None, None) otherwise.
    """
    lo = hi = 0.0
    for f, w in zip(reward_funcs, weights, strict=True):
        rng = getattr(f, "reward_range", None)
        if rng is None:
            return None, None
        a, b = (float(w) * float(x) for x in rng)
        lo, hi = lo + min(a, b), hi + max(a, b)
    return lo, hi


# ------------------------------------------------------------ per-rollout options
# Some strategies (length_curriculum, cog_drift, clpo) put reset options for the env in
# their plans (`RolloutPlan.options`). An adapter that cannot apply one would train on
# something else than the strategy planned while the strategy believes it did, so every
# adapter states the options it honours and refuses the others at construction.

_OPTION_WHAT = {
    "max_new_tokens": "a per-rollout token budget scored with the composite length reward",
    "format": "a per-sample question format, multiple choice / cloze / open",
    "question": "a restructured question posed instead of the dataset's",
}


def plan_option_keys(strategy: object) -> tuple[str, ...] | None:
    """Reset-option names the strategy's plans can carry: () for none, None if unknown.

    Main option first (`max_new_tokens`, `format`, `question`). A guide declares them
    with a class attribute `option_keys`; the built-in option guides are known here. A
    guide with `sample_options` but neither is unknown (None), and adapters refuse it.
    """
    guide = getattr(strategy, "guide", None)
    if getattr(guide, "sample_options", None) is None:
        return ()
    declared = getattr(type(guide), "option_keys", None)
    if declared is not None:
        return tuple(str(k) for k in declared)
    from lppo_sampling.strategies.formats import FormatGuide
    from lppo_sampling.strategies.length import LengthBudgetGuide
    from lppo_sampling.strategies.restructure import RestructureGuide

    known = (
        (LengthBudgetGuide, ("max_new_tokens", "length_reward", "w_correct", "w_length",
                             "w_format")),
        (FormatGuide, ("format",)),
        (RestructureGuide, ("question", "restructure")),
    )
    for cls, keys in known:
        if isinstance(guide, cls):
            return keys
    return None


def refuse_plan_options(strategy: object, setting: str, integration: str,
                        honoured: frozenset[str] = frozenset()) -> None:
    """Raise `ValueError` (one line) if the strategy plans options `integration` cannot apply.

    Self-prefix guides (self_prefix, lppo_self) are refused too: they guide only from
    successes the trainer hands back (`remember_successes`), which no adapter does.

    Args:
        strategy: the strategy an adapter is being built with.
        setting: the adapter setting that names the strategy (goes first in the message).
        integration: the adapter, as a user knows it (e.g. "TRL's LPPOGRPOTrainer").
        honoured: option names this adapter applies.
    """
    name = getattr(strategy, "name", type(strategy).__name__)
    instead = (f"train it with `lppo train --strategy {name}` (its env applies the option) or "
               f"pick a strategy without per-rollout options (docs/integrations.md)")
    if getattr(getattr(strategy, "guide", None), "source", None) == "self":
        raise ValueError(
            f"{setting}: strategy {name!r} replays the policy's own earlier successes "
            f"(self-prefixes), which {integration} does not hand back to it, so it would never "
            f"guide; {instead}")
    keys = plan_option_keys(strategy)
    if keys is None:
        guide = type(getattr(strategy, "guide", None)).__name__
        raise ValueError(
            f"{setting}: strategy {name!r} ({guide}) sets per-rollout options "
            f"(RolloutPlan.options) that {integration} does not know and cannot apply; "
            f"declare them as {guide}.option_keys or {instead}")
    missing = [k for k in keys if k not in honoured]
    if missing:
        k = missing[0]
        what = _OPTION_WHAT.get(k, "a per-rollout reset option")
        also = ("; the OpenRLHF prompt-file loop (integrations.openrlhf.write_prompts) poses "
                "restructured questions" if k == "question" and "OpenRLHF" not in integration
                else "")
        raise ValueError(
            f"{setting}: strategy {name!r} sets the per-rollout option {k!r} ({what}), which "
            f"{integration} cannot apply; {instead}{also}")


def check_plan_options(plan: object, honoured: frozenset[str], where: str) -> None:
    """Raise `ValueError` if a plan carries an option outside `honoured` (never dropped)."""
    options = getattr(plan, "options", None)
    if options is None:
        return
    seen: set[int] = set()
    for i, d in enumerate(options):
        if id(d) in seen:
            continue
        seen.add(id(d))
        bad = sorted(set(d) - honoured)
        if bad:
            key = plan.keys[i]  # type: ignore[attr-defined]
            key = key.item() if isinstance(key, np.generic) else key
            raise ValueError(
                f"{where}: the plan for sample {key!r} carries the per-rollout option(s) "
                f"{bad}, which this adapter cannot apply (it honours "
                f"{sorted(honoured) or 'none'}); see docs/integrations.md")


def check_pool(strategy: object, setting: str) -> None:
    """Run each role's `check` on the freshly filled pool (e.g. h1 needs depth labels).

    Why: a strategy that reads per-sample labels the adapter did not pass would fail at
    its first `select`, deep inside the library's training loop; this fails at start-up.
    """
    from lppo_sampling.strategies.arms import ArmSelector

    stats = strategy.stats  # type: ignore[attr-defined]
    for role in strategy.roles.values():  # type: ignore[attr-defined]
        try:
            role.check(stats)
        except ValueError as e:
            raise ValueError(f"{setting}: {e}") from None
        if isinstance(role, ArmSelector) and len(stats):
            # with one arm the bandit is uniform sampling: refuse rather than run it silently
            arms = np.unique(np.asarray(stats["category"]))
            if len(arms) < 2:
                name = getattr(strategy, "name", type(role).__name__)
                given = "no labels given" if arms[0] < 0 else "one label"
                raise ValueError(
                    f"{setting}: strategy {name!r} treats category labels as bandit arms, "
                    f"but the pool has one arm ({given}); pass per-sample categories (two "
                    "or more) or use another strategy")
