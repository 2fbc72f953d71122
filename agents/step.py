"""One training step, top to bottom, around one step record of shape (n, G).

    keys     = strategy.select(n)                         # which samples
    plan     = strategy.plan(keys)                        # (n, G) prefix ratios, 0 = unguided
    prompts  = envs.reset(options={"slots": ...})         # the env renders every prompt, once
    rollouts = backend.generate(one request per slot)     # (n, G), in slot order
    rewards  = envs.step(completions)                     # math-verify on prefix + completion
    record   = StepRecord(keys, prompts, prefixes, rollouts, rewards, ...)
    strategy.observe(record.results()); keep = strategy.keep(keys); w = strategy.weights(keys)
    metrics  = learner.update(record.train_batch(keep, w)); backend.sync_weights(model)

The environment is `lppo_env.make_group_env(n * G)`: one env per slot, each reset with its
own problem and prefix, so slot (i, j) of every array is the j-th rollout of `keys[i]`.
Everything the step produced lives in the `StepRecord`; `GroupResults` (for the sampler),
`TrainBatch` (for the learner) and the logged metrics are derived from it, once each.
Group statistics (per-group reward mean and spread) are computed in `group_reward_stats`
only. The metric names are listed, with their meaning, in docs/metrics.md.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.memory import memory_returned_to_os

__all__ = [
    "SAMPLER_DUPLICATES",
    "StepRecord",
    "group_reward_stats",
    "guidance_metrics",
    "generate_with_budgets",
    "slot_options",
    "step_metrics",
    "train_step",
]

# Batch-level values the strategy also reports; the step record already logs each of them
# under the name on the right, so the sampler's copy is dropped (one name per quantity).
SAMPLER_DUPLICATES = {
    "sampler/batch_pass_rate": "rollout/pass_rate",
    "sampler/batch_guided_pass_rate": "rollout/guided_pass_rate",
    "sampler/guided_rollout_frac": "prefix/guided_frac",
    "sampler/keep_frac": "update/groups",
    "sampler/filter_pass_frac": "update/groups",
    "sampler/step": "step",
    "sampler/weight_mean": "batch/weight_mean",
    "sampler/weight_min": "batch/weight_min",
    "sampler/weight_max": "batch/weight_max",
}


@dataclass
class StepRecord:
    """Everything one step rolled out, as (n, G) arrays: row i = `keys[i]`, column = slot.

    Attributes:
        keys: (n,) sample keys chosen by the strategy.
        prompts: (n, G) object, the env's rendered prompt of each slot (chat template,
            assistant header and, when guided, the prefix).
        prefixes: (n, G) object, the expert prefix of each slot ("" = unguided).
        prefix_ratios: (n, G) float, fraction of the solution steps each prefix covers
            (0 = unguided; a planned ratio can give no prefix on a too-short solution).
        rollouts: (n, G) object, the `Rollout` of each slot.
        rewards: (n, G) float, the env's reward of each slot.
        verifier_status: (n, G) object, the verifier's status ("ok", "timeout", ...).
    """

    keys: np.ndarray
    prompts: np.ndarray
    prefixes: np.ndarray
    prefix_ratios: np.ndarray
    rollouts: np.ndarray
    rewards: np.ndarray
    verifier_status: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """(n, G)."""
        return self.rewards.shape  # type: ignore[return-value]

    @property
    def guided(self) -> np.ndarray:
        """(n, G) bool, slots that started from an expert prefix."""
        return np.vectorize(bool, otypes=[bool])(self.prefixes)

    @property
    def response_lengths(self) -> np.ndarray:
        """(n, G) generated tokens per slot (the prefix excluded)."""
        return self._per_slot(lambda r: len(r.response_ids))

    @property
    def prefix_lengths(self) -> np.ndarray:
        """(n, G) prefix tokens per slot."""
        return self._per_slot(lambda r: len(r.prefix_ids))

    @property
    def truncated(self) -> np.ndarray:
        """(n, G) bool, rollouts cut by `max_new_tokens`."""
        return self._per_slot(lambda r: r.finish_reason == "length").astype(bool)

    def solution_steps(self) -> np.ndarray:
        """(n, G) reasoning steps of prefix + completion (the sampler's step statistics)."""
        from lppo_env import split_steps

        return self._per_slot(lambda r: len(split_steps(r.full_text)))

    def _per_slot(self, f: Any) -> np.ndarray:
        return np.array([[f(r) for r in row] for row in self.rollouts], dtype=np.float64)

    def results(self) -> Any:
        """`GroupResults` for `strategy.observe`: rewards, guided flags, lengths, steps."""
        from lppo_sampling import GroupResults

        return GroupResults.build(
            self.keys, self.rewards, guided=self.guided, lengths=self.response_lengths,
            steps=self.solution_steps(),
        )

    def train_batch(self, keep: np.ndarray, weights: np.ndarray, pad_token_id: int) -> Any:
        """`TrainBatch` of the kept groups (row-major, group id = row of the record).

        Returns None when no group is kept (nothing to learn from this step).
        """
        from agents.batch import TrainBatch

        rows = np.flatnonzero(np.asarray(keep, bool))
        if rows.size == 0:
            return None
        g = self.shape[1]
        return TrainBatch.from_rollouts(
            list(self.rollouts[rows].ravel()),
            self.rewards[rows].ravel(),
            index=np.repeat(rows, g),
            weights=np.repeat(np.asarray(weights, np.float64)[rows], g),
            pad_token_id=pad_token_id,
        )


def slot_options(
    keys: np.ndarray,
    prefix_ratios: np.ndarray,
    texts: list[list[str]] | None = None,
    options: tuple[dict, ...] | None = None,
) -> dict[str, Any]:
    """Reset options of a group env with n * G slots: slot i * G + j poses `keys[i]`.

    A ratio <= 0 is an unguided slot; a positive ratio asks the env for an expert prefix
    covering that fraction of the solution (`lppo_env.group_options` per group). With
    `texts` (a self-prefix guide's replayed prefixes, `self_prefix_texts`), a guided slot
    starts from its text instead. `options` (`RolloutPlan.options`, one dict per sample:
    a curriculum's token budget, format or restructured question) is merged into every
    slot of its sample.
    """
    from lppo_env import group_options

    slots: list[dict[str, Any]] = []
    for i, (key, ratios) in enumerate(zip(keys.tolist(), np.asarray(prefix_ratios), strict=True)):
        group = group_options(key, [
            (texts[i][j] if texts is not None else float(r)) if r > 0 else None
            for j, r in enumerate(ratios)
        ])
        extra = options[i] if options is not None else {}
        slots += [{**slot, **extra, "problem_id": key} for slot in group["slots"]]
    return {"slots": slots}


def generate_with_budgets(
    backend: Any, requests: list[Any], sampling: Any, budgets: list[int | None] | None
) -> list[Any]:
    """One rollout per request, in order, each within its token budget (None = the run's).

    A budget is a length curriculum's per-rollout `max_new_tokens`, never above the run's.
    Requests sharing a budget go to the backend together, so a uniform budget is one call.
    """
    if budgets is None or all(b is None for b in budgets):
        return backend.generate(requests, sampling)
    from dataclasses import replace

    out: list[Any] = [None] * len(requests)
    for b in dict.fromkeys(budgets):
        idx = [i for i, x in enumerate(budgets) if x == b]
        cap = sampling if b is None else replace(
            sampling, max_new_tokens=min(int(b), sampling.max_new_tokens))
        for i, r in zip(idx, backend.generate([requests[i] for i in idx], cap), strict=True):
            out[i] = r
    return out


def group_reward_stats(rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-group reward mean and standard deviation, (n,) each, of (n, G) rewards.

    The one place group statistics are computed for metrics; a group whose std is 0
    (all rewards equal) gives no group-relative learning signal.
    """
    rewards = np.asarray(rewards, np.float64)
    return rewards.mean(axis=1), rewards.std(axis=1)


def guidance_metrics(rewards: np.ndarray, guided: np.ndarray) -> dict[str, float | None]:
    """Pass rates of unguided rollouts, guided rollouts and their paired control.

    Only samples the policy is stuck on get guided, so comparing guided rollouts with all
    unguided ones is biased against guidance. The paired control is the unguided rollouts
    of the very groups that had a guided rollout: same samples, same step, no prefix.

    Args:
        rewards: (n, G) rollout rewards in [0, 1].
        guided: (n, G) bool, rollouts that started from an expert prefix.
    """
    rewards, guided = np.asarray(rewards, np.float64), np.asarray(guided, bool)
    unguided = ~guided
    control = unguided & guided.any(axis=1, keepdims=True)

    def mean(mask: np.ndarray) -> float | None:
        return float(rewards[mask].mean()) if mask.any() else None

    return {
        "rollout/pass_rate": mean(unguided),
        "rollout/guided_pass_rate": mean(guided),
        "rollout/guided_control_pass_rate": mean(control),
        "prefix/control_frac": float(control.mean()) if control.size else 0.0,
    }


def step_metrics(
    record: StepRecord, keep: np.ndarray, weights: np.ndarray
) -> dict[str, float | None]:
    """The step's metrics, derived from its record (names and meanings: docs/metrics.md).

    `rollout/*`, `prefix/*` and `batch/*` describe all n groups, before the filter;
    `update/*` the groups the filter kept for the update.
    """
    rewards, guided = record.rewards, record.guided
    kept = np.asarray(keep, bool)
    weights = np.asarray(weights, np.float64)
    _, std = group_reward_stats(rewards)
    lengths = record.response_lengths

    def mean_or_none(x: np.ndarray) -> float | None:
        return float(x.mean()) if x.size else None

    return {
        "rollout/reward_mean": float(rewards.mean()),
        **guidance_metrics(rewards, guided),
        "rollout/frac_zero_std": float((std == 0).mean()),
        "rollout/response_len_mean": float(lengths.mean()),
        "rollout/truncated_frac": float(record.truncated.mean()),
        "rollout/tokens": float(lengths.sum()),
        "prefix/guided_frac": float(guided.mean()),
        # planned guided slots that got no prefix and ran unguided: must stay 0
        "prefix/planned_unusable": float(((record.prefix_ratios > 0) & ~guided).sum()),
        "prefix/ratio_mean": mean_or_none(record.prefix_ratios[guided]),
        "prefix/tokens_mean": mean_or_none(record.prefix_lengths[guided]),
        "batch/weight_mean": float(weights.mean()),
        "batch/weight_min": float(weights.min()),
        "batch/weight_max": float(weights.max()),
        "update/groups": float(kept.sum()),
        "update/reward_mean": mean_or_none(rewards[kept]),
        "update/frac_zero_std": mean_or_none((std[kept] == 0).astype(float)),
        "update/response_tokens": float(lengths[kept].sum()),
        "verifier/timeouts": float((record.verifier_status == "timeout").sum()),
    }


def _object_array(items: list[Any]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


class _Timer:
    """Seconds per phase, summed over the phase's blocks."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - start


def train_step(
    strategy: Any,
    envs: Any,
    backend: Any,
    learner: Any,
    *,
    batch_size: int,
    sampling: Any,
    pad_token_id: int,
) -> tuple[StepRecord, dict[str, Any]]:
    """Select, roll out, score, observe, filter, weight and update: one training step.

    Args:
        strategy: an `lppo_sampling` strategy (select / plan / observe / keep / weights).
        envs: `lppo_env.make_group_env(batch_size * G, ...)`, the env of every slot.
        backend: a `RolloutBackend` (HF `generate` or vLLM).
        learner: a registered learner (`update(TrainBatch) -> metrics`).
        batch_size: n, samples per step.
        sampling: the `SamplingConfig` of the step's rollouts.
        pad_token_id: padding id of the `TrainBatch`.

    Returns:
        The step record and the step's metrics (without `step` and run totals).
    """
    from agents.rollout.base import RolloutRequest
    from lppo_sampling.strategies.self_prefix import remember_successes, self_prefix_texts

    timer = _Timer()
    with timer("time/sampler"):
        keys = strategy.select(batch_size)
        plan = strategy.plan(keys)
        n, g = plan.prefix_ratios.shape
        if envs.num_envs != n * g:
            raise ValueError(f"expected a group env of {n} x {g} slots, got {envs.num_envs}")
        texts = self_prefix_texts(strategy, plan)  # None unless the guide replays successes
        prompts, reset_info = envs.reset(
            options=slot_options(keys, plan.prefix_ratios, texts, plan.options)
        )

    with timer("time/generate"):
        requests = [
            RolloutRequest(prompt=prompt, prefix=prefix)
            for prompt, prefix in zip(prompts, reset_info["prefix"], strict=True)
        ]
        budgets = [o.get("max_new_tokens") for o in plan.options for _ in range(g)] \
            if plan.options is not None else None
        rollouts = generate_with_budgets(backend, requests, sampling, budgets)

    with timer("time/reward"):
        _, rewards, _, _, step_info = envs.step(tuple(r.text for r in rollouts))

    record = StepRecord(
        keys=keys,
        prompts=np.asarray(prompts, dtype=object).reshape(n, g),
        prefixes=np.asarray(reset_info["prefix"], dtype=object).reshape(n, g),
        prefix_ratios=np.asarray(plan.prefix_ratios, np.float64),
        rollouts=_object_array(rollouts).reshape(n, g),
        rewards=np.asarray(rewards, np.float64).reshape(n, g),
        verifier_status=np.asarray(step_info["status"], dtype=object).reshape(n, g),
    )

    with timer("time/sampler"):
        strategy.observe(record.results())
        if texts is not None:  # store this step's unguided successes for later replay
            answers = [envs.envs[0].problem(str(k)).answer for k in keys.tolist()]
            full = [[r.full_text for r in row] for row in record.rollouts]
            remember_successes(strategy, keys, record.rewards, full, answers, record.guided)
        keep = strategy.keep(keys)
        weights = strategy.weights(keys)

    learner_metrics: dict[str, float] = {}
    with timer("time/update"):
        batch = record.train_batch(keep, weights, pad_token_id)
        if batch is not None:
            with memory_returned_to_os():  # the run's peak: activations, gradients
                learner_metrics = learner.update(batch)
            backend.sync_weights(learner.model)

    sampler_metrics = {
        k: v for k, v in strategy.metrics().items() if k not in SAMPLER_DUPLICATES
    }
    metrics = {
        **step_metrics(record, keep, weights),
        **sampler_metrics,
        **learner_metrics,
        **timer.totals,
        "time/step": float(sum(timer.totals.values())),
    }
    return record, metrics
