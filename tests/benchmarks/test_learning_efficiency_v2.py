"""Protocol v2 of the learning-efficiency benchmark: arms with arguments, gated prefix arms,
paired tests over per-problem logs."""

import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agents.config import TrainConfig

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def le():
    spec = importlib.util.spec_from_file_location("le_v2", BENCH / "learning_efficiency.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arm_labels_carry_their_strategy_arguments(le, tmp_path):
    specs = le.arm_specs(TrainConfig(), ["uniform", "lp_weighting_norm"], ["grpo"], [0, 1],
                         tmp_path)
    by = {s.name: s for s in specs}
    norm = by["lp_weighting_norm__grpo__s1"]
    assert norm.strategy == "lp_weighting_norm" and norm.cfg.strategy == "lp_weighting"
    assert norm.cfg.strategy_kwargs == {"normalize_weights": True}
    assert by["uniform__grpo__s0"].cfg.strategy_kwargs == {}
    assert norm.cfg.run_dir == str(tmp_path / "lp_weighting_norm__grpo__s1")
    # every arm shares the step-0 evaluation cache of the matrix
    assert len({s.cfg.eval_cache for s in specs}) == 1


def test_prefix_arms_only_where_the_gate_passed(le, tmp_path):
    gate = {"formats": {"default:mid": {"guides": {
        "expert": {"passes_gate": False, "complete": True},
        "self": {"passes_gate": True, "complete": True, "problems": 100, "target": 100,
                 "unguided": {"rate": 0.1}, "depths": {
                     "0.3": {"diff": 0.1, "rate": 0.2, "sign_test": {"p_holm": 0.01}},
                     "0.6": {"diff": 0.2, "rate": 0.3, "sign_test": {"p_holm": 0.001}}}}}}}}
    (tmp_path / "gate.json").write_text(json.dumps(gate))
    arms, notes = le.gated_arms(tmp_path / "gate.json", "default:mid")
    assert arms == ["self_prefix", "lppo_self"]
    assert notes == ["expert prefixes on default:mid: gate no significant gain; arms "
                     "['prefix_guidance', 'lppo'] left out",
                     "self prefixes on default:mid: gate passes (100/100 problems; unguided "
                     "10.0 %, best depth 30.0 % (Holm p 0.001)); arms ['self_prefix', "
                     "'lppo_self'] run"]
    arms, notes = le.gated_arms(tmp_path / "missing.json", "default:mid")
    assert arms == [] and len(notes) == 2
    assert le.gate_format({"data": "default", "data_kwargs": {"prefix_cut": "mid"}}) == \
        "default:mid"
    assert le.gate_format({"data": "chain_long", "data_kwargs": {}}) == "chain_long:mid"


def test_a_problems_file_is_gated_under_the_name_the_matrix_looks_up(le, tmp_path,
                                                                      monkeypatch):
    """The GPU preset trains on a problems file: the gate run on that file must be the one
    the matrix finds, however the path was spelled, and a missing gate says how to run it."""
    import viability_gate as vg

    data = tmp_path / "math_train.jsonl"
    data.write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    name, spec = vg.file_format("math_train.jsonl")
    cfg = {**le.PROTOCOLS["gpu"], "data": str(data)}
    assert le.gate_format(cfg) == name == f"{data}:step"
    assert spec["cut"] == "step" and spec["max_new_tokens"] == cfg["max_new_tokens"]
    assert vg.format_dir(tmp_path, name).parent == tmp_path  # one folder, not a path
    assert vg.format_dir(tmp_path, "default:mid") == tmp_path / "default_mid"
    arms, notes = le.gated_arms(tmp_path / "gate.json", name, le.gate_command(cfg))
    assert arms == [] and (f"not run (`python benchmarks/viability_gate.py --model "
                           f"Qwen/Qwen2.5-Math-1.5B --data {data} --max-new-tokens 1024`)"
                           in notes[0])
    # bad input is named; rollouts of one model never resume another's
    assert vg.main(["--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)]) == 2
    (tmp_path / "meta.json").write_text(json.dumps({"model": "default"}))
    assert vg.main(["--data", str(data), "--model", "other", "--out", str(tmp_path)]) == 2


def test_the_gpu_preset_plans_tokens_not_cpu_seconds(le):
    cfg = le.PROTOCOLS["gpu"]
    plan = le.compute_plan(cfg, ["uniform", "lppo"], ["grpo"], [0, 1], step_s_per_8=None)
    assert "total_h" not in plan and "time one run" in plan["assumptions"]
    assert plan["tokens"]["train_max"] == 4 * 300 * 64 * 8 * 1024
    timed = le.compute_plan(le.PROTOCOLS["v2"], ["uniform"], ["grpo"], [0])
    assert timed["total_h"] > 0 and timed["tokens"]["train_max"] == 48 * 4 * 8 * 48


def _write_run(results, arm, seed, correct):
    d = results / "runs" / f"{arm}__grpo__s{seed}"
    d.mkdir(parents=True)
    lines = [json.dumps({"step": 0, "problem_id": f"p{i}", "correct": 0})
             for i in range(len(correct))]
    lines += [json.dumps({"step": 8, "problem_id": f"p{i}", "correct": c})
              for i, c in enumerate(correct)]
    (d / "eval_problems.jsonl").write_text("\n".join(lines) + "\n")
    return {"run": d.name, "strategy": arm, "learner": "grpo", "seed": seed, "complete": True}


def test_paired_rows_test_at_the_seed_level_on_the_final_step(le, tmp_path):
    runs = []
    for seed in (0, 1):
        runs.append(_write_run(tmp_path, "uniform", seed, [1] * 10 + [0] * 30))
        runs.append(_write_run(tmp_path, "lp_weighting", seed, [1] * 30 + [0] * 10))
        runs.append(_write_run(tmp_path, "lp_weighting_norm", seed, [1] * 10 + [0] * 30))
    rows = {r["strategy"]: r for r in le.paired_rows(tmp_path, {"runs": runs})}
    lw, ln = rows["lp_weighting"], rows["lp_weighting_norm"]
    assert (lw["pairs"], lw["arm_only"], lw["uniform_only"]) == (80, 40, 0)
    assert lw["diff"] == pytest.approx(0.5) and lw["significant"]
    assert lw["test"]["per_seed"] == pytest.approx([0.5, 0.5])
    assert (ln["arm_only"], ln["uniform_only"], ln["mcnemar_p"]) == (0, 0, 1.0)
    assert not ln["significant"] and ln["test"]["p"] == 1.0
    assert lw["holm_p"] == pytest.approx(min(1.0, 2 * lw["test"]["p"]))
    text = "\n".join(le.paired_lines(list(rows.values())))
    assert "Detectable after Holm: lp_weighting/grpo." in text
    assert "Interim" not in text
    interim = "\n".join(le.paired_lines(list(rows.values()), planned_seeds=7))
    assert "**Interim** (as few as 2 of the 7 planned seeds in a row): Detectable" in interim
    # nothing detected: interim says "yet"; the whole design never claims the arms equal
    null = [rows["lp_weighting_norm"]]
    text = "\n".join(le.paired_lines(null, planned_seeds=2))
    assert "does not show the arms equal" in text and "Interim" not in text
    text = "\n".join(le.paired_lines(null, planned_seeds=7))
    assert "**Interim**" in text and "yet;" in text and "once every arm has its 7" in text
    assert "smaller than" not in text


def test_a_seeds_luck_is_not_an_arms_effect(le, tmp_path):
    """One arm seed 6 points up, the other level with uniform: McNemar over the pooled pairs
    finds these models different (p ~ 1e-18), the seed-level test sees one lucky seed in
    two (not detectable); with one seed there is no test at all."""
    uni = [1] * 100 + [0] * 900
    runs = [_write_run(tmp_path, "uniform", 0, uni), _write_run(tmp_path, "uniform", 1, uni),
            _write_run(tmp_path, "lp_weighting", 0, [1] * 160 + [0] * 840),
            _write_run(tmp_path, "lp_weighting", 1, uni)]
    (row,) = le.paired_rows(tmp_path, {"runs": runs})
    assert (row["arm_only"], row["uniform_only"]) == (60, 0) and row["mcnemar_p"] < 1e-15
    assert row["diff"] == pytest.approx(0.03) and row["test"]["p"] > 0.2
    assert not row["significant"]
    assert "| 0.5 | 0.5 | no |" in "\n".join(le.paired_lines([row]))
    # the whole design could not detect 3 points: it says how many seeds would
    import power as power_mod  # on sys.path once paired_rows has run

    need = power_mod.seeds_for_target(row["test"]["se_seed"] * 2**0.5,
                                      row["test"]["se_problem"] ** 2, 1000, 0.03)
    assert need is not None and need > 2
    whole = "\n".join(le.paired_lines([row], planned_seeds=2))
    assert (f"and the paired seeds they need for it: lp_weighting/grpo {need}. Append seeds "
            f"with `--seeds {' '.join(str(s) for s in range(need))}` (every arm") in whole
    assert f"| {100 * row['test']['mde']:.1f} | {need} | 60 / 0 |" in whole
    assert "Append seeds" not in "\n".join(le.paired_lines([row], planned_seeds=7))
    (one,) = le.paired_rows(tmp_path, {"runs": runs[0:1] + runs[2:3]})
    assert one["seeds"] == 1 and one["holm_p"] is None and not one["significant"]
    text = "\n".join(le.paired_lines([one], planned_seeds=7))
    assert "| +6.0 | – | – | not testable (1 seed) | – | – | 60 / 0 |" in text
    assert "No arm has 2 seeds paired with uniform's yet" in text and "Detectable" not in text


def _efficiency_row(strategy, final, delta=None, steps=None):
    return {"strategy": strategy, "learner": "grpo", "n_complete": 2, "n_runs": 2,
            "n_seed_matched": 2, "steps_to_target": steps, "delta_seed_matched": delta,
            "final": final, "final_std": 0.03, "initial": 0.05}


def test_verdict_meets_the_goal_only_when_the_paired_test_detects_it(le, tmp_path):
    """LPPO's means meet the goal (+3 points in half the steps) in both cases; only where
    the Holm-corrected seed-level test detects the difference is the goal met. Uniform's
    seed sd (3 points) would have called both "within one std"; the test sees that the
    consistent gain is real and the one-lucky-seed gain is not."""
    uni = [1] * 100 + [0] * 900
    rows = [_efficiency_row("uniform", 0.10, steps=8),
            _efficiency_row("lppo", 0.135, delta=0.035, steps=4)]
    cases = {"consistent": ([1] * 135 + [0] * 865, [1] * 135 + [0] * 865),
             "one lucky seed": ([1] * 170 + [0] * 830, uni)}
    lines = {}
    for case, (s0, s1) in cases.items():
        root = tmp_path / case.replace(" ", "_")
        runs = [_write_run(root, "uniform", 0, uni), _write_run(root, "uniform", 1, uni),
                _write_run(root, "lppo", 0, s0), _write_run(root, "lppo", 1, s1)]
        paired = le.paired_rows(root, {"runs": runs})
        (lines[case],) = le.verdict(rows, 8, paired=paired)
    assert "**goal met**." in lines["consistent"]
    assert ("Paired test over the 2 seeds both completed: +3.5 points [95 % CI"
            in lines["consistent"]) and "over the 1 arms compared with uniform: detectable." \
        in lines["consistent"]
    lucky = lines["one lucky seed"]
    assert "**goal met by the means, not detectable**" in lucky
    assert "not detectable (80 % power at" in lucky and "within one std" not in lucky
    # without per-problem logs the verdict falls back on the spread over seeds
    (plain,) = le.verdict(rows, 8)
    assert "**goal met**." in plain and "within one std" not in plain and "Paired" not in plain


def test_compute_plan_scales_with_the_design(le):
    cfg = {"steps": 48, "eval_every": 4, "eval_size": 1500, "max_new_tokens": 48,
           "batch_size": 4, "group_size": 8}
    plan = le.compute_plan(cfg, ["uniform", "lp_weighting"], ["grpo"], [0, 1, 2])
    assert plan["runs"] == 6 and plan["evaluations_per_run"] == 13
    assert plan["step_s"] == pytest.approx(64.0)
    bigger = le.compute_plan(cfg, ["uniform", "lp_weighting"], ["grpo"], list(range(6)))
    assert bigger["total_h"] == pytest.approx(2 * plan["total_h"], abs=0.15)


def test_compute_plan_uses_measured_costs_only_from_a_valid_measurement(le, tmp_path):
    cfg = {"steps": 48, "eval_every": 4, "eval_size": 1500, "max_new_tokens": 48,
           "batch_size": 4, "group_size": 8, "backend": "hf"}
    row = {"start_s": 12.0, "step_s": 56.0, "eval_s_per_problem": 0.8, "v2_run_s": 1,
           "v2_matrix_h": 1}
    path = tmp_path / "backend_speed.json"
    path.write_text(json.dumps({"valid": False, "projection_v2": {"hf": row}}))
    assert le.measured_costs("hf", path) is None  # a busy machine's figure plans nothing
    path.write_text(json.dumps({"valid": True, "projection_v2": {"hf": row}}))
    assert le.measured_costs("vllm", path) is None
    measured = le.measured_costs("hf", path)
    plan = le.compute_plan(cfg, ["uniform"], ["grpo"], [0, 1], measured=measured)
    # step 0 is evaluated once for the matrix (the evaluation cache), 12 times per run
    per_run = 12.0 + 48 * 56.0 + 12 * 1500 * 0.8
    assert plan["measured"] and plan["per_run_s"] == round(per_run)
    assert plan["total_h"] == pytest.approx((2 * per_run + 1500 * 0.8) / 3600, abs=0.05)
    assert "measured end to end" in plan["assumptions"] and "backend hf" in plan["assumptions"]
    # with eval_subset the first and last evaluations are full, the 11 between the subset
    sub = le.compute_plan(cfg | {"eval_subset": 300}, ["uniform"], ["grpo"], [0, 1],
                          measured=measured)
    assert sub["eval_problems_per_run"] == 1500 + 11 * 300
    assert sub["per_run_s"] == round(12.0 + 48 * 56.0 + (1500 + 11 * 300) * 0.8)
    # eval_every 0: only the first and last evaluations; a budget off the grid adds the last
    assert le.compute_plan(cfg | {"eval_every": 0}, ["u"], ["g"], [0])["evaluations_per_run"] == 2
    assert le.compute_plan(cfg | {"steps": 50}, ["u"], ["g"], [0])["evaluations_per_run"] == 14


def test_compute_plan_states_the_wall_clock_only_at_a_valid_measured_jobs_speedup(le, tmp_path):
    """The plan uses the speed-up projected to v2 runs, not a short block's own.
    Deliberate bugs caught: an invalid or other-backend speed-up used; a slow-down
    planned as a speed-up; the block's speed-up used; wall clock multiplied."""
    cfg = {"steps": 48, "eval_every": 4, "eval_size": 1500, "max_new_tokens": 48,
           "batch_size": 4, "group_size": 8, "backend": "vllm"}
    path = tmp_path / "matrix_jobs.json"
    assert le.jobs_speedup("vllm", path) is None  # never measured
    rec = {"valid": True, "projected_speedup_jobs2": 1.6, "speedup_jobs2": 1.1,
           "measured_at": "2026-12-02 09:00:00", "setup": {"backend": "vllm"}}
    for bad in ({"valid": False}, {"projected_speedup_jobs2": 0.9},
                {"projected_speedup_jobs2": None}, {"setup": {"backend": "hf"}}):
        path.write_text(json.dumps(rec | bad))
        assert le.jobs_speedup("vllm", path) is None, bad
    path.write_text(json.dumps(rec))
    assert le.jobs_speedup("hf", path) is None
    par = le.jobs_speedup("vllm", path)
    assert par == {"jobs": 2, "speedup": 1.6, "measured_at": "2026-12-02 09:00:00"}
    seq = le.compute_plan(cfg, ["uniform"], ["grpo"], [0, 1])
    plan = le.compute_plan(cfg, ["uniform"], ["grpo"], [0, 1], parallel=par)
    assert "parallel" not in seq and plan["total_h"] == seq["total_h"]  # same compute
    assert plan["parallel"]["wall_h"] == pytest.approx(seq["total_h"] / 1.6, abs=0.1)


def test_same_config_treats_a_field_the_record_predates_as_its_default(le):
    """A committed matrix stays the same experiment when TrainConfig gains a field;
    a real change of any setting is still a different one."""
    from agents.config import TrainConfig

    new = TrainConfig().to_dict()
    old = {k: v for k, v in new.items() if k != "eval_subset"}  # recorded before the field
    assert le.same_config(old, new)
    assert not le.same_config(old, new | {"eval_subset": 300})
    assert not le.same_config(old | {"lr": 1.0}, new)
    assert not le.same_config(None, new)


def test_step0_cache_is_kept_and_restored_whole(le, tmp_path):
    """Only complete pairs (record + per-problem log) are copied, never over an existing
    record; what was kept beside the runs comes back on a fresh clone."""
    live, kept = tmp_path / "runs" / "eval_cache", tmp_path / "results" / "eval_cache"
    live.mkdir(parents=True)
    (live / "initial_eval_abc.json").write_text('{"eval/accuracy": 0.1}\n')
    (live / "initial_eval_abc.problems.jsonl").write_text('{"problem_id": "p0"}\n')
    (live / "initial_eval_half.json").write_text("{}\n")  # its problems not written yet
    assert le.sync_step0_cache(live, kept) == ["initial_eval_abc.json"]
    assert sorted(f.name for f in kept.iterdir()) == [
        "initial_eval_abc.json", "initial_eval_abc.problems.jsonl"]
    (live / "initial_eval_abc.json").write_text('{"eval/accuracy": 0.9}\n')
    assert le.sync_step0_cache(live, kept) == []  # never overwritten
    assert "0.1" in (kept / "initial_eval_abc.json").read_text()
    fresh = tmp_path / "clone" / "eval_cache"
    assert le.sync_step0_cache(kept, fresh) == ["initial_eval_abc.json"]
    assert (fresh / "initial_eval_abc.problems.jsonl").read_text() == '{"problem_id": "p0"}\n'
    assert le.sync_step0_cache(tmp_path / "missing", fresh) == []


def test_appended_seeds_extend_the_experiment_without_rewriting_its_plan(le):
    """The committed v2 record, resumed with 10 seeds (the internal-pilot rule): the power
    analysis and compute plan stay the 7-seed plan made before the runs, and the report says
    the experiment was extended; another protocol keeps nothing of the old record."""
    committed = json.loads((BENCH / "results/learning_efficiency_v2/protocol.json").read_text())
    old = {k: v for k, v in committed.items() if k != "planned_seeds"}  # as first recorded
    old["seeds"] = committed.get("planned_seeds", committed["seeds"])
    assert len(old["seeds"]) == 7
    replanned = {"power": {**old["power"], "design_mde": 0.02, "design_mde_t": 0.021},
                 "compute_plan": {**old["compute_plan"], "runs": 70}}
    new = {**old, **replanned, "seeds": list(range(10)), "hardware": {"cpu_model": "here"}}
    record = le.carry_first_record(old, new)
    assert record["planned_seeds"] == old["seeds"] and record["seeds"] == list(range(10))
    assert record["power"] == old["power"] and record["compute_plan"] == old["compute_plan"]
    assert record["hardware"] == old["hardware"]
    text = "\n".join(le.design_lines(record))
    assert f"- this design: 7 seeds, {old['config']['eval_size']} held-out problems" in text
    assert f"difference {100 * old['power']['design_mde']:.1f} points" in text
    assert "extended after the runs from the 7 planned seeds to 10" in text
    assert f"- planned compute: {old['compute_plan']['runs']} runs" in text
    # resuming the same seeds (or a fresh clone's report) is not an extension
    same = le.carry_first_record(old, {**old, "hardware": {"cpu_model": "here"}})
    assert "planned_seeds" not in same and "extended" not in "\n".join(le.design_lines(same))
    other = {**new, "config": {**old["config"], "lr": 1e-3}}
    assert le.carry_first_record(old, other) == other


def test_an_extensions_power_is_stated_from_the_planned_seeds_alone(le, tmp_path):
    """Extended from 3 to 10 seeds: the report states what 10 seeds can detect at the
    variance the 3 planned seeds measured, whatever the appended runs later show, and names
    the rows 10 seeds still leave short of the target."""
    uni = [1] * 150 + [0] * 850
    runs = []
    for seed in range(3):  # each arm's gain over uniform: +1 point, spread 1 or 6 over seeds
        runs.append(_write_run(tmp_path, "uniform", seed, uni))
        for arm, spread in (("lp_weighting", 0.01), ("self_prefix", 0.06)):
            k = 160 + int(1000 * spread * (seed - 1))
            runs.append(_write_run(tmp_path, arm, seed, [1] * k + [0] * (1000 - k)))
    protocol = {"seeds": list(range(10)), "planned_seeds": [0, 1, 2],
                "power": {"target_mde": 0.03}}
    (line,) = le.extension_lines(tmp_path, {"runs": runs}, protocol)
    rows = {r["strategy"]: r for r in le.paired_rows(tmp_path, {"runs": runs})}
    import power as power_mod

    for arm, row in rows.items():
        t = row["test"]
        at10 = power_mod.seed_level_mde(t["se_seed"] * 3**0.5, t["se_problem"] ** 2, 1000, 10)
        assert at10 < t["mde"]  # more seeds, smaller detectable difference
        assert f"{arm}/grpo {100 * at10:.1f}" in line
    assert line.startswith("- what the 10 seeds can detect") and "3 planned seeds" in line
    need = le._seeds_needed(rows["self_prefix"]["test"], 0.03)
    assert need is None or need > 10
    assert f"still short of 3 points: self_prefix/grpo (needs {le._need_text(need)})" in line
    assert "lp_weighting/grpo (needs" not in line
    # an appended seed, however lucky, does not move what was stated before it
    runs.append(_write_run(tmp_path, "uniform", 3, uni))
    runs.append(_write_run(tmp_path, "self_prefix", 3, [1] * 900 + [0] * 100))
    assert le.extension_lines(tmp_path, {"runs": runs}, protocol) == [line]
    assert le.extension_lines(tmp_path, {"runs": runs}, {**protocol, "seeds": [0, 1, 2]}) == []


@settings(max_examples=100, deadline=None)
@given(sd=st.floats(0.0, 0.1), q=st.floats(0.0, 0.3), n=st.integers(10, 3000),
       s=st.integers(2, 40))
def test_seed_level_mde_shrinks_with_seeds_and_agrees_with_seeds_for_target(sd, q, n, s):
    """n >= 10: with a handful of problems the per-problem term's 1-2 degrees of freedom
    can make one more seed raise the Satterthwaite t quantile more than it cuts the
    variance; no held-out set is that small."""
    import power as power_mod

    here = power_mod.seed_level_mde(sd, q / n, n, s)
    assert power_mod.seed_level_mde(sd, q / n, n, s + 1) <= here + 1e-12
    assume(here > 0)
    need = power_mod.seeds_for_target(sd, q / n, n, here * (1 + 1e-9))
    assert need is not None and need <= s


def test_copy_results_keeps_started_runs_only(le, tmp_path):
    """A report regenerated mid-extension copies the runs that logged something (complete
    or failed), never a 'not started' summary for each appended seed."""
    root, results = tmp_path / "runs_root", tmp_path / "results"
    started, never = root / "uniform__grpo__s7", root / "uniform__grpo__s8"
    for d in (started, never):
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"complete": False}))
    (started / "metrics.jsonl").write_text(json.dumps({"step": 0}) + "\n")
    (root / "summary.md").write_text("table\n")
    le.copy_results({"runs": [{"run": started.name}, {"run": never.name}]}, root, results)
    assert (results / "runs" / started.name / "metrics.jsonl").is_file()
    assert (results / "runs" / started.name / "summary.json").is_file()
    assert not (results / "runs" / never.name).exists()
    assert (results / "summary.md").read_text() == "table\n"


def test_a_learner_left_out_is_stated_with_its_cost(le):
    protocol = {"protocol": "v2", "learners": ["grpo"], "strategies": ["uniform", "lppo"],
                "seeds": [0, 1, 2],
                "compute_plan": {"per_run_s": 3600.0, "parallel": {"jobs": 2, "speedup": 2.0}}}
    note = le.unrun_learners_note(protocol)
    assert "reinforce_plus_plus not run" in note
    assert "6 more runs, 6 h of compute" in note and "3 h with `--jobs 2`" in note
    assert "`--learners grpo reinforce_plus_plus`" in note
    assert le.unrun_learners_note({**protocol, "learners": ["grpo", "reinforce_plus_plus"]}) == ""
    assert le.unrun_learners_note({k: v for k, v in protocol.items() if k != "protocol"}) == ""


def test_a_resumed_runs_relogged_evaluations_are_counted_and_checked(le, tmp_path):
    """Replayed evaluations after a resume are reported, and a disagreement is called out."""
    run = _write_run(tmp_path, "uniform", 0, [1, 0, 1, 0])
    result = {"runs": [run, {"run": "missing__grpo__s1"}]}
    assert le.relogged_evaluations(tmp_path, result) == {"runs": 0, "relogged": 0, "agree": 0}
    assert "no run re-logged" in le.relogged_line({"runs": 0, "relogged": 0, "agree": 0})
    log = tmp_path / "runs" / run["run"] / "eval_problems.jsonl"
    first = log.read_text().splitlines()
    flipped = json.loads(first[1])
    flipped["correct"] = 1 - flipped["correct"]
    log.write_text("\n".join(first + first[:1] + [json.dumps(flipped)]) + "\n{torn")
    counts = le.relogged_evaluations(tmp_path, result)
    assert counts == {"runs": 1, "relogged": 2, "agree": 1}
    line = le.relogged_line(counts)
    assert "1 of 2 agree" in line and "1 differ" in line and "did not reproduce" in line
    assert "not bit-reproducible" in le.relogged_line(counts, "vllm")
    assert "the replay reproduced them" in le.relogged_line({"runs": 1, "relogged": 3, "agree": 3})
