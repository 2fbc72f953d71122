"""`benchmarks/signal_cost.py --quick` on the tiny model: every signal timed, load recorded."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_signal_cost_quick_times_every_model_signal(tmp_path, monkeypatch):
    """Bug caught: a signal left out of the benchmark, or a figure without its load."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    tiny = _load(ROOT / "tests" / "agents" / "tiny_train.py", "tiny_train_for_bench")
    model = tiny.ensure_tiny_model(tmp_path / "tiny")
    out = tmp_path / "sc.json"
    bench = _load(ROOT / "benchmarks" / "signal_cost.py", "bench_signal_cost")
    monkeypatch.setattr(sys, "argv", ["signal_cost.py", "--quick", "--model", str(model),
                                      "--out", str(out)])
    bench.main()
    d = json.loads(out.read_text())
    names = " | ".join(r["signal"] for r in d["signals"])
    for what in ("PCL/ADCL", "value_head", "mlp.up_proj", "online angle", "CLPO"):
        assert what in names
    for r in d["signals"]:
        assert r["ms_per_item"] > 0 and {"load_before", "load_after", "valid"} <= set(r)
    assert d["valid"] == all(r["valid"] for r in d["signals"]) and d["quick"]
