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
