"""kill -9 at random moments of a tiny `lppo train`; every resumed run ends bitwise equal.

Each chain starts `lppo train` on the tiny model (tiny_train.py, a real child process),
SIGKILLs it at a random moment, resumes it with the same command, kills it again, ... and
finally lets it finish. Moments are drawn from a seeded RNG: either a delay after the
process starts (lands in imports, checkpoint verification and loading, the first steps)
or a delay after the n-th metrics line (lands in a step's generation, reward, update, an
evaluation, or the middle of writing a checkpoint). Every checkpoint the chain wrote must
equal the uninterrupted run's checkpoint of the same step: model weights, optimizer and
learner RNG, sampler state and RNG, python/numpy/torch RNGs (bitwise, `torch.equal`);
and its metrics.jsonl must equal the uninterrupted run's, line for line (timings aside).

The chain seeds are random per session and part of the test ids (`seed-<n>`); the
schedule of each kill is printed. Reproduce one with LPPO_KILL_SEEDS=<n>[,<n>...].
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_train import (
    assert_identical,
    checkpoint_state,
    ensure_tiny_model,
    log_path,
    metrics_without_timings,
    start_training,
)

from agents.checkpoint import checkpoint_step, verify_checkpoint

STEPS = 10
KILLS_PER_CHAIN = 3
FLAGS = ("--steps", str(STEPS), "--save-every", "1", "--keep-checkpoints", "100",
         "--eval-size", "4", "--eval-every", "3")


def _seeds() -> list[int]:
    given = os.environ.get("LPPO_KILL_SEEDS")
    if given:
        return [int(s) for s in given.split(",")]
    return [random.SystemRandom().randrange(10**6) for _ in range(4)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, tmp_path_factory) -> tuple[Path, float, float]:
    """The reference run, its mean seconds per step, and the seconds a resume takes with no
    step left (start-up, checkpoint checks, loading); both scale the kill delays to the
    speed of this machine."""
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = start_training(tiny_dir, run, *FLAGS)
    proc.join(900)
    assert proc.exitcode == 0, log_path(run).read_text()[-3000:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(STEPS + 1))
    finished = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(run, finished)
    t0 = time.monotonic()
    proc = start_training(tiny_dir, finished, *FLAGS)
    proc.join(900)
    assert proc.exitcode == 0, log_path(finished).read_text()[-3000:]
    resume_seconds = time.monotonic() - t0
    return run, float(np.mean([r["time/step"] for r in rows[1:]])), resume_seconds


def _checkpoints_done(run: Path) -> list[int]:
    folder = run / "checkpoints"
    return sorted(checkpoint_step(p) for p in folder.glob("step-*")) if folder.is_dir() else []


def _lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def _kill_at_random_moment(
    tiny_dir: Path, run: Path, rng: np.random.Generator, step_seconds: float,
    resume_seconds: float,
) -> str:
    """Start (or resume) the run and SIGKILL it at a random moment; describe the moment."""
    done = _checkpoints_done(run)
    proc = start_training(tiny_dir, run, *FLAGS)
    if rng.random() < 0.3:
        # within the part of the run still ahead (a resume with no step left plus the steps
        # left, measured on the reference run): a fast machine cannot finish before the kill
        remaining = resume_seconds + (STEPS - (done[-1] if done else 0)) * step_seconds
        delay = float(rng.uniform(0, min(4.0, 0.7 * remaining)))
        moment = f"{delay:.2f} s after start"
    else:
        # never wait for the last step's line: the run would finish before the kill
        target = min(_lines(run) + int(rng.integers(0, 3)), STEPS - 1)
        deadline = time.time() + 600
        while _lines(run) < target and proc.is_alive():
            assert time.time() < deadline, "no progress in 600 s"
            time.sleep(0.01)
        delay = float(rng.uniform(0, 1.5 * step_seconds))
        moment = f"{delay:.2f} s after metrics line {target}"
    time.sleep(delay)
    assert proc.is_alive(), f"the run ended before the kill ({moment}): exit {proc.exitcode}"
    proc.kill()  # SIGKILL
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL, proc.exitcode
    return f"killed {moment}; checkpoints on disk: {_checkpoints_done(run)}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", _seeds(), ids=lambda s: f"seed-{s}")
def test_sigkill_at_random_moments_then_resume_ends_identical(
    seed, tiny_dir, uninterrupted, tmp_path
) -> None:
    reference, step_seconds, resume_seconds = uninterrupted
    rng = np.random.default_rng(seed)
    run = tmp_path / "run"
    for k in range(KILLS_PER_CHAIN):
        what = _kill_at_random_moment(tiny_dir, run, rng, step_seconds, resume_seconds)
        print(f"seed {seed} kill {k + 1}: {what}")

    proc = start_training(tiny_dir, run, *FLAGS)  # the last resume runs to the end
    proc.join(900)
    assert proc.exitcode == 0, log_path(run).read_text()[-3000:]

    written = sorted((run / "checkpoints").glob("step-*"))
    assert [checkpoint_step(p) for p in written] == list(range(1, STEPS + 1))
    for ckpt in written:
        verify_checkpoint(ckpt)
        assert_identical(
            checkpoint_state(ckpt), checkpoint_state(reference / "checkpoints" / ckpt.name),
            ckpt.name,
        )
    assert metrics_without_timings(run) == metrics_without_timings(reference)
    assert not list((run / "checkpoints").glob(".tmp-*"))  # killed writers' leftovers went
