"""README tables publish only valid timings (load gate), whatever schema recorded the load."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
_spec = importlib.util.spec_from_file_location("bench_readme_tables", BENCH / "readme_tables.py")
rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rt)


@pytest.mark.parametrize(
    ("record", "valid"),
    [
        ({"machine": {"loadavg": [4.8, 6.0, 4.7]}}, False),  # sampler, before the gate
        ({"machine": {"loadavg_1m": 1.2}}, True),  # verifier
        ({"hardware": {"load_average_1_5_15": [4.3, 3.0, 2.0]}}, False),  # learner speed
        ({"loadavg_start": [1.0, 1.0, 1.0]}, True),  # rollout throughput
        ({"valid": False, "hardware": {"load_average_1_5_15": [0.5]}}, False),  # own flag wins
        ({"valid": True}, True),
        ({}, False),  # no load recorded: not publishable
    ],
)
def test_validity_by_start_load_or_own_flag(record, valid):
    ok, why = rt.validity(record)
    assert ok is valid and (why == "") is valid


def test_invalid_timing_is_withheld(monkeypatch):
    monkeypatch.setattr(rt, "_load", lambda name: {
        "hardware": {"load_average_1_5_15": [4.3, 3.0, 2.0]},
        "summary_lines": ["lppo 10.0 s vs TRL 4.3 s: 0.43x"]})
    text = rt.learner_table()
    assert "load average 4.3 at start" in text and "invalid" in text and "0.43" not in text
    monkeypatch.setattr(rt, "_load", lambda name: {
        "valid": True, "hardware": {"load_average_1_5_15": [1.1]},
        "summary_lines": ["lppo 10.0 s vs TRL 9.0 s: 1.11x"]})
    assert "1.11x" in rt.learner_table()
