"""matrix_jobs.py's arithmetic: a run's phases from its logs, and the projection to v2 runs."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
_spec = importlib.util.spec_from_file_location("bench_matrix_jobs", BENCH / "matrix_jobs.py")
mj = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mj)


def test_run_phases_counts_only_uncached_evaluations(tmp_path):
    """Deliberate bugs caught: the cached step-0 evaluation counted as spent; start-up
    not net of the steps and evaluations; the mean step instead of the median."""
    rows = [
        {"step": 0, "time/eval": 900.0, "eval/n_problems": 150.0, "eval/cached": 1.0},
        {"step": 1, "time/step": 50.0},
        {"step": 2, "time/step": 52.0},
        {"step": 3, "time/step": 90.0, "time/eval": 60.0, "eval/n_problems": 150.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = mj.run_phases(tmp_path, wall_s=500.0)
    assert got == {"step_s": 52.0, "eval_s_per_problem": 0.4, "start_s": 248.0}


def _block(jobs, runs, complete=True):
    return {"jobs": jobs, "wall_s": 1.0, "complete": complete, "runs": runs}


def test_v2_shape_is_the_protocol_s():
    from learning_efficiency import PROTOCOL_V2 as P

    steps, problems = mj.v2_shape()
    assert steps == P["steps"] == 48
    assert problems == 1500 + 11 * 300  # the end's whole set, the subset at 11 between


@given(start=st.floats(1, 500), step=st.floats(1, 200), per=st.floats(0.01, 2),
       slower=st.floats(1.0, 3.0))
def test_projection_two_at_once_is_twice_the_runs_over_the_slower_run(start, step, per,
                                                                       slower):
    """jobs=2's throughput = 2 runs per (slower) run time; equal phases mean exactly 2x.
    Deliberate bugs caught: jobs not multiplied in; incomplete blocks counted."""
    one = {"start_s": start, "step_s": step, "eval_s_per_problem": per}
    two = {k: v * slower for k, v in one.items()}
    broken = {k: v * 100 for k, v in one.items()}
    blocks = [_block(1, [one, one]), _block(2, [two, two]),
              _block(2, [broken, broken], complete=False)]
    s = mj.summarize(blocks)
    steps, problems = mj.v2_shape()
    run1 = start + steps * step + problems * per
    assert s["projection_v2"]["1"]["v2_run_s"] == round(run1)
    assert s["projected_speedup_jobs2"] == pytest.approx(2 / slower, abs=2e-3)


def test_projection_is_none_without_both_modes():
    s = mj.summarize([_block(1, [{"start_s": 1, "step_s": 1, "eval_s_per_problem": 1}])])
    assert s["projection_v2"]["2"] is None and s["projected_speedup_jobs2"] is None


def test_memory_floor_keeps_the_lowest_reading(monkeypatch):
    """The block's floor is the lowest MemAvailable sampled while it ran, the start
    included; no /proc/meminfo: None."""
    import time

    readings = iter([9.0, 7.5, 3.25, 8.0])
    monkeypatch.setattr(mj, "mem_available_gib", lambda: next(readings, 8.0))
    with mj.MemoryFloor(poll=0.01) as floor:
        time.sleep(0.2)
    assert floor.low == 3.25
    monkeypatch.setattr(mj, "mem_available_gib", lambda: None)
    with mj.MemoryFloor(poll=0.01) as floor:
        time.sleep(0.05)
    assert floor.low is None
