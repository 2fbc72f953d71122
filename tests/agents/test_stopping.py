"""Graceful stop: SIGTERM and SIGINT, whatever disposition the process inherited.

Three layers:
- `GracefulStop` itself, in-process (handlers over inherited dispositions, abandonable
  regions, the optimizer-step commit, a second Ctrl-C in a child python);
- the trainer, in-process, with the signal sent at a chosen moment: during generation
  (the step is undone), after the first optimizer step (the step is finished), during an
  evaluation (the evaluation is dropped); the checkpoint written on stop is compared
  bitwise with an uninterrupted run;
- `lppo train` in a child process started with a given disposition (SIGINT ignored, as
  under `nohup cmd &`, or the default), signalled from outside: exit status 128 + signal,
  within seconds, one "stopped by ..." line, an intact checkpoint equal to the uninterrupted
  run's. The child sets its dispositions itself, so nothing depends on how pytest was
  started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_train import (
    assert_identical,
    checkpoint_state,
    ensure_tiny_model,
    log_path,
    metrics_without_timings,
    start_training,
)

from agents.checkpoint import verify_checkpoint
from agents.config import TrainConfig
from agents.stopping import GracefulStop, StopRequested, commit_on_optimizer_step, exit_status
from agents.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
STEPS = 8


def _recorder(calls: list[int]):
    def handler(signum, frame) -> None:
        calls.append(signum)

    return handler


@pytest.fixture
def restore_signals():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in before.items():
        signal.signal(s, h)


def _deliver(signum: int) -> None:
    """Send `signum` to this process and let Python run its handler."""
    os.kill(os.getpid(), signum)
    for _ in range(100):
        time.sleep(0.001)


# ---------------------------------------------------------------- GracefulStop
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("inherited", ["ignored", "own-handler"])
def test_stop_handlers_replace_any_inherited_disposition_and_restore_it(
    signum, inherited, restore_signals
) -> None:
    calls: list[int] = []
    previous = signal.SIG_IGN if inherited == "ignored" else _recorder(calls)
    signal.signal(signum, previous)
    with GracefulStop() as stop:
        assert stop.installed and not stop.requested
        _deliver(signum)
        assert stop.requested and stop.signal_name == signal.Signals(signum).name
    assert signal.getsignal(signum) is previous and calls == []
    _deliver(signum)  # the inherited disposition is back
    assert calls == ([] if inherited == "ignored" else [signum])


def test_abandonable_region_raises_at_once_and_commit_ends_it(restore_signals) -> None:
    reached = []
    with GracefulStop() as stop:
        with pytest.raises(StopRequested) as e, stop.abandonable():
            try:
                _deliver(signal.SIGTERM)
                reached.append("after the signal")
            except Exception:  # noqa: BLE001 - library code that swallows errors
                reached.append("swallowed")
        assert reached == [] and e.value.signum == signal.SIGTERM
        with pytest.raises(StopRequested):  # requested already: entering raises
            with stop.abandonable():
                reached.append("entered")
        assert reached == []

    with GracefulStop() as stop, stop.abandonable():
        stop.commit()
        _deliver(signal.SIGINT)  # past the point of no return: a flag only
        reached.append("finished")
        _deliver(signal.SIGTERM)  # a repeated stop signal changes nothing
    assert reached == ["finished"] and stop.signal_name == "SIGINT"


def test_first_optimizer_step_is_the_point_of_no_return(restore_signals) -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    with GracefulStop() as stop, commit_on_optimizer_step(stop):
        with pytest.raises(StopRequested), stop.abandonable():
            p.sum().backward()  # gradients only: still abandonable
            _deliver(signal.SIGTERM)
    with GracefulStop() as stop, commit_on_optimizer_step(stop), stop.abandonable():
        p.sum().backward()
        opt.step()
        _deliver(signal.SIGTERM)  # the weights changed: no raise
    assert stop.requested
    with GracefulStop() as stop:  # the hook is gone once its context is left
        with pytest.raises(StopRequested), stop.abandonable():
            opt.step()
            _deliver(signal.SIGTERM)


def test_second_ctrl_c_exits_at_once_and_repeated_sigterm_does_not() -> None:
    code = (
        "import os, signal, sys, time\n"
        "from agents.stopping import GracefulStop\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "with GracefulStop() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.2); print('still running', stop.signal_name, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "print('not reached')\n"
    )
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 130 and time.time() - t0 < 25, proc.stderr
    assert proc.stdout == "still running SIGTERM\n"
    assert "second SIGINT: exiting now" in proc.stderr


def test_exit_status_follows_the_shell_convention() -> None:
    assert (exit_status(None), exit_status("SIGINT"), exit_status("SIGTERM")) == (0, 130, 143)


# ---------------------------------------------------------------- the trainer, in-process
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _cfg(model: Path, run: Path, **kw) -> TrainConfig:
    base = dict(
        model=str(model), run_dir=str(run), steps=STEPS, batch_size=3, group_size=3,
        max_new_tokens=12, eval_size=0, save_every=100, keep_checkpoints=100, progress=False,
        data_kwargs={"size": 60}, lr=1e-3,
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, tmp_path_factory) -> Path:
    """The reference: every step checkpointed, never stopped (one thread, as the children)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(_cfg(tiny_dir, run, save_every=1)).run()
    finally:
        torch.set_num_threads(threads)
    return run


def _same_as_uninterrupted(run: Path, reference: Path, step: int) -> None:
    ckpt = run / "checkpoints" / f"step-{step:06d}"
    verify_checkpoint(ckpt)
    assert (run / "checkpoints" / "latest").read_text().strip() == ckpt.name
    assert_identical(
        checkpoint_state(ckpt), checkpoint_state(reference / "checkpoints" / ckpt.name), ckpt.name
    )
    assert metrics_without_timings(run) == metrics_without_timings(reference)[:step]


def test_sigterm_during_generation_abandons_the_step_and_undoes_it(
    tiny_dir, uninterrupted, tmp_path, restore_signals, caplog
) -> None:
    """Deliberate bug caught: abandoning without restoring the sampler, RNGs or learner
    state (the saved step-3 checkpoint would differ from the uninterrupted run's)."""
    t = Trainer(_cfg(tiny_dir, tmp_path / "run"))
    generate = t.backend.generate

    def generate_then_signal(*args, **kwargs):
        out = generate(*args, **kwargs)
        if t.step_count == 3 and not sent:  # in step 4, after selection, planning, generation
            sent.append(1)
            _deliver(signal.SIGTERM)
        return out

    sent: list[int] = []

    t.backend.generate = generate_then_signal
    summary = t.run()
    assert summary["stopped_by"] == "SIGTERM" and summary["steps"] == 3
    _same_as_uninterrupted(tmp_path / "run", uninterrupted, 3)
    assert any(
        r.getMessage().startswith("stopped by SIGTERM at step 3; checkpoint ")
        for r in caplog.records
    )
    Trainer(_cfg(tiny_dir, tmp_path / "run")).run()  # resumes and ends like the reference
    _same_as_uninterrupted(tmp_path / "run", uninterrupted, STEPS)


def test_sigint_after_the_first_optimizer_step_finishes_the_step(
    tiny_dir, uninterrupted, tmp_path, restore_signals
) -> None:
    """Deliberate bug caught: no commit at the optimizer step (the step would be "undone"
    with its weights already changed, and the checkpoint would hold step-3 weights under
    step 2)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    t = Trainer(_cfg(tiny_dir, tmp_path / "run"))

    def signal_in_step_3(*_) -> None:
        if t.step_count == 2 and not sent:  # once: a second Ctrl-C would exit at once
            sent.append(1)
            _deliver(signal.SIGINT)

    sent: list[int] = []

    handle = register_optimizer_step_post_hook(signal_in_step_3)
    try:
        summary = t.run()
    finally:
        handle.remove()
    assert summary["stopped_by"] == "SIGINT" and summary["steps"] == 3
    _same_as_uninterrupted(tmp_path / "run", uninterrupted, 3)


@pytest.mark.parametrize("stop_at", [2, STEPS], ids=["curve point", "final evaluation"])
def test_sigterm_during_an_evaluation_drops_it_and_the_resumed_run_makes_it(
    tiny_dir, tmp_path, restore_signals, stop_at
) -> None:
    """A stop drops the evaluation and keeps the trained step; the resumed run evaluates
    that step first (same weights, same answers), merged into its metrics line, so the
    curve has the point and a stop during the final evaluation still ends complete.
    Deliberate bugs caught: no re-evaluation on resume (the point, or the final whole-set
    evaluation, is missing and the run never completes); the evaluation appended as a
    second line for the step; the subset evaluated at the last step."""
    from agents.compare import summarize_run
    from agents.evaluation import EVAL_PROBLEMS_FILE

    run = tmp_path / "run"
    cfg = dict(eval_size=6, eval_subset=3, eval_every=2)
    t = Trainer(_cfg(tiny_dir, run, **cfg))
    evaluate = t.evaluate
    dropped: list[dict] = []

    def evaluate_then_signal(full: bool = True):
        out = evaluate(full=full)
        if t.step_count == stop_at:
            dropped.append(out)
            _deliver(signal.SIGTERM)
        return out

    t.evaluate = evaluate_then_signal
    summary = t.run()
    assert summary["stopped_by"] == "SIGTERM" and summary["steps"] == stop_at
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(stop_at + 1))
    assert "eval/accuracy" in rows[0] and "eval/accuracy" not in rows[stop_at]
    verify_checkpoint(run / "checkpoints" / f"step-{stop_at:06d}")
    assert not summarize_run(run)["complete"]

    Trainer(_cfg(tiny_dir, run, **cfg)).run()  # resumes: evaluates step `stop_at` first
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(STEPS + 1))
    assert [r["step"] for r in rows if r.get("eval/accuracy") is not None] == [0, 2, 4, 6, 8]
    redone = rows[stop_at]
    assert redone["eval/accuracy"] == dropped[0]["eval/accuracy"]  # the step's own weights
    assert "rollout/reward_mean" in redone  # merged into the step's training line
    assert redone["eval/n_problems"] == (6 if stop_at == STEPS else 3)
    per_problem = [json.loads(x) for x in (run / EVAL_PROBLEMS_FILE).read_text().splitlines()]
    counts = {s: sum(r["step"] == s for r in per_problem) for s in (0, 2, 4, 6, 8)}
    assert counts == {0: 6, 2: 3, 4: 3, 6: 3, 8: 6}  # each evaluation's records, once
    assert summarize_run(run)["complete"]


# ---------------------------------------------------------------- lppo train, signalled
def _signal_a_running_training(tiny_dir: Path, run: Path, signum: int, inherited) -> str:
    """Start `lppo train` with `signum` set to `inherited`, signal it after 2 steps."""
    proc = start_training(
        tiny_dir, run, "--steps", str(STEPS), "--save-every", "1000",
        dispositions={signum: inherited},
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 600
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.is_alive() and time.time() < deadline, log_path(run).read_text()[-3000:]
        time.sleep(0.02)
    t0 = time.time()
    os.kill(proc.pid, signum)
    proc.join(120)
    took = time.time() - t0
    if proc.exitcode is None:
        proc.kill()
        pytest.fail(f"no exit within 120 s of {signal.Signals(signum).name}")
    log = log_path(run).read_text()
    print(f"{signal.Signals(signum).name}: exited {proc.exitcode} {took:.1f} s after the signal")
    assert proc.exitcode == 128 + signum, log[-3000:]
    assert took < 60, f"took {took:.1f} s to stop"  # seconds on a 2-core machine under load
    return log


def _check_stopped_run(log: str, run: Path, reference: Path, name: str) -> None:
    lines = re.findall(rf"stopped by {name} at step (\d+); checkpoint (\S+)", log)
    assert len(lines) == 1, log[-3000:]
    step, path = int(lines[0][0]), Path(lines[0][1])
    summary = json.loads(log[log.rindex('{\n  "run_dir"'):])
    assert summary["interrupted"] and summary["stopped_by"] == name
    assert summary["steps"] == step and 2 <= step < STEPS
    assert path == run / "checkpoints" / f"step-{step:06d}"
    _same_as_uninterrupted(run, reference, step)


@pytest.mark.parametrize("inherited", [signal.SIG_IGN, signal.default_int_handler],
                         ids=["SIGINT-ignored-as-under-nohup", "SIGINT-python-default"])
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(
    inherited, tiny_dir, uninterrupted, tmp_path
) -> None:
    run = tmp_path / "run"
    log = _signal_a_running_training(tiny_dir, run, signal.SIGINT, inherited)
    _check_stopped_run(log, run, uninterrupted, "SIGINT")


@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN],
                         ids=["SIGTERM-default", "SIGTERM-ignored"])
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(
    inherited, tiny_dir, uninterrupted, tmp_path
) -> None:
    run = tmp_path / "run"
    log = _signal_a_running_training(tiny_dir, run, signal.SIGTERM, inherited)
    _check_stopped_run(log, run, uninterrupted, "SIGTERM")
