"""`--quick` runs of the evidence benchmarks on the real default model (slow; CI --run-slow)."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_q_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_viability_gate_quick_is_resumable_and_reports(tmp_path):
    gate = _load("viability_gate")
    argv = ["--quick", "--backend", "hf", "--out", str(tmp_path), "--formats", "chain_long:mid"]
    assert gate.main(argv) == 0
    screened = (tmp_path / "chain_long_mid" / "screen.jsonl").read_text().splitlines()
    assert screened and all(json.loads(x)["n"] == 2 for x in screened)
    result = json.loads((tmp_path / "gate.json").read_text())
    f = result["formats"]["chain_long:mid"]
    for g in f["guides"].values():  # every planned guided set had usable prefixes, no leaks
        assert g["unusable_planned"] == 0 and g["leaks"] == 0
    assert "# Viability gate" in (tmp_path / "gate.md").read_text()
    # a second run screens nothing new: the JSONL is the resume point
    assert gate.main(argv) == 0
    assert (tmp_path / "chain_long_mid" / "screen.jsonl").read_text().splitlines() == screened


@pytest.mark.slow
def test_viability_gate_runs_on_a_problems_file_and_the_matrix_reads_its_verdict(
    tmp_path, gsm8k_path
):
    """The GPU preset's path, on this CPU: the gate rolls the policy out on a MATH-style
    problems file (`--data`, `--model`), and the matrix looks its verdict up by that file."""
    gate = _load("viability_gate")
    le = _load("learning_efficiency")
    data = tmp_path / "math_train.jsonl"
    rows = []
    with gsm8k_path.open() as f:  # 4+ steps, so every depth's prefix holds a step
        for line in f:
            r = json.loads(line)
            work, answer = r["answer"].split("####")
            if work.strip().count("\n") >= 3:
                rows.append({"problem": r["question"],  # MATH's fields, final answer boxed
                             "solution": re.sub(r"<<[^>]*>>", "", work.strip())
                             + f" The answer is $\\boxed{{{answer.strip()}}}$."})
            if len(rows) == 12:
                break
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "gate"
    argv = ["--quick", "--backend", "hf", "--model", "default", "--data", str(data),
            "--max-new-tokens", "32", "--out", str(out)]
    assert gate.main(argv) == 0
    cfg = {**le.PROTOCOLS["gpu"], "model": "default", "data": str(data)}
    fmt = le.gate_format(cfg)
    result = json.loads((out / "gate.json").read_text())
    assert result["meta"]["model"] == "default" and fmt in result["meta"]["file_formats"]
    screened = (gate.format_dir(out, fmt) / "screen.jsonl").read_text().splitlines()
    assert screened and all(json.loads(x)["n"] == 2 for x in screened)
    f = result["formats"][fmt]
    assert f["screened"] == len(screened)
    for g in f["guides"].values():  # planned guided slots had prefixes; none leaked
        assert g["unusable_planned"] == 0 and g["leaks"] == 0
    # the 135M model fails nearly every problem: the expert set fills (the self set may not)
    assert f["guides"]["expert"]["problems"] >= 1
    arms, notes = le.gated_arms(out / "gate.json", fmt)
    assert notes[0].startswith(f"expert prefixes on {fmt}: gate ")  # found, whatever it says
    assert "not run" not in notes[0]
    # `--report` recomputes from the remembered file format alone
    assert gate.main(["--report", "--out", str(out)]) == 0
    assert json.loads((out / "gate.json").read_text())["formats"][fmt]["screened"] == len(screened)


@pytest.mark.slow
def test_learner_speed_quick_records_load_per_measurement(tmp_path):
    ls = _load("learner_speed")
    out = tmp_path / "ls.json"
    assert ls.main(["--quick", "--frameworks", "lppo", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    (m,) = d["measurements"]
    assert {"load_before", "load_after", "valid"} <= set(m["load"])
    assert d["valid"] == m["load"]["valid"]
    if not d["valid"]:  # a loaded machine publishes no ratio
        assert d["ratio_lppo_over_trl_median_step"] is None
        assert d["summary_lines"][0].startswith("INVALID")


@pytest.mark.slow
def test_backend_speed_quick_times_each_phase_and_projects_the_matrix(tmp_path):
    """The HF side of the end-to-end backend comparison, on the real default model (the
    vLLM side runs where vLLM installs: `.ci/vllm.sh`). A quick run is never a figure."""
    bs = _load("backend_speed")
    out = tmp_path / "bs.json"
    assert bs.main(["--quick", "--backends", "hf", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    (run,) = d["runs"]
    assert run["ran"], run.get("error")
    assert run["evaluations"] == 2  # step 0 and the last step
    assert run["phases_s"]["generate"] > 0 and run["phases_s"]["update"] > 0
    assert run["response_tokens"] > 0
    assert {"load_before", "load_after", "valid"} <= set(run["load"])
    assert d["valid"] is False and d["faster_end_to_end"] is None
    proj = d["projection_v2"]["hf"]
    assert proj["v2_run_s"] > 48 * proj["step_s"]  # start-up and evaluations on top


@pytest.mark.slow
def test_matrix_jobs_quick_times_both_modes_interleaved(tmp_path):
    """The jobs=1 vs jobs=2 comparison on the real default model (HF backend; the vLLM side
    is the real measurement). Both blocks train complete runs; jobs=2 pins its runs to
    their slots' cores; a quick run is never a figure."""
    from agents.compare.execute import job_cores

    mj = _load("matrix_jobs")
    out = tmp_path / "mj.json"
    assert mj.main(["--quick", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert [b["jobs"] for b in d["blocks"]] == [1, 2]
    for b in d["blocks"]:
        assert b["complete"] and b["errors"] == [] and b["wall_s"] > 0
        assert {"load_before", "load_after", "valid"} <= set(b["load"])
        assert 0 < b["min_mem_available_gib"] <= mj.mem_available_gib() + 1.0
    one, two = d["blocks"]
    assert one["cores"] == [None, None]  # one at a time: not pinned
    assert two["cores"][0] == job_cores(0, 2)
    assert d["speedup_jobs2"] == round(one["wall_s"] / two["wall_s"], 3)
    assert d["setup"]["warm_up_s"] > 0  # the step-0 evaluation, computed once, untimed
    for b in d["blocks"]:  # every run's phases were read from its own logs
        assert len(b["runs"]) == 2
        assert all(r["step_s"] > 0 and r["eval_s_per_problem"] > 0 for r in b["runs"])
    p1, p2 = d["projection_v2"]["1"], d["projection_v2"]["2"]
    assert d["projected_speedup_jobs2"] == pytest.approx(
        p2["v2_runs_per_h"] / p1["v2_runs_per_h"], abs=0.01)
    assert d["valid"] is False
