r"""`lppo compare`: a matrix of strategies × learners × seeds on one data set, model and budget.

Why a separate command: a claim such as "LPPO learns faster than uniform sampling" is only
worth something when every arm saw the same model, data, held-out set, step budget and
seeds, and when the numbers come from code rather than from a hand-copied table. This
module runs the matrix and derives everything from each run's `metrics.jsonl`:

    out/<strategy>__<learner>__s<seed>/   one Trainer run dir (metrics.jsonl, checkpoints)
    out/<run>/summary.json                final/best held-out accuracy, steps and tokens to a
                                          threshold, tokens generated, compute time, complete
    out/summary.md                        table per arm (strategy, learner), mean ± std over seeds
    out/matrix.json                       the same, machine-readable (runs + arms)
    out/curves.png                        held-out accuracy vs step, band = ± std over seeds
    out/curves_tokens.png                 held-out accuracy vs generated tokens

Every run uses `resume=True`, so rerunning the same command after an interruption skips
finished runs and continues unfinished ones from their last checkpoint. By default each run
is a subprocess (`python -m agents.cli train --config ...`): a crash or an out-of-memory
kill in one run is recorded in its summary and the matrix goes on.

Example::

    lppo compare --strategies uniform lppo --learners grpo --seeds 0 1 2 \
        --steps 40 --eval-size 200 --eval-every 5 --out runs/cmp
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.config import ConfigError, TrainConfig, load_config
from agents.metrics import read_metrics

__all__ = [
    "RunSpec",
    "add_compare_parser",
    "aggregate",
    "build_matrix",
    "eval_curve",
    "plot_arm_curves",
    "run_compare",
    "run_matrix",
    "steps_to_reach",
    "summarize_matrix",
    "summarize_run",
    "write_summary_md",
]

REPO = Path(__file__).resolve().parents[1]
ACC = "eval/accuracy"
TOKENS = "rollout/tokens_total"
# Fields the matrix itself sets per run; every other TrainConfig field is shared by all arms.
MATRIX_FIELDS = ("strategy", "learner", "seed", "run_dir", "resume")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix: its name, its arm and the full TrainConfig it runs."""

    name: str
    strategy: str
    learner: str
    seed: int
    cfg: TrainConfig

    @property
    def run_dir(self) -> Path:
        """The run's directory (checkpoints, metrics.jsonl, summary.json)."""
        return Path(self.cfg.run_dir)


def run_name(strategy: str, learner: str, seed: int) -> str:
    """Directory name of a run; parseable back into (strategy, learner, seed)."""
    return f"{strategy}__{learner}__s{seed}"


def build_matrix(
    base: TrainConfig,
    strategies: Sequence[str],
    learners: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
) -> list[RunSpec]:
    """All runs of the matrix, in execution order.

    Order is learner-major, then seed, then strategy: if the matrix is stopped early, what
    has finished is a complete comparison of every strategy on the first seeds of the first
    learner, not five seeds of one strategy and nothing to compare it with.

    Every run shares one held-out set (`split_seed`) and, unless `base.eval_cache` says
    otherwise, the step-0 evaluation cache `out/eval_cache`: the untrained model is
    evaluated once per matrix, not once per run.
    """
    if not strategies or not learners or not seeds:
        raise ConfigError("compare needs at least one strategy, one learner and one seed")
    for what, xs in (("strategies", strategies), ("learners", learners), ("seeds", seeds)):
        if len(set(xs)) != len(xs):
            raise ConfigError(f"--{what} lists a value twice: {list(xs)}")
    specs = []
    for learner in learners:
        for seed in seeds:
            for strategy in strategies:
                name = run_name(strategy, learner, seed)
                cfg = dataclasses.replace(
                    base,
                    strategy=strategy,
                    learner=learner,
                    seed=int(seed),
                    run_dir=str(Path(out) / name),
                    resume=True,
                    eval_cache=base.eval_cache or str(Path(out) / "eval_cache"),
                )
                specs.append(RunSpec(name, strategy, learner, int(seed), cfg))
    return specs


# --------------------------------------------------------------------------- metrics → numbers
def eval_curve(records: Sequence[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """(step, tokens generated so far, held-out accuracy) at every evaluated step."""
    out = []
    for r in records:
        if r.get(ACC) is not None and r.get("step") is not None:
            out.append((int(r["step"]), float(r.get(TOKENS) or 0.0), float(r[ACC])))
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
        and the final step was evaluated (when evaluation is on). `compute_s` sums the
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
    curve = eval_curve(records)
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
        "final_accuracy": curve[-1][2] if curve else None,
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


def _mean_std(xs: Sequence[float | None]) -> tuple[float | None, float | None, int]:
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
            "final_accuracy",
            "best_accuracy",
            "tokens_generated",
            "compute_s",
            "steps_to_threshold",
            "tokens_to_threshold",
        ):
            m, sd, n = _mean_std([r.get(key) for r in done])
            row[key] = m
            row[key + "_std"] = sd
            if key == "steps_to_threshold":
                row["n_reached"] = n
        out.append(row)
    return out


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
        m, sd, n = _mean_std(acc)
        out.append({"step": step, "tokens": sum(tok) / len(tok), "mean": m, "std": sd, "n": n})
    return out


# --------------------------------------------------------------------------- outputs
def _fmt(m: float | None, sd: float | None, *, pct: bool = False, digits: int = 1) -> str:
    if m is None:
        return "–"
    if pct:
        return f"{100 * m:.{digits}f}" + ("" if sd is None else f" ± {100 * sd:.{digits}f}")
    return f"{m:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def write_summary_md(
    arms: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    threshold: float | None = None,
    title: str = "lppo compare",
) -> Path:
    """The per-arm table as markdown (accuracies in percent, mean ± std over complete seeds)."""
    thr = f" ≥ {100 * threshold:.1f}%" if threshold is not None else ""
    lines = [
        f"# {title}",
        "",
        "Generated by `agents/compare.py` from each run's metrics.jsonl; mean ± std over the "
        "complete seeds of each arm (held-out accuracy = greedy pass@1, in %).",
        "",
        f"| strategy | learner | complete | initial acc | final acc | best acc | steps to{thr} "
        "| tokens generated | compute (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in arms:
        reach = "–"
        if threshold is not None and a["n_complete"]:
            reach = (
                f"{_fmt(a['steps_to_threshold'], a['steps_to_threshold_std'])} "
                f"({a['n_reached']}/{a['n_complete']} reached)"
            )
        lines.append(
            f"| {a['strategy']} | {a['learner']} | {a['n_complete']}/{a['n_runs']}"
            f"{'' if a['complete'] else ' (incomplete)'} "
            f"| {_fmt(a['initial_accuracy'], a['initial_accuracy_std'], pct=True)} "
            f"| {_fmt(a['final_accuracy'], a['final_accuracy_std'], pct=True)} "
            f"| {_fmt(a['best_accuracy'], a['best_accuracy_std'], pct=True)} "
            f"| {reach} "
            f"| {_fmt(a['tokens_generated'], a['tokens_generated_std'], digits=0)} "
            f"| {_fmt(a['compute_s'], a['compute_s_std'], digits=0)} |"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_arm_curves(
    summaries: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    x: str = "step",
    title: str | None = None,
) -> Path | None:
    """Held-out accuracy per arm: mean line, band = ± std over seeds; x = step or tokens.

    An arm is drawn from its complete seeds, like the table; an arm with none yet is drawn
    from its running seeds (up to the steps all of them reached, dotted), so a running
    matrix can be looked at. The legend says which, and how many seeds.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in summaries:
        arms.setdefault((s["strategy"], s["learner"]), []).append(s)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = 0
    for (strategy, learner), runs in sorted(arms.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        done = [r for r in runs if r.get("complete")]
        curve = mean_curve(done or runs)
        if not curve:
            continue
        n = curve[-1]["n"]
        what = f"{n} seed{'s' if n != 1 else ''}" + ("" if done else " running")
        xs = [c["step" if x == "step" else "tokens"] for c in curve]
        m = [100 * c["mean"] for c in curve]
        sd = [100 * (c["std"] or 0.0) for c in curve]  # one seed: no band
        style = ":" if not done else ("-" if learner == "grpo" else "--")
        (line,) = ax.plot(
            xs,
            m,
            style,
            marker="o" if len(xs) < 30 else None,
            ms=3,
            label=f"{strategy}/{learner} ({what})",
        )
        ax.fill_between(
            xs,
            [a - b for a, b in zip(m, sd, strict=True)],
            [a + b for a, b in zip(m, sd, strict=True)],
            color=line.get_color(),
            alpha=0.18,
            linewidth=0,
        )
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training step" if x == "step" else "generated tokens (training rollouts)")
    ax.set_ylabel("held-out accuracy, greedy pass@1 (%)")
    ax.set_title(title or "held-out accuracy (mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def summarize_matrix(
    specs: Sequence[RunSpec],
    out: str | Path,
    *,
    threshold: float | None = None,
    title: str = "lppo compare",
) -> dict[str, Any]:
    """Write every run's summary.json, then summary.md, matrix.json and the two figures."""
    out = Path(out)
    summaries = []
    for spec in specs:
        s = summarize_run(spec.run_dir, threshold=threshold, target_steps=spec.cfg.steps)
        s.update(strategy=spec.strategy, learner=spec.learner, seed=spec.seed)
        status = spec.run_dir / "compare_status.json"
        if status.is_file():
            s["last_attempt"] = json.loads(status.read_text())
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        (spec.run_dir / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
        summaries.append(s)
    arms = aggregate(summaries)
    write_summary_md(arms, out / "summary.md", threshold=threshold, title=title)
    (out / "matrix.json").write_text(
        json.dumps(
            {
                "threshold": threshold,
                "arms": arms,
                "runs": [{k: v for k, v in s.items() if k != "curve"} for s in summaries],
            },
            indent=2,
        )
        + "\n"
    )
    figs = {
        "curves": plot_arm_curves(summaries, out / "curves.png", x="step"),
        "curves_tokens": plot_arm_curves(summaries, out / "curves_tokens.png", x="tokens"),
    }
    return {
        "runs": summaries,
        "arms": arms,
        "figures": {k: str(v) if v else None for k, v in figs.items()},
    }


# --------------------------------------------------------------------------- execution
def _train_argv(cfg: TrainConfig) -> list[str]:
    """`lppo train` flags for every field of `cfg`.

    Flags rather than `--config file`: YAML 1.1 reads a JSON float such as `5e-06` as a
    string, so a JSON config would not round-trip through `load_config`.
    """
    argv = ["train"]
    for k, v in cfg.to_dict().items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            argv.append(flag if v else "--no-" + k.replace("_", "-"))
        elif isinstance(v, dict):
            argv += [flag, json.dumps(v)]
        elif v is not None:
            argv += [flag, repr(v) if isinstance(v, float) else str(v)]
    return argv


def _run_subprocess(spec: RunSpec, timeout: float | None) -> dict[str, Any]:
    """Run one Trainer in a child process; its output goes to run_dir/train.log."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    spec.cfg.save(spec.run_dir / "compare_config.json")  # for the record
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "agents.cli", *_train_argv(spec.cfg)]
    with open(spec.run_dir / "train.log", "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        try:
            rc = subprocess.run(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -9
    return {"returncode": rc, "error": None if rc == 0 else f"exit status {rc}; see train.log"}


def _run_in_process(spec: RunSpec) -> dict[str, Any]:
    """Run one Trainer in this process (faster start; a crash is caught, not a segfault)."""
    from agents.trainer import Trainer

    try:
        summary = Trainer(spec.cfg).run()
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - one failing run must not stop the matrix
        return {"returncode": 1, "error": f"{type(e).__name__}: {e}"}
    return {"returncode": 130 if summary["interrupted"] else 0, "error": None}


def run_matrix(
    specs: Sequence[RunSpec],
    *,
    subprocesses: bool = True,
    timeout: float | None = None,
    progress: bool = True,
    prune_checkpoints: bool = False,
) -> list[dict[str, Any]]:
    """Run every spec that is not complete yet, sequentially; return one status per spec.

    A complete run (per `summarize_run`) is skipped without loading anything; an incomplete
    one resumes from its latest checkpoint. Statuses are also written to
    run_dir/compare_status.json so a failure is visible in the summary.

    Args:
        specs: the runs, from `build_matrix`.
        subprocesses: one child process per run (a crash does not stop the matrix).
        timeout: seconds per run (subprocess mode).
        progress: show a progress bar over runs.
        prune_checkpoints: delete a run's checkpoints once it is complete. A checkpoint of the
            135M default model with its AdamW state is ~1.6 GB, so a 24-run matrix would keep
            ~40 GB of files that no summary needs (completeness is read from metrics.jsonl).
    """
    from tqdm.auto import tqdm

    statuses = []
    complete = [summarize_run(s.run_dir, target_steps=s.cfg.steps)["complete"] for s in specs]
    n_done = sum(complete)
    # The bar counts only runs left to train, so its rate and ETA are not skewed by skips.
    desc = f"lppo compare ({n_done} complete)" if n_done else "lppo compare"
    bar = tqdm(total=len(specs) - n_done, desc=desc, unit="run", disable=not progress)
    for spec, done_before in zip(specs, complete, strict=True):
        if done_before:
            statuses.append({"run": spec.name, "skipped": True, "returncode": 0, "error": None})
            if prune_checkpoints:
                shutil.rmtree(spec.run_dir / "checkpoints", ignore_errors=True)
            continue
        bar.set_postfix_str(spec.name)
        t0 = time.time()
        st = _run_subprocess(spec, timeout) if subprocesses else _run_in_process(spec)
        st = {
            "run": spec.name,
            "skipped": False,
            "wall_s": time.time() - t0,
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            **st,
        }
        (spec.run_dir / "compare_status.json").write_text(json.dumps(st, indent=2) + "\n")
        statuses.append(st)
        done = summarize_run(spec.run_dir, target_steps=spec.cfg.steps)["complete"]
        if prune_checkpoints and done:
            shutil.rmtree(spec.run_dir / "checkpoints", ignore_errors=True)
        bar.update()
        if st["returncode"] == 130:  # the run was Ctrl-C'd: the user wants the matrix to stop
            break
    bar.close()
    return statuses


# --------------------------------------------------------------------------- CLI
def _csv_or_list(values: Sequence[str]) -> list[str]:
    """Accept both `--strategies a b` and `--strategies a,b`."""
    return [v for item in values for v in item.split(",") if v]


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `lppo compare` (called by agents.cli.build_parser)."""
    from agents.cli import _field_docs, _json_arg

    p = subparsers.add_parser(
        "compare",
        help="matrix of strategies × learners × seeds; summary table and curves",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--strategies", nargs="+", default=["uniform", "lppo"], help="strategy names")
    p.add_argument("--learners", nargs="+", default=["grpo"], help="learner names")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="output root")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="report the first step whose held-out accuracy reaches this (0-1)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML/JSON of TrainConfig fields shared by every run",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run each Trainer in this process instead of a subprocess",
    )
    p.add_argument(
        "--run-timeout", type=float, default=None, help="seconds per run (subprocess mode)"
    )
    p.add_argument(
        "--prune-checkpoints",
        action="store_true",
        help="delete a run's checkpoints once it is complete (saves ~1.6 GB per default-model run)",
    )
    p.add_argument(
        "--summarize-only",
        action="store_true",
        help="do not train; only (re)write summaries and figures from existing runs",
    )
    docs = _field_docs(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in MATRIX_FIELDS:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": docs.get(f.name, "")}
        if kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif kind.startswith("dict"):
            kw.update(type=_json_arg, metavar="JSON")
        elif kind in ("int", "float"):
            kw["type"] = int if kind == "int" else float
        p.add_argument(flag, **kw)
    return p


def run_compare(args: argparse.Namespace) -> int:
    """Entry point of `lppo compare`: validate, run the matrix, write the summaries."""
    from agents.trainer import preflight

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in MATRIX_FIELDS and getattr(args, f.name, None) is not None
    }
    base = load_config(args.config, overrides)
    if base.eval_size == 0:
        raise ConfigError("compare needs held-out accuracy: eval_size must be >= 1")
    specs = build_matrix(
        base, _csv_or_list(args.strategies), _csv_or_list(args.learners), args.seeds, args.out
    )
    for spec in {(s.strategy, s.learner): s for s in specs}.values():
        preflight(spec.cfg)  # every name checked before the first (long) run starts
    args.out.mkdir(parents=True, exist_ok=True)
    statuses = []
    if not args.summarize_only:
        statuses = run_matrix(
            specs,
            subprocesses=not args.in_process,
            timeout=args.run_timeout,
            progress=base.progress,
            prune_checkpoints=args.prune_checkpoints,
        )
    result = summarize_matrix(specs, args.out, threshold=args.threshold)
    failed = [s for s in statuses if s["returncode"] not in (0, None)]
    print(
        json.dumps(
            {
                "out": str(args.out),
                "summary": str(args.out / "summary.md"),
                "figures": result["figures"],
                "complete": sum(r["complete"] for r in result["runs"]),
                "runs": len(specs),
                "failed": [f"{s['run']}: {s['error']}" for s in failed],
            },
            indent=2,
        )
    )
    return 1 if failed else 0
