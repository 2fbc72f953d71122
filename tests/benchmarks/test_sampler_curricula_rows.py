"""The sampler benchmark has a row for every curriculum (its model signals stood in by arrays).

Runs each row on a small pool: it must complete, round-trip its state (bench_strategy
asserts equal checksums after save/load) and report a time; no speed is asserted here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from sampler_throughput import bench_signals, bench_strategy  # noqa: E402

from lppo_sampling import available_strategies  # noqa: E402
from lppo_sampling.strategies.catalog import strategy_info  # noqa: E402

CURRICULA = ["pcl", "adcl", "gain_rl", "length_curriculum", "h1", "cog_drift", "clpo"]


@pytest.mark.parametrize("name", CURRICULA)
def test_curriculum_row_runs(name):
    row = bench_strategy(name, pool=3000, batch=64, group=4, steps=3, seed=0)
    assert row["strategy"] == name and row["median_ms"] > 0 and row["bytes_per_sample"] > 0


def test_every_strategy_has_bench_signals():
    """Bug caught: a new strategy needing a model signal that the benchmark cannot build."""
    for name in available_strategies():
        assert set(bench_signals(name, 10, 0)) == set(strategy_info(name).signals), name
