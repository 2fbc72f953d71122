"""Numbers of a comparison, derived from each run's `metrics.jsonl` and nothing else.

Per run (`summarize_run`): final/best held-out accuracy, the first step and tokens at which
a threshold is reached, tokens generated, compute time, completeness. Per arm
(`aggregate`, `mean_curve`): mean ± sample std over the complete seeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.metrics import read_metrics

__all__ = [
    "ACC",
    "SUBSET_ACC",
    "TOKENS",
    "curve_metric",
    "aggregate",
    "eval_curve",
    "mean_curve",
    "steps_to_reach",
    "summarize_run",
]

ACC = "eval/accuracy"
SUBSET_ACC = "eval/subset_accuracy"
TOKENS = "rollout/tokens_total"


def curve_metric(records: Sequence[dict[str, Any]]) -> str:
    """The accuracy every evaluation of the run measured alike.

    A run with `eval_subset` evaluates the whole held-out set only at its first and last
    step and a fixed subset in between; every evaluation logs the subset's accuracy, so
    its curve is that one. Otherwise every evaluation covers the whole set.
    """
    evals = [r for r in records if r.get(ACC) is not None and r.get("step") is not None]
    if evals and all(r.get(SUBSET_ACC) is not None for r in evals):
        return SUBSET_ACC
    return ACC


def eval_curve(
    records: Sequence[dict[str, Any]], key: str | None = None
) -> list[tuple[int, float, float]]:
    """(step, tokens generated so far, held-out accuracy) at every evaluated step.

    The accuracy is `key`, by default `curve_metric`'s (the fixed subset for a run with
    `eval_subset`).
    """
    key = key or curve_metric(records)
    out = []
    for r in records:
        if r.get(ACC) is not None and r.get("step") is not None:
            out.append((int(r["step"]), float(r.get(TOKENS) or 0.0), float(r[key])))
    return out


def steps_to_reach(
    curve: Sequence[tuple[int, float, float]], target: float
) -> tuple[int, float] | None:
    """First evaluated (step, tokens) whose held-out accuracy is >= `target`, or None.

    Resolution is the evaluation interval: a run that crossed the target between two
    evaluations is credited at the later one (never earlier than measured).
    """
    for step, tokens, acc in curve:
        if acc >= target - 1e-12:
            return step, tokens
    return None


def summarize_run(
    run_dir: str | Path, *, threshold: float | None = None, target_steps: int | None = None
) -> dict[str, Any]:
    """Numbers of one run, from its metrics.jsonl and config.json only.

    Args:
        run_dir: a Trainer run directory.
        threshold: held-out accuracy whose first crossing is reported (None: not reported).
        target_steps: the step budget; default: `steps` from the run's config.json.

    Returns:
        A JSON-able dict. `complete` is True when the last logged step reached the budget
        and the final step was evaluated (when evaluation is on). `curve`,
        `initial_accuracy`, `best_accuracy` and `final_curve_accuracy` are on the curve's
        accuracy (`curve_metric`); `final_accuracy` is the last evaluation's whole held-out
        set and `initial_heldout_accuracy` the step-0 evaluation's, so the two compare on the
        same problems (each the same number as its curve value when the run has no
        `eval_subset`). `compute_s` sums the
        per-step and per-eval times over all resumed segments (model loading excluded),
        which is what "wall time" should mean for a run that was interrupted and resumed.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    try:
        records = read_metrics(run_dir)
    except FileNotFoundError:
        records = []
    budget = int(target_steps if target_steps is not None else cfg.get("steps", 0))
    steps_done = max((int(r.get("step", 0)) for r in records), default=0)
    metric = curve_metric(records)
    curve = eval_curve(records, metric)
    last_eval = next((r for r in reversed(records) if r.get(ACC) is not None), None)
    first_eval = next((r for r in records if r.get(ACC) is not None), None)
    wants_eval = int(cfg.get("eval_size", 1)) > 0
    complete = (
        bool(budget)
        and steps_done >= budget
        and (not wants_eval or any(s == steps_done for s, _, _ in curve))
    )
    tokens = max((float(r.get(TOKENS) or 0.0) for r in records), default=0.0)
    compute = sum(
        float(r.get("time/step") or 0.0) + float(r.get("time/eval") or 0.0) for r in records
    )
    out: dict[str, Any] = {
        "run": run_dir.name,
        "strategy": cfg.get("strategy"),
        "learner": cfg.get("learner"),
        "seed": cfg.get("seed"),
        "steps_budget": budget,
        "steps_done": steps_done,
        "complete": complete,
        "initial_accuracy": curve[0][2] if curve and curve[0][0] == 0 else None,
        "initial_heldout_accuracy": (
            float(first_eval[ACC]) if first_eval is not None and first_eval.get("step") == 0
            else None),
        "final_accuracy": float(last_eval[ACC]) if last_eval is not None else None,
        "final_curve_accuracy": curve[-1][2] if curve else None,
        "curve_metric": metric,
        "final_step": curve[-1][0] if curve else None,
        "best_accuracy": max(a for _, _, a in curve) if curve else None,
        "best_step": max(curve, key=lambda c: (c[2], -c[0]))[0] if curve else None,
        "tokens_generated": tokens,
        "compute_s": compute,
        "n_evals": len(curve),
        "curve": [{"step": s, "tokens": t, "accuracy": a} for s, t, a in curve],
    }
    if threshold is not None:
        hit = steps_to_reach(curve, threshold)
        out["threshold"] = threshold
        out["steps_to_threshold"] = hit[0] if hit else None
        out["tokens_to_threshold"] = hit[1] if hit else None
    return out


def mean_std(xs: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample std (ddof=1; None for one value: no spread estimate) and the count."""
    v = [float(x) for x in xs if x is not None]
    if not v:
        return None, None, 0
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return m, sd, len(v)


def aggregate(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per arm (strategy, learner): mean ± std over seeds of every run number.

    Only complete runs enter the means, so an arm with an unfinished seed is not compared
    on a shorter budget; `n_runs` / `n_complete` say how much of the arm exists.
    `steps_to_threshold` is averaged over the seeds that reached it (`n_reached` of them).
    """
    arms: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in summaries:
        arms.setdefault((s["strategy"], s["learner"]), []).append(s)
    out = []
    for (strategy, learner), runs in arms.items():
        done = [r for r in runs if r["complete"]]
        row: dict[str, Any] = {
            "strategy": strategy,
            "learner": learner,
            "n_runs": len(runs),
            "n_complete": len(done),
            "seeds": sorted(r["seed"] for r in runs),
            "complete": len(done) == len(runs),
        }
        for key in (
            "initial_accuracy",
            "initial_heldout_accuracy",
            "final_accuracy",
            "final_curve_accuracy",
            "best_accuracy",
            "tokens_generated",
            "compute_s",
            "steps_to_threshold",
            "tokens_to_threshold",
        ):
            m, sd, n = mean_std([r.get(key) for r in done])
            row[key] = m
            row[key + "_std"] = sd
            if key == "steps_to_threshold":
                row["n_reached"] = n
        out.append(row)
    return out


def initial_on_final_set(arm: dict[str, Any]) -> tuple[float | None, float | None]:
    """(mean, std) of an arm's step-0 accuracy on the problems its final accuracy is taken on.

    Summaries written before `initial_heldout_accuracy` existed fall back to the curve's.
    """
    if arm.get("initial_heldout_accuracy") is not None:
        return arm["initial_heldout_accuracy"], arm.get("initial_heldout_accuracy_std")
    return arm.get("initial_accuracy"), arm.get("initial_accuracy_std")


def mean_curve(summaries: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Mean ± std over seeds of held-out accuracy at the steps every seed evaluated.

    x for the token plot is the mean over seeds of tokens generated by that step (seeds
    generate different lengths, so tokens at a given step differ slightly between seeds).
    """
    curves = [{c["step"]: c for c in s["curve"]} for s in summaries if s["curve"]]
    if not curves:
        return []
    common = sorted(set.intersection(*(set(c) for c in curves)))
    out = []
    for step in common:
        acc = [c[step]["accuracy"] for c in curves]
        tok = [c[step]["tokens"] for c in curves]
        m, sd, n = mean_std(acc)
        out.append({"step": step, "tokens": sum(tok) / len(tok), "mean": m, "std": sd, "n": n})
    return out
