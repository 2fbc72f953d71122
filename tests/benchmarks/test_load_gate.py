import importlib.util
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "_load.py"
_spec = importlib.util.spec_from_file_location("bench_load", _PATH)
load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(load)


@given(st.floats(0, 20, allow_nan=False), st.floats(0, 20, allow_nan=False))
def test_valid_exactly_when_start_load_at_most_limit(start, after):
    rec = load.load_record([start, 1.0, 1.0], [after, 1.0, 1.0])
    assert rec["valid"] is (start <= load.MAX_START_LOAD)
    assert ("invalid_reason" in rec) is (not rec["valid"])
    assert rec["load_before"][0] == start and rec["load_after"][0] == after


def test_unknown_load_is_invalid():
    assert not load.is_valid_start([float("nan")] * 3)
    assert not load.is_valid_start([])


def test_gate_records_before_and_after(monkeypatch):
    seq = iter([[2.0, 1.0, 1.0], [0.5, 1.0, 1.0]])
    monkeypatch.setattr(load, "load_now", lambda: next(seq))
    with load.LoadGate() as gate:
        pass
    rec = gate.record()
    assert rec["load_before"] == [2.0, 1.0, 1.0] and rec["load_after"] == [0.5, 1.0, 1.0]
    assert rec["valid"] is False and "2.0" in rec["invalid_reason"]


@pytest.mark.parametrize(
    ("flags", "expected"), [([True, True], True), ([True, False], False), ([], False)]
)
def test_result_valid_only_if_every_measurement_is(flags, expected):
    assert load.all_valid([{"valid": f} for f in flags]) is expected


@given(st.lists(st.floats(0, 8, allow_nan=False), min_size=1, max_size=6), st.floats(0, 30))
def test_wait_until_quiet_stops_at_the_first_quiet_reading_or_the_limit(loads, limit):
    """Bugs caught: waiting on after the load fell (a wasted minute per measurement), and
    no upper bound (a busy machine would hang the benchmark instead of marking it invalid).
    """
    clock = [0.0]
    readings = iter(loads + [0.0] * 100)
    polls = []

    def reading():
        polls.append(clock[0])
        return [next(readings), 1.0, 1.0]

    def sleep(dt):
        clock[0] += dt

    mp = pytest.MonkeyPatch()
    mp.setattr(load, "load_now", reading)
    mp.setattr(load.time, "sleep", sleep)
    mp.setattr(load.time, "monotonic", lambda: clock[0])
    try:
        waited = load.wait_until_quiet(limit, target=1.0, poll=5.0)
    finally:
        mp.undo()
    quiet_at = next((i for i, x in enumerate(loads + [0.0]) if x <= 1.0))
    expected_polls = min(quiet_at, int(-(-limit // 5.0)) if limit > 0 else 0) + 1
    assert len(polls) == expected_polls
    assert waited == 5.0 * (expected_polls - 1)
    assert waited <= limit + 5.0


def test_hardware_record_names_the_machine_and_its_load(monkeypatch):
    monkeypatch.setattr(load, "load_now", lambda: [3.5, 2.0, 1.0])
    hw = load.hardware()
    # the reports print these: where a figure was measured and how busy the machine was
    assert hw["load_average_1_5_15"] == [3.5, 2.0, 1.0]
    assert hw["cpu_count"] >= 1 and hw["cpu_model"] and hw["torch"]
    assert hw["cuda"] is not None or hw["gpu_count"] == 0
