"""`lppo compare`: the matrix runs, resumes/skips, survives a failing run, and its numbers
(aggregation over seeds, steps to a threshold) are right on synthetic metrics files.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.cli import main
from agents.compare import (
    aggregate,
    build_matrix,
    initial_on_final_set,
    mean_curve,
    run_matrix,
    steps_to_reach,
    summarize_matrix,
    summarize_run,
)
from agents.compare.execute import job_cores, kv_cache_gib_per_job, threads_per_job
from agents.config import ConfigError, TrainConfig


def _flags(model_dir: Path) -> list[str]:
    return [
        "--model",
        str(model_dir),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "8",
        "--eval-size",
        "4",
        "--eval-every",
        "1",
        "--save-every",
        "1",
        "--data-kwargs",
        '{"size": 40}',
        "--lr",
        "1e-3",
        "--no-progress",
    ]


def test_matrix_writes_summaries_table_and_figures_then_skips(tiny_dir, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--strategies",
        "uniform",
        "lppo",
        "--learners",
        "grpo",
        "--seeds",
        "0",
        "1",
        "--out",
        str(out),
        "--threshold",
        "0.0",
        "--in-process",
        *_flags(tiny_dir),
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] == report["runs"] == 4 and report["failed"] == []
    names = sorted(p.name for p in out.iterdir() if p.is_dir() and "__" in p.name)
    assert names == ["lppo__grpo__s0", "lppo__grpo__s1", "uniform__grpo__s0", "uniform__grpo__s1"]
    # the untrained model was evaluated once for the whole matrix
    assert len(list((out / "eval_cache").glob("initial_eval_*.json"))) == 1
    step0 = [json.loads((out / n / "metrics.jsonl").read_text().splitlines()[0]) for n in names]
    assert sum("eval/cached" not in r for r in step0) == 1
    assert len({r["eval/accuracy"] for r in step0}) == 1
    for name in names:
        s = json.loads((out / name / "summary.json").read_text())
        assert s["complete"] and s["steps_done"] == 2 and s["n_evals"] == 3  # steps 0, 1, 2
        assert s["tokens_generated"] > 0 and s["compute_s"] > 0
        assert s["steps_to_threshold"] == 0  # threshold 0 is reached at the first evaluation
        assert s["strategy"] == name.split("__")[0] and s["seed"] == int(name[-1])
    md = (out / "summary.md").read_text()
    assert "| uniform | grpo | 2/2 |" in md and "| lppo | grpo | 2/2 |" in md
    assert (out / "curves.png").stat().st_size > 5000
    assert (out / "curves_tokens.png").stat().st_size > 5000
    matrix = json.loads((out / "matrix.json").read_text())
    assert {a["strategy"] for a in matrix["arms"]} == {"uniform", "lppo"}

    # rerun: nothing is trained again (metrics untouched), summaries are rewritten
    before = {n: (out / n / "metrics.jsonl").stat().st_mtime_ns for n in names}
    (out / "summary.md").unlink()
    assert all((out / n / "checkpoints").is_dir() for n in names)
    assert main([*argv, "--prune-checkpoints"]) == 0
    assert {n: (out / n / "metrics.jsonl").stat().st_mtime_ns for n in names} == before
    assert (out / "summary.md").exists()
    assert not any((out / n / "checkpoints").exists() for n in names)  # complete: pruned


def test_subprocess_run_failure_is_recorded_and_the_matrix_continues(tiny_dir, tmp_path) -> None:
    base = TrainConfig(
        model=str(tiny_dir),
        steps=1,
        batch_size=2,
        group_size=2,
        max_new_tokens=8,
        eval_size=4,
        eval_every=1,
        data_kwargs={"size": 40},
        progress=False,
    )
    good = build_matrix(base, ["uniform"], ["grpo"], [0], tmp_path / "cmp")
    # eval_size larger than the data passes preflight but fails inside the Trainer
    bad = build_matrix(
        TrainConfig(**{**base.to_dict(), "eval_size": 100}),
        ["lppo"],
        ["grpo"],
        [0],
        tmp_path / "cmp",
    )
    statuses = run_matrix(bad + good, subprocesses=True, progress=False)
    assert statuses[0]["returncode"] != 0 and statuses[1]["returncode"] == 0
    assert "eval_size" in (tmp_path / "cmp" / bad[0].name / "train.log").read_text()
    result = summarize_matrix(bad + good, tmp_path / "cmp")
    by_run = {r["run"]: r for r in result["runs"]}
    assert not by_run[bad[0].name]["complete"] and by_run[good[0].name]["complete"]
    assert by_run[bad[0].name]["last_attempt"]["returncode"] != 0
    assert "0/1 (incomplete)" in (tmp_path / "cmp" / "summary.md").read_text()


def test_jobs_2_runs_two_children_at_once_pinned_to_their_cores(
    tiny_dir, tmp_path, capsys
) -> None:
    """`lppo compare --jobs 2` on the tiny model: both runs complete, the untrained model is
    evaluated once (the second run waited for the first's step-0 evaluation), and each
    child ran pinned to its slot's cores with that many threads (as its Trainer logged).
    Deliberate bug this catches (tried): the child not pinned (it logs every core)."""
    out = tmp_path / "cmp"
    argv = ["compare", "--strategies", "uniform", "lppo", "--seeds", "0", "--out", str(out),
            "--jobs", "2", *_flags(tiny_dir)]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] == report["runs"] == 2 and report["failed"] == []
    names = ["uniform__grpo__s0", "lppo__grpo__s0"]
    step0 = [json.loads((out / n / "metrics.jsonl").read_text().splitlines()[0]) for n in names]
    assert [("eval/cached" in r) for r in step0] == [False, True]
    cores = job_cores(0, 2)  # the first run's slot; the second's slot 1 unless it ended
    status = json.loads((out / names[0] / "compare_status.json").read_text())
    assert status["cores"] == cores
    ids = ",".join(map(str, cores))
    logged = (out / names[0] / "train.log").read_text()
    assert (f"VLLM_CPU_KVCACHE_SPACE={kv_cache_gib_per_job(2)} OMP_NUM_THREADS={len(cores)} "
            f"VLLM_CPU_OMP_THREADS_BIND={ids} ") in logged
    assert f"torch threads {len(cores)}; CPU cores {ids}\n" in logged


def test_jobs_split_the_kv_cache_a_user_setting_wins(tmp_path, monkeypatch) -> None:
    """Each child of `--jobs N` gets its engine's share of the KV cache, unless the user's
    environment sets VLLM_CPU_KVCACHE_SPACE (then the child inherits that)."""
    import agents.compare.execute as ex

    seen = []
    monkeypatch.setattr(ex.subprocess, "run", lambda cmd, **kw: seen.append(kw["env"]) or
                        subprocess.CompletedProcess(cmd, 0))
    (spec,) = build_matrix(TrainConfig(), ["uniform"], ["grpo"], [0], tmp_path)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    ex._run_subprocess(spec, None, [0], kv_cache_gib=3)
    ex._run_subprocess(spec, None, None, kv_cache_gib=None)  # one job: nothing set
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "9")
    ex._run_subprocess(spec, None, [0], kv_cache_gib=3)
    assert seen[0]["VLLM_CPU_KVCACHE_SPACE"] == "3" and seen[1] is None
    assert seen[2]["VLLM_CPU_KVCACHE_SPACE"] == "9"


@given(jobs=st.integers(1, 16), gib=st.integers(1, 2048))
def test_kv_cache_share_never_exceeds_one_engines_budget(jobs: int, gib: int) -> None:
    """N engines together take no more than one engine alone would (25 % of the RAM), each
    at least 1 GiB; one job keeps the whole budget (rounded down to GiB)."""
    total = gib << 30
    share = kv_cache_gib_per_job(jobs, total)
    assert share >= 1
    assert share * jobs <= max(jobs, 0.25 * gib)
    if jobs == 1:
        assert share == max(1, int(0.25 * gib))
    with pytest.raises(ValueError, match="jobs >= 1"):
        kv_cache_gib_per_job(0, total)


def _specs(tmp_path: Path, n: int, cached: bool) -> list:
    base = TrainConfig(eval_size=4, data_kwargs={"size": 40}, progress=False)
    specs = build_matrix(base, [f"s{i}" for i in range(n)], ["grpo"], [0], tmp_path / "cmp")
    cache = Path(specs[0].cfg.eval_cache)
    cache.mkdir(parents=True)
    if cached:
        (cache / "initial_eval_abc.json").write_text("{}")
    return specs


def test_jobs_keep_that_many_runs_in_flight_in_spec_order(tmp_path, monkeypatch) -> None:
    """With jobs=2, two runs are in flight at once (the first two wait at a two-party
    barrier: run one after another, the first would time out), a slot freed by a finished
    run is filled while the other still runs (the first waits for the third), statuses come
    back in spec order, and each child gets its slot's cores. Deliberate bugs this catches
    (tried): the pool sized 1, statuses in completion order, cores not passed, a freed slot
    not reused. Each child also gets its engine's share of the KV cache."""
    import threading

    from agents.compare import execute

    barrier = threading.Barrier(2)
    third_ran = threading.Event()
    finished = []

    def fake_child(spec, timeout, cores, kv_cache_gib=None):
        assert kv_cache_gib == kv_cache_gib_per_job(2)  # its engine's share
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        if spec.name in ("s0__grpo__s0", "s1__grpo__s0"):
            barrier.wait(timeout=10)  # raises if the other run is not in flight too
        if spec.name == "s0__grpo__s0":
            assert third_ran.wait(timeout=10)
        if spec.name == "s2__grpo__s0":
            third_ran.set()
        finished.append(spec.name)
        return {"returncode": 0, "error": None, "cores": cores}

    monkeypatch.setattr(execute, "_run_subprocess", fake_child)
    monkeypatch.setattr(execute, "POLL_S", 0.05)
    specs = _specs(tmp_path, 3, cached=True)
    statuses = run_matrix(specs, jobs=2, progress=False)
    assert finished == ["s1__grpo__s0", "s2__grpo__s0", "s0__grpo__s0"]
    assert [s["run"] for s in statuses] == [s.name for s in specs]
    assert all(s["returncode"] == 0 for s in statuses)
    # each run in its slot's cores; the third reuses the slot the second freed
    assert [s["cores"] for s in statuses] == [job_cores(0, 2), job_cores(1, 2), job_cores(1, 2)]


def test_jobs_wait_for_the_shared_step0_evaluation_then_overlap(tmp_path, monkeypatch) -> None:
    """A fresh matrix with an empty step-0 cache: the second run starts only once the first
    has written the cache, and then while the first is still running. Deliberate bugs this
    catches (tried): no wait (the second starts before the cache exists), waiting for the
    first run to end (no overlap: the first times out waiting for the second)."""
    import threading
    import time

    from agents.compare import execute

    second_started = threading.Event()
    seen = {}

    def fake_child(spec, timeout, cores, kv_cache_gib=None):
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        cache = Path(spec.cfg.eval_cache)
        if spec.name == "s0__grpo__s0":
            time.sleep(0.3)
            (cache / "initial_eval_abc.json").write_text("{}")  # step 0 evaluated
            overlap = second_started.wait(timeout=10)
            return {"returncode": 0 if overlap else 1, "error": None}
        seen["cache_at_start"] = any(cache.glob("initial_eval_*.json"))
        second_started.set()
        return {"returncode": 0, "error": None}

    monkeypatch.setattr(execute, "_run_subprocess", fake_child)
    monkeypatch.setattr(execute, "POLL_S", 0.05)
    statuses = run_matrix(_specs(tmp_path, 2, cached=False), jobs=2, progress=False)
    assert [s["returncode"] for s in statuses] == [0, 0]
    assert seen == {"cache_at_start": True}


@pytest.mark.parametrize("jobs", [1, 2])
def test_on_complete_is_called_as_each_run_completes_with_its_summary_current(
    tmp_path, monkeypatch, jobs
) -> None:
    """`on_complete` sees each run this call completed, once, while the matrix goes on, and
    the run's summary.json already says complete; a run that ended short is not passed.
    Deliberate bugs this catches (tried): the callback for every attempt, the summary
    written only at the end of the matrix."""
    from agents.compare import execute

    def fake_child(spec, timeout, cores=None, kv_cache_gib=None):
        # s0 trains to its budget; s1 stops after one step (e.g. killed)
        last = spec.cfg.steps if spec.name.startswith("s0") else 1
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        (spec.run_dir / "config.json").write_text(json.dumps(spec.cfg.to_dict()))
        (spec.run_dir / "metrics.jsonl").write_text("".join(
            json.dumps({"step": t, **({"eval/accuracy": 0.1} if t in (0, last) else {})})
            + "\n" for t in range(last + 1)))
        return {"returncode": 0, "error": None}

    seen = []

    def on_complete(spec):
        summary = json.loads((spec.run_dir / "summary.json").read_text())
        seen.append((spec.name, summary["complete"], summary["last_attempt"]["returncode"]))

    monkeypatch.setattr(execute, "_run_subprocess", fake_child)
    monkeypatch.setattr(execute, "POLL_S", 0.05)
    specs = _specs(tmp_path, 2, cached=True)
    run_matrix(specs, jobs=jobs, progress=False, on_complete=on_complete)
    assert seen == [("s0__grpo__s0", True, 0)]
    run_matrix(specs, jobs=jobs, progress=False, on_complete=on_complete)  # s0 skipped
    assert [name for name, *_ in seen] == ["s0__grpo__s0"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_drain_starts_no_further_run_and_lets_those_in_flight_finish(
    tmp_path, monkeypatch, jobs
) -> None:
    """Drain is asked for while the first run trains: the runs already in flight (one per
    job) finish and report, the rest never start and get no status. Deliberate bugs this
    catches (tried): drain ignored with jobs > 1, drain read only when the matrix starts."""
    import threading

    from agents.compare import execute

    asked = threading.Event()
    barrier = threading.Barrier(jobs)
    started = []

    def fake_child(spec, timeout, cores=None, kv_cache_gib=None):
        started.append(spec.name)
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        barrier.wait(timeout=10)  # all first `jobs` runs are in flight
        if spec.name == "s0__grpo__s0":
            asked.set()  # e.g. `touch DRAIN` while it runs
        assert asked.wait(timeout=10)  # the others end after it: their slots free up later
        return {"returncode": 0, "error": None}

    monkeypatch.setattr(execute, "_run_subprocess", fake_child)
    monkeypatch.setattr(execute, "POLL_S", 0.05)
    specs = _specs(tmp_path, 4, cached=True)
    statuses = run_matrix(specs, jobs=jobs, progress=False, drain=asked.is_set)
    first = [s.name for s in specs[:jobs]]
    assert sorted(started) == first  # in flight when drain came: finished; none after
    assert [s["run"] for s in statuses] == first
    assert all(s["returncode"] == 0 for s in statuses)


def test_jobs_are_validated(tmp_path) -> None:
    specs = _specs(tmp_path, 1, cached=True)
    with pytest.raises(ValueError, match="jobs >= 1"):
        run_matrix(specs, jobs=0, progress=False)
    with pytest.raises(ValueError, match="subprocesses"):
        run_matrix(specs, jobs=2, subprocesses=False, progress=False)
    from agents.compare.cli import CompareConfig

    with pytest.raises(ConfigError, match="jobs >= 1"):
        CompareConfig(jobs=0)
    with pytest.raises(ConfigError, match="in-process"):
        CompareConfig(jobs=2, in_process=True)


@given(jobs=st.integers(1, 64), cpus=st.integers(1, 256))
def test_threads_per_job_splits_the_cores(jobs: int, cpus: int) -> None:
    t = threads_per_job(jobs, cpus)
    assert t >= 1
    assert t * jobs <= max(cpus, jobs)  # never oversubscribed beyond one thread per job
    assert (cpus - t * jobs) < jobs  # and no more than jobs - 1 cores left idle
    if jobs == 1:
        assert t == cpus


@given(jobs=st.integers(1, 16), cpus=st.lists(st.integers(0, 255), min_size=1, max_size=64,
                                                unique=True))
def test_job_cores_give_each_slot_its_own_share(jobs: int, cpus: list[int]) -> None:
    """Every slot gets threads_per_job cores of the allowed set; slots are disjoint while
    there are at least as many cores as jobs (they share only when there are not)."""
    slots = [job_cores(k, jobs, cpus) for k in range(jobs)]
    for c in slots:
        assert len(c) == threads_per_job(jobs, len(cpus)) and set(c) <= set(cpus)
    if jobs <= len(cpus):
        assert len({x for c in slots for x in c}) == sum(map(len, slots))
    assert job_cores(0, 1, cpus) == cpus


# ------------------------------------------------------------------ synthetic metrics (no model)
def _fake_run(
    root: Path,
    strategy: str,
    learner: str,
    seed: int,
    accs: dict[int, float],
    steps: int,
    tokens_per_step: float = 100.0,
    subset: dict[int, float] | None = None,
) -> Path:
    """A run directory as the trainer writes it; `subset`: `eval/subset_accuracy` per
    evaluated step (a run with `eval_subset`)."""
    d = root / f"{strategy}__{learner}__s{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(
        json.dumps(
            {
                "strategy": strategy,
                "learner": learner,
                "seed": seed,
                "steps": steps,
                "eval_size": 10,
            }
        )
    )
    rows = []
    last = max([0, *accs])
    for step in range(0, last + 1):
        r = {"step": step, "rollout/tokens_total": step * tokens_per_step, "time/step": 2.0}
        if step in accs:
            r.update({"eval/accuracy": accs[step], "time/eval": 1.0})
            if subset is not None:
                r["eval/subset_accuracy"] = subset[step]
        rows.append(r)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_summarize_run_numbers(tmp_path) -> None:
    d = _fake_run(tmp_path, "lppo", "grpo", 0, {0: 0.1, 2: 0.3, 4: 0.25}, steps=4)
    s = summarize_run(d, threshold=0.2)
    assert s["complete"] and s["steps_done"] == 4
    assert (s["initial_accuracy"], s["final_accuracy"], s["best_accuracy"]) == (0.1, 0.25, 0.3)
    assert s["best_step"] == 2 and s["final_step"] == 4
    assert (s["steps_to_threshold"], s["tokens_to_threshold"]) == (2, 200.0)
    assert s["tokens_generated"] == 400.0
    assert s["compute_s"] == pytest.approx(5 * 2.0 + 3 * 1.0)
    assert summarize_run(d, threshold=0.9)["steps_to_threshold"] is None
    # a run stopped before its budget is not complete
    e = _fake_run(tmp_path, "uniform", "grpo", 0, {0: 0.1, 2: 0.2}, steps=4)
    assert not summarize_run(e)["complete"]
    assert not summarize_run(tmp_path / "missing")["complete"]


def test_runs_with_an_eval_subset_are_compared_on_the_subset_curve_and_the_full_final(
    tmp_path,
) -> None:
    """With `eval_subset`, the curve (and steps to uniform's final) is the subset's accuracy,
    measured alike at every evaluation; Δ final is on the whole held-out set of the last
    evaluation. Deliberate bugs this catches (tried): the curve on `eval/accuracy` (full at
    the ends, subset between), the target on the full-set final, Δ final against the
    subset target."""
    le = _load_benchmark()
    # `eval/accuracy` at 4 is the subset's (only it was evaluated); 0 and 8 are the full set
    uni = _fake_run(tmp_path, "uniform", "grpo", 0, {0: 0.10, 4: 0.30, 8: 0.20}, 8,
                    subset={0: 0.12, 4: 0.30, 8: 0.24})
    lp = _fake_run(tmp_path, "lppo", "grpo", 0, {0: 0.10, 4: 0.22, 8: 0.26}, 8,
                   subset={0: 0.12, 4: 0.22, 8: 0.28})
    s = summarize_run(uni)
    assert s["curve_metric"] == "eval/subset_accuracy"
    assert [c["accuracy"] for c in s["curve"]] == [0.12, 0.30, 0.24]
    assert (s["final_accuracy"], s["final_curve_accuracy"]) == (0.20, 0.24)
    # initial beside final is on the same (whole) set: 0.10, not the subset's 0.12
    assert (s["initial_heldout_accuracy"], s["initial_accuracy"]) == (0.10, 0.12)
    runs = [s, summarize_run(lp)]
    result = {"runs": runs, "arms": aggregate(runs)}
    rows = {r["strategy"]: r for r in le.efficiency_rows(result, 8)}
    assert rows["uniform"]["initial"] == pytest.approx(0.10)
    assert rows["lppo"]["target"] == pytest.approx(0.24)  # uniform's final on the subset
    assert rows["lppo"]["steps_to_target"] == 8  # (a full-set target of 0.20: step 4)
    assert rows["lppo"]["delta_final_vs_uniform"] == pytest.approx(0.06)  # 0.26 - 0.20, full set
    # a run without eval_subset: one accuracy for both
    plain = summarize_run(_fake_run(tmp_path, "plain", "grpo", 0, {0: 0.1, 8: 0.3}, 8))
    assert plain["curve_metric"] == "eval/accuracy"
    assert plain["final_accuracy"] == plain["final_curve_accuracy"] == 0.3
    assert plain["initial_heldout_accuracy"] == plain["initial_accuracy"] == 0.1
    # a summary written before the held-out initial existed falls back to the curve's
    assert initial_on_final_set({"initial_accuracy": 0.12, "initial_accuracy_std": 0.01}) == (
        0.12, 0.01)


def test_steps_to_reach_uses_first_crossing() -> None:
    curve = [(0, 0.0, 0.1), (5, 50.0, 0.3), (10, 100.0, 0.2), (15, 150.0, 0.4)]
    assert steps_to_reach(curve, 0.3) == (5, 50.0)
    assert steps_to_reach(curve, 0.35) == (15, 150.0)
    assert steps_to_reach(curve, 0.5) is None


def test_aggregate_mean_std_over_complete_seeds(tmp_path) -> None:
    summaries = [
        summarize_run(_fake_run(tmp_path, "lppo", "grpo", 0, {0: 0.1, 4: 0.2}, 4), threshold=0.3),
        summarize_run(
            _fake_run(tmp_path, "lppo", "grpo", 1, {0: 0.1, 2: 0.3, 4: 0.4}, 4), threshold=0.3
        ),
        summarize_run(_fake_run(tmp_path, "lppo", "grpo", 2, {0: 0.1, 4: 0.6}, 4), threshold=0.3),
        # incomplete seed: excluded from the means, counted in n_runs
        summarize_run(_fake_run(tmp_path, "lppo", "grpo", 3, {0: 0.1, 2: 0.9}, 4), threshold=0.3),
        summarize_run(
            _fake_run(tmp_path, "uniform", "grpo", 0, {0: 0.1, 4: 0.3}, 4), threshold=0.3
        ),
    ]
    arms = {a["strategy"]: a for a in aggregate(summaries)}
    a = arms["lppo"]
    assert (a["n_runs"], a["n_complete"], a["complete"]) == (4, 3, False)
    assert a["final_accuracy"] == pytest.approx(0.4)
    assert a["final_accuracy_std"] == pytest.approx(0.2)  # sample std of 0.2, 0.4, 0.6
    assert a["steps_to_threshold"] == pytest.approx(3.0)  # seeds 1 (step 2) and 2 (step 4)
    assert a["n_reached"] == 2
    assert a["steps_to_threshold_std"] == pytest.approx(math.sqrt(2))
    u = arms["uniform"]
    # one complete seed: a mean, no spread estimate
    assert (u["final_accuracy"], u["final_accuracy_std"], u["complete"]) == (0.3, None, True)

    curve = mean_curve(summaries[:3])  # steps 0 and 4 are evaluated by every seed
    assert [c["step"] for c in curve] == [0, 4]
    assert curve[1]["mean"] == pytest.approx(0.4) and curve[1]["tokens"] == pytest.approx(400.0)


def test_build_matrix_order_and_validation(tmp_path) -> None:
    specs = build_matrix(
        TrainConfig(), ["uniform", "lppo"], ["grpo", "reinforce_plus_plus"], [0, 1], tmp_path
    )
    assert [s.name for s in specs[:4]] == [
        "uniform__grpo__s0",
        "lppo__grpo__s0",
        "uniform__grpo__s1",
        "lppo__grpo__s1",
    ]
    assert all(s.cfg.resume and s.cfg.run_dir == str(tmp_path / s.name) for s in specs)
    with pytest.raises(ConfigError, match="twice"):
        build_matrix(TrainConfig(), ["lppo", "lppo"], ["grpo"], [0], tmp_path)


def test_compare_rejects_unknown_strategy_before_any_run(tmp_path, capsys) -> None:
    assert (
        main(["compare", "--strategies", "lpo", "--seeds", "0", "--out", str(tmp_path / "c")]) == 2
    )
    assert "Did you mean 'lppo'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def _load_benchmark():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "learning_efficiency.py"
    spec = importlib.util.spec_from_file_location("learning_efficiency", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(("lppo_final", "met"), [(0.20, True), (0.16, False)])
def test_learning_efficiency_verdict_on_synthetic_runs(tmp_path, lppo_final, met) -> None:
    """The benchmark's verdict follows the goal: <= 50% of the steps and >= +3 points."""
    le = _load_benchmark()
    runs = []
    for seed in (0, 1):
        runs.append(
            summarize_run(
                _fake_run(
                    tmp_path / "runs", "uniform", "grpo", seed, {0: 0.1, 8: 0.12, 16: 0.15}, 16
                )
            )
        )
        runs.append(
            summarize_run(
                _fake_run(
                    tmp_path / "runs",
                    "lppo",
                    "grpo",
                    seed,
                    {0: 0.1, 8: 0.16 + 0.01 * seed, 16: lppo_final},
                    16,
                )
            )
        )
    for metrics in (tmp_path / "runs").glob("*/metrics.jsonl"):  # steps log their prefixes
        steps = [json.loads(line) for line in metrics.read_text().splitlines()]
        metrics.write_text("".join(
            json.dumps({**m, "prefix/guided_frac": 0.0} if m["step"] else m) + "\n"
            for m in steps))
    result = {"runs": runs, "arms": aggregate(runs)}
    rows = {r["strategy"]: r for r in le.efficiency_rows(result, 16)}
    assert rows["lppo"]["target"] == pytest.approx(0.15)
    assert rows["lppo"]["steps_to_target"] == 8 and rows["lppo"]["seeds_reached"] == 2
    assert rows["uniform"]["steps_to_target"] == 16
    (line,) = le.verdict(list(rows.values()), 16)
    (with_se,) = le.verdict(list(rows.values()), 16, eval_size=100)
    assert with_se.startswith(line[:-1])  # the same verdict, one sentence more
    # sqrt(0.15 * 0.85 / 100) = 3.57 points at uniform's final accuracy of 15%
    assert "100 held-out problems has a binomial standard error of 3.6 points" in with_se
    assert ("**goal met**" in line) == met and "step 8 (50% of the 16-step budget)" in line
    protocol = {
        "config": TrainConfig().to_dict() | {"steps": 16},
        "seeds": [0, 1],
        "strategies": ["uniform", "lppo"],
        "learners": ["grpo"],
        "hardware": {"cpu_count": 2, "torch": "x", "cuda": None},
        "compute_plan": le.compute_plan(
            TrainConfig().to_dict() | {"steps": 16}, ["uniform", "lppo"], ["grpo"], [0, 1],
            parallel={"jobs": 2, "speedup": 1.5, "measured_at": "2026-12-02 09:00:00"}),
    }
    report = le.write_report(tmp_path, result, protocol, quick=False).read_text()
    plan = protocol["compute_plan"]
    assert f"- planned compute: 4 runs × {plan['per_run_s']} s" in report
    assert (f"- wall clock with `--jobs 2` (each run pinned to its own core): "
            f"{plan['parallel']['wall_h']} h, at the 1.50× speed-up benchmarks/matrix_jobs.py "
            "measured (2026-12-02 09:00:00)") in report
    (reported,) = le.verdict(list(rows.values()), 16, eval_size=protocol["config"]["eval_size"])
    assert "| grpo | lppo | 2/2 |" in report and reported in report
    eff = json.loads((tmp_path / "efficiency.json").read_text())  # what the README table reads
    assert eff["verdict"] == [reported] and eff["complete_runs"] == eff["runs"] == 4
    assert {a["strategy"]: a["steps_to_target"] for a in eff["arms"]} == {"uniform": 16, "lppo": 8}
    assert eff["paired"] == json.loads(json.dumps(le.paired_rows(tmp_path, result)))


def test_learning_efficiency_compares_seed_against_seed_while_seeds_are_missing(
    tmp_path,
) -> None:
    """While the matrix fills, the verdict and the ablation line compare each arm with
    uniform only on the seeds both completed: uniform's lucky seed 2 (done, its lppo twin
    not yet) must not enter LPPO's difference, nor the target its steps are read against.
    Deliberate bugs this catches (tried): the difference of the two arms' means over their
    own complete seeds (+0.0 here, not +4.0); the target over all of uniform's seeds (15 %,
    reached at step 16, not uniform's 11 % on seeds 0 and 1, reached at step 8)."""
    le = _load_benchmark()
    runs = []
    for seed, uni_final, lppo_final in ((0, 0.10, 0.14), (1, 0.12, 0.16), (2, 0.23, None)):
        runs.append(summarize_run(_fake_run(
            tmp_path, "uniform", "grpo", seed, {0: 0.1, 16: uni_final}, 16)))
        for arm in ("lppo", "lp_weighting"):
            accs = ({0: 0.1, 8: 0.12} if lppo_final is None
                    else {0: 0.1, 8: 0.11 + 0.01 * seed, 16: lppo_final})
            runs.append(summarize_run(_fake_run(tmp_path, arm, "grpo", seed, accs, 16)))
    result = {"runs": runs, "arms": aggregate(runs)}
    rows = {r["strategy"]: r for r in le.efficiency_rows(result, 16)}
    lp = rows["lppo"]
    assert (lp["n_complete"], rows["uniform"]["n_complete"], lp["n_seed_matched"]) == (2, 3, 2)
    assert lp["delta_final_vs_uniform"] == pytest.approx(0.0)  # 0.15 - 0.15: the seeds' luck
    assert lp["delta_seed_matched"] == pytest.approx(0.04)
    assert lp["delta_seed_matched_std"] == pytest.approx(0.0, abs=1e-12)
    assert (lp["target"], lp["target_seeds"]) == (pytest.approx(0.11), 2)
    assert lp["steps_to_target"] == 8 and lp["seeds_reached"] == 2
    assert rows["uniform"]["target"] == pytest.approx(0.15)  # uniform's own: all 3 seeds
    (line,) = le.verdict(list(rows.values()), 16)
    assert "(+4.0 points seed against seed over the 2 seeds both completed; goal" in line
    assert ("reaches uniform's final accuracy (11.0%, over the 2 seeds both completed) at "
            "step 8 (50% of the 16-step budget)") in line and "**goal met**" in line
    (ablation,) = le.ablation_lines(list(rows.values()))
    assert "lppo +4.0 ± 0.0 (2/3 seeds); lp_weighting +4.0 ± 0.0 (2/3 seeds)." in ablation


def test_learning_efficiency_drains_on_a_file_in_its_runs_root(tmp_path, monkeypatch) -> None:
    """`touch <runs root>/DRAIN` reaches run_matrix as its drain; a DRAIN left by an earlier
    drain is removed when the matrix is started again (else it would start nothing)."""
    le = _load_benchmark()
    root = tmp_path / "le"
    root.mkdir()
    (root / le.DRAIN_FILE).touch()  # stale
    seen = {}

    def fake_run_matrix(specs, *, drain, **kwargs):
        seen["stale_removed"] = not drain()
        (root / le.DRAIN_FILE).touch()
        seen["drains"] = drain()
        return []

    monkeypatch.setattr(le, "run_matrix", fake_run_matrix)
    assert le.main(["--quick", "--runs-root", str(root), "--results", str(tmp_path / "r")]) == 0
    assert seen == {"stale_removed": True, "drains": True}


@pytest.mark.slow
def test_learning_efficiency_quick_pipeline_on_the_default_model(tmp_path) -> None:
    """`--quick` (what CI runs): real model, two arms, resumable, report + figures written."""
    le = _load_benchmark()
    root, results = tmp_path / "le", tmp_path / "results"
    argv = ["--quick", "--runs-root", str(root), "--results", str(results)]
    assert le.main(argv) == 0
    matrix = json.loads((results / "matrix.json").read_text())
    assert sorted((r["strategy"], r["complete"]) for r in matrix["runs"]) == [
        ("lppo", True),
        ("uniform", True),
    ]
    for r in matrix["runs"]:
        run = json.loads((results / "runs" / r["run"] / "summary.json").read_text())
        assert run["tokens_generated"] > 0 and [c["step"] for c in run["curve"]] == [0, 1, 2]
    # the untrained model was evaluated once and shared by both arms
    assert len(list((root / "eval_cache").glob("initial_eval_*.json"))) == 1
    report = (results / "report.md").read_text()
    assert "QUICK: no claims" in report and "- **grpo**:" in report
    for f in ("curves.png", "curves_tokens.png", "curves_grpo.png"):
        assert (results / f).stat().st_size > 5000, f
    # a second invocation trains nothing (every run is complete) and rewrites the report
    before = (root / "uniform__grpo__s0" / "metrics.jsonl").read_text()
    assert le.main(argv) == 0
    assert (root / "uniform__grpo__s0" / "metrics.jsonl").read_text() == before
    # the shared step-0 evaluation is kept with the results; a fresh clone gets it back
    assert len(list((results / "eval_cache").glob("initial_eval_*.json"))) == 1
    fresh = tmp_path / "fresh"
    assert le.main(["--quick", "--runs-root", str(fresh), "--results", str(results)]) == 0
    assert len(list((fresh / "eval_cache").glob("initial_eval_*.problems.jsonl"))) == 1


def test_learning_efficiency_reproduce_command_drops_arm_filters_and_survives_a_shell() -> None:
    le = _load_benchmark()
    argv = [
        "--steps",
        "16",
        "--strategies",
        "uniform",
        "lppo",
        "--data-kwargs",
        '{"size":232}',
        "--learners",
        "grpo",
        "--seeds",
        "0",
        "1",
        "--report",
        "--runs-root",
        "/tmp/my runs",
        "--results",
        "/tmp/out",
    ]
    cmd = le.reproduce_command(argv)
    assert shlex.split(cmd) == [
        "python",
        "benchmarks/learning_efficiency.py",
        "--steps",
        "16",
        "--data-kwargs",
        '{"size":232}',
        "--seeds",
        "0",
        "1",
    ]


def test_learning_efficiency_ablation_lines_list_complete_arms_against_uniform() -> None:
    """Each component's delta to uniform is reported, in arm order, only when measured."""
    le = _load_benchmark()

    def row(strategy, learner, delta, n, std=0.01):
        return {
            "strategy": strategy,
            "learner": learner,
            "n_complete": n,
            "n_runs": 3,
            "delta_seed_matched": delta if n else None,
            "delta_seed_matched_std": std if n > 1 else None,
            "n_seed_matched": n,
        }

    rows = [
        row("uniform", "grpo", 0.0, 3),
        row("prefix_guidance", "grpo", -0.05, 3),
        row("lppo", "grpo", -0.038, 3),
        row("lp_weighting", "grpo", -0.013, 1),
        row("uniform", "reinforce_plus_plus", 0.0, 3),
        row("lppo", "reinforce_plus_plus", 0.02, 3),
        row("lp_weighting", "reinforce_plus_plus", None, 0),
    ]
    (line,) = le.ablation_lines(rows)  # REINFORCE++ has LPPO only: nothing beyond the verdict
    assert line.startswith("- grpo,")
    assert (
        "lppo -3.8 ± 1.0 (3/3 seeds); lp_weighting -1.3 (1/3 seeds); "
        "prefix_guidance -5.0 ± 1.0 (3/3 seeds)."
    ) in line


def test_learning_efficiency_mechanics_pool_guided_and_unguided_rollouts(tmp_path) -> None:
    """The report's mechanics table pools rollouts of complete seeds; running seeds are left out."""
    le = _load_benchmark()
    lines = {
        "lppo__grpo__s0": [
            {"step": 0, "eval/accuracy": 0.1},
            {
                "step": 1,
                "prefix/guided_frac": 0.5,
                "rollout/guided_pass_rate": 0.0,
                "rollout/pass_rate": 0.5,
                "batch/weight_min": 0.8,
                "batch/weight_max": 1.0,
            },
            {
                "step": 2,
                "prefix/guided_frac": 0.0,
                "rollout/guided_pass_rate": None,
                "rollout/pass_rate": 0.25,
                "batch/weight_min": 1.0,
                "batch/weight_max": 1.3,
            },
        ],
        "lppo__grpo__s1": [  # not complete: ignored
            {
                "step": 1,
                "prefix/guided_frac": 1.0,
                "rollout/guided_pass_rate": 1.0,
                "rollout/pass_rate": None,
                "batch/weight_min": 0.1,
                "batch/weight_max": 9.0,
            },
        ],
    }
    for name, rows in lines.items():
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = {
        "runs": [
            {"run": "lppo__grpo__s0", "strategy": "lppo", "learner": "grpo", "complete": True},
            {"run": "lppo__grpo__s1", "strategy": "lppo", "learner": "grpo", "complete": False},
        ]
    }
    (row,) = le.mechanics_rows(tmp_path, result)
    assert row["guided_frac"] == pytest.approx(0.25)  # 2 steps, half guided then none
    assert row["guided_pass_rate"] == pytest.approx(0.0)
    # unguided rollouts: 0.5 of step 1 at 0.5, all of step 2 at 0.25 -> (0.25 + 0.25) / 1.5
    assert row["unguided_pass_rate"] == pytest.approx(1 / 3)
    assert (row["weight_min"], row["weight_max"]) == (0.8, 1.3)
    (note,) = le.mechanics_notes([row])
    assert "25.0% of the training rollouts" in note and "passed 0.0%" in note
    assert row["control_pass_rate"] is None  # logged before the paired control existed
    assert "all unguided rollouts 33.3%" in note and "no paired control" in note


def test_learning_efficiency_mechanics_compare_guided_with_their_paired_control(tmp_path) -> None:
    """Guided rollouts are judged against the unguided rollouts of the same groups."""
    le = _load_benchmark()
    rows = [
        {
            "step": 1,
            "prefix/guided_frac": 0.25,
            "prefix/control_frac": 0.25,
            "rollout/guided_pass_rate": 0.5,
            "rollout/guided_control_pass_rate": 0.0,
            "rollout/pass_rate": 0.6,
        },
        {
            "step": 2,
            "prefix/guided_frac": 0.5,
            "prefix/control_frac": 0.5,
            "rollout/guided_pass_rate": 0.25,
            "rollout/guided_control_pass_rate": 0.5,
            "rollout/pass_rate": 0.8,
        },
    ]
    d = tmp_path / "runs" / "lppo__grpo__s0"
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = {
        "runs": [{"run": "lppo__grpo__s0", "strategy": "lppo", "learner": "grpo", "complete": True}]
    }
    (row,) = le.mechanics_rows(tmp_path, result)
    # guided: (0.25 * 0.5 + 0.5 * 0.25) / 0.75; control: (0.25 * 0 + 0.5 * 0.5) / 0.75
    assert row["guided_pass_rate"] == pytest.approx(1 / 3)
    assert row["control_pass_rate"] == pytest.approx(1 / 3)
    rows[1]["rollout/guided_control_pass_rate"] = 0.0
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (row,) = le.mechanics_rows(tmp_path, result)
    assert row["control_pass_rate"] == pytest.approx(0.0)
    (note,) = le.mechanics_notes([row])
    assert "passed 33.3%; paired with the unguided rollouts of the same samples" in note
    assert "(steps that logged it, 1/1 seeds): 33.3% vs 0.0%" in note
    # one seed's rollouts share a policy: no claim that the prefix did it
    assert "one seed: no test" in note and "pass more often" not in note
    assert "started from an expert prefix" in note
    # a self-prefix arm's sentence names what its rollouts really started from
    (note,) = le.mechanics_notes([{**row, "strategy": "self_prefix"}])
    assert "started from a self-prefix" in note and "expert" not in note
    # A second seed logged before the control existed: the paired comparison keeps to seed 0.
    old = tmp_path / "runs" / "lppo__grpo__s1"
    old.mkdir()
    (old / "metrics.jsonl").write_text(
        json.dumps(
            {
                "step": 1,
                "prefix/guided_frac": 0.25,
                "rollout/guided_pass_rate": 1.0,
                "rollout/pass_rate": 0.5,
            }
        )
        + "\n"
    )
    result["runs"].append(
        {"run": "lppo__grpo__s1", "strategy": "lppo", "learner": "grpo", "complete": True}
    )
    (row,) = le.mechanics_rows(tmp_path, result)
    assert (row["paired_seeds"], row["n_seeds"]) == (1, 2)
    assert row["guided_pass_rate"] == pytest.approx((0.125 + 0.125 + 0.25) / 1.0)  # all seeds
    assert row["paired_guided_pass_rate"] == pytest.approx(1 / 3)
    assert row["control_pass_rate"] == pytest.approx(0.0)
    (note,) = le.mechanics_notes([row])
    assert "passed 50.0%;" in note and "(steps that logged it, 1/2 seeds): 33.3% vs 0.0%" in note


def _guided_seed(tmp_path, run: str, guided: float, control: float) -> dict:
    d = tmp_path / "runs" / run
    d.mkdir(parents=True)
    rows = [{"step": s, "prefix/guided_frac": 0.25, "prefix/control_frac": 0.25,
             "rollout/guided_pass_rate": guided, "rollout/guided_control_pass_rate": control,
             "rollout/pass_rate": 0.5} for s in (1, 2)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    strategy, learner, _ = run.split("__")
    return {"run": run, "strategy": strategy, "learner": learner, "complete": True}


def test_learning_efficiency_mechanics_claim_a_prefix_effect_only_when_seeds_agree(
        tmp_path) -> None:
    """'The prefix made them pass more often' needs a seed-level test that survives Holm over
    the guided arms; a pooled gap with seeds that disagree is reported as not detectable."""
    le = _load_benchmark()
    runs = [_guided_seed(tmp_path, f"self_prefix__grpo__s{s}", g, c)
            for s, (g, c) in enumerate([(0.5, 0.1), (0.45, 0.1), (0.55, 0.15), (0.5, 0.05)])]
    runs += [_guided_seed(tmp_path, f"prefix_guidance__grpo__s{s}", g, c)
             for s, (g, c) in enumerate([(0.4, 0.0), (0.0, 0.1), (0.1, 0.2), (0.0, 0.05)])]
    rows = {r["strategy"]: r for r in le.mechanics_rows(tmp_path, {"runs": runs})}
    sp, pg = rows["self_prefix"]["prefix_test"], rows["prefix_guidance"]["prefix_test"]
    assert sp["units"] == pg["units"] == 4
    assert sp["diff"] == pytest.approx(0.4) and pg["diff"] == pytest.approx(0.0375)
    assert rows["prefix_guidance"]["paired_guided_pass_rate"] > \
        rows["prefix_guidance"]["control_pass_rate"]  # pooled, guided still looks better
    assert sp["holm_p"] < 0.05 <= pg["holm_p"]
    assert sp["holm_p"] == pytest.approx(min(1.0, 2 * sp["p"]))  # Holm over the 2 arms
    notes = {n.split(":")[0]: n for n in le.mechanics_notes(list(rows.values()))}
    assert "Holm p" in notes["- self_prefix/grpo"] and "over 2 guided arms" in notes[
        "- self_prefix/grpo"]
    assert "so the prefix made them pass more often than without it" in notes[
        "- self_prefix/grpo"]
    assert "not detectable" in notes["- prefix_guidance/grpo"]
    assert "pass more often" not in notes["- prefix_guidance/grpo"]


def test_learning_efficiency_restores_committed_complete_runs(tmp_path) -> None:
    """A fresh clone resumes the matrix from the committed results instead of retraining."""
    le = _load_benchmark()
    base = TrainConfig(steps=2, eval_size=4, eval_every=1, data_kwargs={"size": 40})
    specs = build_matrix(base, ["uniform", "lppo"], ["grpo"], [0], tmp_path / "runs")
    results = tmp_path / "results"
    accs = {0: 0.1, 1: 0.2, 2: 0.3}
    complete = _fake_run(results / "runs", "uniform", "grpo", 0, accs, 2)
    (complete / "config.json").write_text(json.dumps(specs[0].cfg.to_dict()))
    partial = _fake_run(results / "runs", "lppo", "grpo", 0, {0: 0.1, 1: 0.2}, 2)
    (partial / "config.json").write_text(json.dumps(specs[1].cfg.to_dict()))

    assert le.restore_complete_runs(specs, tmp_path / "runs", results) == ["uniform__grpo__s0"]
    assert summarize_run(specs[0].run_dir, target_steps=2)["complete"]
    assert not (specs[1].run_dir / "metrics.jsonl").exists()  # incomplete: trained again
    # a run of another protocol (here: another lr) is never restored
    other = build_matrix(
        TrainConfig(**{**base.to_dict(), "lr": 1.0}), ["uniform"], ["grpo"], [0], tmp_path / "runs2"
    )
    assert le.restore_complete_runs(other, tmp_path / "runs2", results) == []
    # nothing is overwritten where runs_root already has the run
    (specs[0].run_dir / "metrics.jsonl").write_text("")
    assert le.restore_complete_runs(specs, tmp_path / "runs", results) == []
    assert (specs[0].run_dir / "metrics.jsonl").read_text() == ""


def test_learning_efficiency_keeps_each_run_as_it_completes(tmp_path, monkeypatch) -> None:
    """The matrix script copies a run's logs into results/runs the moment the run completes,
    not only when the whole matrix ends (a matrix of days is interrupted many times).
    Deliberate bug this catches (tried): no on_complete passed to run_matrix."""
    le = _load_benchmark()
    results, runs_root = tmp_path / "results", tmp_path / "runs"
    kept_on_completion = []

    def fake_run_matrix(specs, *, on_complete=None, **kw):
        for spec in specs:  # the run trains to its budget, then the callback fires
            _fake_run(runs_root, spec.strategy, spec.learner, spec.seed,
                      {0: 0.1, spec.cfg.steps: 0.2}, spec.cfg.steps)
            if on_complete is not None:
                on_complete(spec)
            kept_on_completion.append(
                (results / "runs" / spec.name / "metrics.jsonl").is_file())
        return []

    monkeypatch.setattr(le, "run_matrix", fake_run_matrix)
    assert le.main(["--quick", "--runs-root", str(runs_root), "--results", str(results)]) == 0
    assert kept_on_completion == [True, True]


def test_learning_efficiency_report_from_committed_runs_keeps_their_hardware_and_status(
    tmp_path,
) -> None:
    """Regenerating the report in a fresh clone changes nothing the committed runs recorded."""
    le = _load_benchmark()
    results = tmp_path / "results"
    flags = ["--steps", "2", "--eval-every", "1", "--eval-size", "4", "--strategies", "uniform"]
    flags += ["--learners", "grpo", "--seeds", "0", "--results", str(results), "--report"]
    le.main([*flags, "--runs-root", str(tmp_path / "trained_here")])
    protocol = json.loads((results / "protocol.json").read_text())
    protocol["hardware"]["cpu_model"] = "the training machine"
    (results / "protocol.json").write_text(json.dumps(protocol))
    assert not (results / "runs").exists()  # a run that never started leaves nothing
    run = _fake_run(results / "runs", "uniform", "grpo", 0, {0: 0.1, 1: 0.2, 2: 0.3}, 2)
    config = {**protocol["config"], "strategy": "uniform", "learner": "grpo", "seed": 0}
    (run / "config.json").write_text(json.dumps(config))
    status = {"run": run.name, "skipped": False, "wall_s": 12.0, "returncode": 0, "error": None}
    (run / "compare_status.json").write_text(json.dumps(status))

    le.main([*flags, "--runs-root", str(tmp_path / "fresh_clone")])
    assert (tmp_path / "fresh_clone" / run.name / "compare_status.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["last_attempt"]["wall_s"] == 12.0
    kept = json.loads((results / "protocol.json").read_text())
    assert kept["hardware"]["cpu_model"] == "the training machine"
    # another protocol (here: more steps) is another experiment: it records its own hardware
    le.main([*flags, "--runs-root", str(tmp_path / "other"), "--steps", "3"])
    assert json.loads((results / "protocol.json").read_text())["hardware"]["cpu_model"] != (
        "the training machine"
    )
