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


def test_learner_line_states_each_measurements_start_load_and_rebuilds_its_lines(monkeypatch):
    """The header gives the loads the gate judged (one per measurement), not the load
    recorded when the file was written; the lines come from the recorded figures, so a
    stale wording in `summary_lines` does not reach the README."""
    side = {"ran": True, "peak_rss_mb": 3000.0, "completion_tokens_per_step": 384.0,
            "ms_per_completion_token": 70.0, "step_s": {"median": 26.0, "n": 5}}
    loads = [0.93, 1.2, 0.98, 1.4]
    record = {
        "valid": True, "design": "ABAB interleaved, 2 rounds x 1 timed step(s)",
        "hardware": {"load_average_1_5_15": [1.9, 1.4, 1.4]},
        "measurements": [{"load": {"load_before": [x, 1.0, 1.0], "valid": True}}
                         for x in loads],
        "setup": {"batch_size": 2, "group_size": 4, "max_new_tokens": 48},
        "results": {"lppo": {**side, "step_s": {"median": 27.3, "n": 5}},
                    "trl": {**side, "trl_version": "1.16.0"}},
        "summary_lines": ["per generated token: ... (completion lengths differ by sampling)"],
    }
    monkeypatch.setattr(rt, "_load", lambda name: record)
    text = rt.learner_table()
    assert "ABAB interleaved, 4 measurements, load 0.9-1.4 at start" in text
    assert "1.9" not in text and "differ by sampling" not in text
    assert "lppo 27.3 s vs TRL 1.16.0 26.0 s (median of 5 steps): 1.05x" in text
    assert "(both generate 384 tokens per step)" in text


def test_backend_table_publishes_only_a_valid_comparison(monkeypatch):
    record = {
        "valid": True, "setup": {"rounds": 2}, "faster_end_to_end": "vllm",
        "runs": [{"load": {"load_before": [0.9]}}, {"load": {"load_before": [1.1]}}],
        "projection_v2": {
            "hf": {"start_s": 13, "step_s": 20.0, "eval_s_per_problem": 0.1, "v2_run_s": 3600,
                   "v2_matrix_h": 21.0},
            "vllm": {"start_s": 200, "step_s": 12.0, "eval_s_per_problem": 0.02,
                     "v2_run_s": 1800, "v2_matrix_h": 10.5},
        },
    }
    monkeypatch.setattr(rt, "_load", lambda name: record)
    text = rt.backend_table()
    assert "| vllm | 200 | 12.0 | 20 | 30 | 10.5 |" in text and "**vllm**" in text
    monkeypatch.setattr(rt, "_load", lambda name: {**record, "valid": False})
    text = rt.backend_table()
    assert "invalid" in text and "10.5" not in text


def test_matrix_jobs_line_publishes_only_a_valid_speedup(monkeypatch):
    record = {
        "valid": True, "speedup_jobs2": 1.11, "median_wall_s": {"1": 751.0, "2": 677.6},
        "projected_speedup_jobs2": 1.73,
        "projection_v2": {"1": {"v2_runs_per_h": 0.72}, "2": {"v2_runs_per_h": 1.25}},
        "setup": {"runs_per_block": 2, "steps": 3, "eval_size": 150, "backend": "vllm",
                  "rounds": 2},
        "blocks": [{"load": {"load_before": [0.8]}}, {"load": {"load_before": [1.3]}}],
    }
    monkeypatch.setattr(rt, "_load", lambda name: record)
    text = rt.matrix_jobs_line()
    assert "one at a time 751 s, two at once" in text and "678 s per block (1.11×)" in text
    assert "0.72 vs 1.25 runs/h, **1.73×**" in text and "(load 0.8-1.3 at start)" in text
    assert "free memory" not in text  # recorded before the memory floor existed
    blocks = [{"jobs": j, "min_mem_available_gib": m, "load": {"load_before": [0.9]}}
              for j, m in [(1, 9.1), (2, 4.07), (2, 3.9), (1, 8.8)]]
    monkeypatch.setattr(rt, "_load", lambda name: {**record, "blocks": blocks})
    assert ("Lowest free memory (MemAvailable): one at a time 8.8 GiB, two at once 3.9 GiB."
            in rt.matrix_jobs_line())
    old = {k: v for k, v in record.items() if "proj" not in k}  # before the projection
    monkeypatch.setattr(rt, "_load", lambda name: old)
    text = rt.matrix_jobs_line()
    assert "678 s per block (1.11×)" in text and "likely understates" in text and "1.73" not in text
    monkeypatch.setattr(rt, "_load", lambda name: {**record, "valid": False})
    text = rt.matrix_jobs_line()
    assert "invalid" in text and "1.73" not in text
    monkeypatch.setattr(rt, "_load", lambda name: None)
    assert rt.matrix_jobs_line() == "_matrix_jobs: not run_\n"


def test_second_matrix_section_states_what_is_tested_and_what_is_not(monkeypatch):
    arm = {"learner": "grpo", "n_runs": 7, "final_std": None}
    eff = {
        "complete_runs": 4, "runs": 21, "budget_steps": 48,
        "arms": [{**arm, "strategy": "uniform", "n_complete": 2, "final": 0.166,
                  "final_std": 0.002},
                 {**arm, "strategy": "lppo", "n_complete": 1, "final": 0.166},
                 {**arm, "strategy": "lp_weighting", "n_complete": 2, "final": 0.19,
                  "final_std": 0.01},
                 {**arm, "strategy": "self_prefix", "n_complete": 0, "final": None}],
        "paired": [
            {"strategy": "lppo", "learner": "grpo", "holm_p": None, "significant": False,
             "test": {"p": None, "diff": -0.001}},
            {"strategy": "lp_weighting", "learner": "grpo", "holm_p": 0.012,
             "significant": True, "test": {"p": 0.006, "diff": 0.024, "ci": [0.01, 0.038],
                                           "mde": 0.021}},
        ],
    }
    proto = {"seeds": list(range(7)), "strategies": ["uniform", "lppo", "lp_weighting"],
             "learners": ["grpo"], "config": {"eval_size": 1500},
             "power": {"design_mde_t": 0.0354}}
    files = {"learning_efficiency_v2/efficiency.json": eff,
             "learning_efficiency_v2/protocol.json": proto}
    monkeypatch.setattr(rt, "_load", lambda name: files.get(name))
    text = rt.second_matrix_section()
    assert "3 arms × 7 seeds, grpo, 48 steps, 1500 held-out problems; 4/21 runs complete, " \
           "interim" in text
    assert "| grpo | uniform | 2/7 | 16.6 ± 0.2 | – | – | – |" in text
    assert "| grpo | lppo | 1/7 | 16.6 | -0.1 (1 seed) | – | – |" in text
    assert ("| grpo | lp_weighting | 2/7 | 19.0 ± 1.0 | +2.4 [+1.0, +3.8] | 0.012 (detectable) "
            "| 2.1 |") in text
    assert "self_prefix" not in text  # no complete seed yet
    assert ("Interim (matrix incomplete): detectable after Holm over 1 arms: "
            "lp_weighting/grpo (+2.4 points).") in text
    # complete and nothing survives Holm: the verdict says so, and that it is not equality
    eff.update(complete_runs=21)
    eff["paired"][1].update(holm_p=0.2, significant=False)
    text = rt.second_matrix_section()
    assert "interim" not in text.lower()
    assert ("Verdict: no arm differs detectably from uniform after Holm over 1 arms; this "
            "does not show them equal") in text
    assert "| 0.2 | 2.1 |" in text
    monkeypatch.setattr(rt, "_load", lambda name: None)
    assert "not run" in rt.second_matrix_section()
