"""Running the matrix: each incomplete run in a child process (or in this one), in order.

A complete run is skipped without loading anything; an unfinished one resumes from its
latest checkpoint (every run has `resume=True`). A crash or an out-of-memory kill of one
child is recorded in its `compare_status.json` and the matrix goes on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from agents.compare.matrix import RunSpec
from agents.compare.stats import summarize_run

__all__ = ["run_matrix"]


def _run_subprocess(spec: RunSpec, timeout: float | None) -> dict[str, Any]:
    """Run one Trainer in a child process; its output goes to run_dir/train.log."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    config = spec.run_dir / "compare_config.json"
    spec.cfg.save(config)  # the run's config, read back by the child: what runs is on disk
    cmd = [sys.executable, "-m", "agents.cli", "train", "--config", str(config)]
    with open(spec.run_dir / "train.log", "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        try:
            rc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
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
