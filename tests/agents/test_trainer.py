"""The trainer end to end: outputs, exact kill/resume, bad configuration
(signals: test_stopping.py).

Fast tests use a tiny randomly initialised Llama saved as a real HF directory (so the
same `load_policy` path as a user's model is exercised); the slow test runs the real
default model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from agents.cli import main
from agents.config import ConfigError, TrainConfig
from agents.trainer import Trainer, guidance_metrics
from lppo_sampling import make_strategy

REPO = Path(__file__).resolve().parents[2]


def _cfg(model_dir: Path, run_dir: Path, **kw) -> TrainConfig:
    base = dict(
        model=str(model_dir), run_dir=str(run_dir), steps=3, batch_size=3, group_size=3,
        max_new_tokens=12, eval_size=4, eval_every=2, save_every=1, progress=False,
        data_kwargs={"size": 60}, lr=1e-3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _cli_args(cfg: TrainConfig) -> list[str]:
    args = ["train"]
    for k, v in cfg.to_dict().items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else "--no-" + k.replace("_", "-"))
        elif isinstance(v, dict):
            args += [flag, json.dumps(v)]
        elif v is not None:
            args += [flag, str(v)]
    return args


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def test_trainer_writes_metrics_plot_and_checkpoint(tiny_dir, tmp_path) -> None:
    cfg = _cfg(tiny_dir, tmp_path / "run", strategy="lppo")
    summary = Trainer(cfg).run()
    assert summary["steps"] == 3 and not summary["interrupted"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert "eval/accuracy" in rows[0] and "eval/accuracy" in rows[2] and "eval/accuracy" in rows[3]
    step = rows[1]
    for key in ("rollout/reward_mean", "rollout/tokens_total", "sampler/pool_size",
                "batch/weight_mean", "prefix/guided_frac", "time/generate", "time/update",
                "rollout/guided_control_pass_rate", "prefix/control_frac",
                "loss/policy"):
        assert key in step, key
    assert rows[3]["rollout/tokens_total"] > rows[1]["rollout/tokens_total"] > 0
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    ckpt = tmp_path / "run" / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step-000003"
    assert sorted(p.name for p in ckpt.glob("step-*")) == ["step-000002", "step-000003"]
    for f in ("model/config.json", "learner.pt", "sampler.npz", "rng.pt", "trainer_state.json"):
        assert (ckpt / "step-000003" / f).exists(), f


def test_trainer_step_feeds_the_strategy(tiny_dir, tmp_path) -> None:
    t = Trainer(_cfg(tiny_dir, tmp_path / "run", steps=1, eval_size=0))
    out = t.step()
    assert out.rewards.shape == (3, 3)
    rows = t.strategy.stats.rows(out.keys)
    assert (
        t.strategy.stats["n_rollouts"][rows] + t.strategy.stats["guided_rollouts"][rows] == 3
    ).all()
    assert t.strategy.stats.step == 1


def test_heldout_set_is_shared_by_seeds_and_moved_by_split_seed(tiny_dir, tmp_path) -> None:
    ids = {}
    for name, kw in {"s0": {}, "s1": {"seed": 1}, "split1": {"split_seed": 1}}.items():
        t = Trainer(_cfg(tiny_dir, tmp_path / name, eval_size=8, **kw))
        ids[name] = [p.id for p in t.eval_problems]
        assert not set(ids[name]) & {p.id for p in t.train_problems}
    assert ids["s0"] == ids["s1"]
    assert ids["s0"] != ids["split1"]


def test_initial_eval_is_cached_across_seeds_and_strategies(
    tiny_dir, tmp_path, monkeypatch
) -> None:
    cache = tmp_path / "eval_cache"
    first = Trainer(_cfg(tiny_dir, tmp_path / "a", steps=1, eval_cache=str(cache))).run()
    rows_a = [json.loads(x) for x in Path(first["metrics"]).read_text().splitlines()]
    assert "eval/cached" not in rows_a[0] and len(list(cache.glob("initial_eval_*.json"))) == 1

    calls = []
    monkeypatch.setattr(
        Trainer, "evaluate", lambda self, full=True: calls.append(1) or {"eval/accuracy": -1.0}
    )
    other = _cfg(
        tiny_dir, tmp_path / "b", steps=1, seed=3, strategy="uniform", eval_cache=str(cache)
    )
    rows_b = [json.loads(x) for x in Path(Trainer(other).run()["metrics"]).read_text().splitlines()]
    assert rows_b[0]["eval/cached"] == 1.0 and len(calls) == 1  # only the final eval ran
    assert rows_b[0]["eval/accuracy"] == rows_a[0]["eval/accuracy"]
    assert rows_b[0]["time/eval"] == rows_a[0]["time/eval"]

    # anything the untrained model's answers depend on changes the key: measured again
    longer = _cfg(tiny_dir, tmp_path / "c", steps=1, max_new_tokens=13, eval_cache=str(cache))
    Trainer(longer).run()
    assert len(calls) == 3 and len(list(cache.glob("initial_eval_*.json"))) == 2


def _sampler_state(run: Path, step: int):
    s = make_strategy("lppo", group_size=3, seed=0)
    s.load(run / "checkpoints" / f"step-{step:06d}" / "sampler.npz")
    return s


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_dir, tmp_path) -> None:
    steps = 5
    full = _cfg(tiny_dir, tmp_path / "full", steps=steps, eval_size=0, keep_checkpoints=10)
    Trainer(full).run()

    killed = _cfg(tiny_dir, tmp_path / "killed", steps=steps, eval_size=0, keep_checkpoints=10)
    cmd = [sys.executable, "-m", "agents.cli", *_cli_args(killed)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline:
        if latest.exists() and latest.read_text().strip() >= "step-000002":
            break
        if proc.poll() is not None:
            pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = int(latest.read_text().strip().split("-")[1])
    assert done < steps, "the run finished before it could be killed"

    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = _sampler_state(tmp_path / "full", steps), _sampler_state(tmp_path / "killed", steps)
    assert a.state_checksum() == b.state_checksum()
    np.testing.assert_array_equal(a.select(3), b.select(3))  # the same next batch
    wa = load_file(
        str(tmp_path / "full/checkpoints" / f"step-{steps:06d}" / "model/model.safetensors")
    )
    wb = load_file(
        str(tmp_path / "killed/checkpoints" / f"step-{steps:06d}" / "model/model.safetensors")
    )
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    rows = [
        json.loads(x)["step"] for x in (tmp_path / "killed/metrics.jsonl").read_text().splitlines()
    ]
    assert rows == list(range(1, steps + 1))  # no step lost, none duplicated


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strategy", "lpo"], "strategy: unknown strategy 'lpo'. Did you mean 'lppo'"),
        (["--learner", "grp"], "learner: unknown learner 'grp'. Did you mean 'grpo'"),
        (["--data", "/nonexistent/train.jsonl"], "data: '/nonexistent/train.jsonl' is neither"),
        (["--group-size", "1"], "group_size must be >= 2 for grpo"),
        (["--model", "/nonexistent/model"], "--model: no such model directory: /nonexistent/model"),
        (["--strategy-kwargs", '{"kapa": 1}'], "kapa"),
        (["--stepz", "3"], None),
    ],
)
def test_bad_configuration_fails_before_any_work(flags, message, tmp_path, capsys) -> None:
    argv = ["train", "--run-dir", str(tmp_path / "run"), *flags]
    if message is None:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        return
    t0 = time.time()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and message in err
    assert time.time() - t0 < 30  # no model was loaded
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_config_yaml_and_overrides(tmp_path) -> None:
    from agents.config import load_config

    p = tmp_path / "run.yaml"
    p.write_text("steps: 7\nstrategy: uniform\nstrategy_kwargs: {beta: 0.5}\n")
    cfg = load_config(p, {"steps": 9})
    assert (cfg.steps, cfg.strategy, cfg.strategy_kwargs) == (9, "uniform", {"beta": 0.5})
    p.write_text("stpes: 7\n")
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        load_config(p)


def test_plot_command_overlays_runs(tiny_dir, tmp_path) -> None:
    for name in ("a", "b"):
        Trainer(_cfg(tiny_dir, tmp_path / name, steps=2, eval_size=4, eval_every=1,
                     strategy="uniform" if name == "a" else "lppo")).run()
    out = tmp_path / "both.png"
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)]) == 0
    assert out.stat().st_size > 1000


@pytest.mark.slow
def test_main_job_on_the_real_default_model(tmp_path) -> None:
    """A few real steps of `lppo train` on SmolLM2-135M-Instruct (the README's job, shortened)."""
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "agents.cli", "train", "--steps", "2", "--batch-size", "2",
         "--group-size", "3", "--eval-size", "6", "--eval-every", "2", "--max-new-tokens", "48",
         "--run-dir", str(run), "--no-progress"],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[-1]["eval/n_problems"] == 6.0
    assert rows[-1]["rollout/tokens_total"] > 0
    assert (run / "learning_curve.png").exists()
    assert (run / "checkpoints" / "step-000002" / "model" / "model.safetensors").exists()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6).flatmap(lambda g: st.tuples(
    st.lists(st.lists(st.sampled_from([0.0, 1.0]), min_size=g, max_size=g), min_size=1, max_size=6),
    st.lists(st.lists(st.booleans(), min_size=g, max_size=g), min_size=1, max_size=6),
)))
def test_guidance_metrics_pair_guided_rollouts_with_their_own_groups(data) -> None:
    rewards, guided = data
    n = min(len(rewards), len(guided))
    r, g = np.array(rewards[:n]), np.array(guided[:n])
    m = guidance_metrics(r, g)
    # Brute force over groups: the control is the unguided rollouts of groups with a guided one.
    control = [r[i, j] for i in range(n) if g[i].any() for j in range(r.shape[1]) if not g[i, j]]
    unguided = [r[i, j] for i in range(n) for j in range(r.shape[1]) if not g[i, j]]
    guided_r = r[g].tolist()
    for key, xs in (("rollout/guided_control_pass_rate", control),
                    ("rollout/pass_rate", unguided), ("rollout/guided_pass_rate", guided_r)):
        assert m[key] == (pytest.approx(np.mean(xs)) if xs else None), key
    assert m["prefix/control_frac"] == pytest.approx(len(control) / r.size)
    # A group with no guided rollout never enters the control, whatever its rewards.
    if not g.any():
        assert m["rollout/guided_control_pass_rate"] is None


def test_learner_logprobs_use_the_sampling_temperature(tiny_dir, tmp_path) -> None:
    """At T = 0.7 the first-epoch ratio against the sampler's own log-probs is exactly 1."""
    import torch

    from agents.learners.logprobs import token_logprobs

    # a KL loss makes every row go through the model (the untrained tiny model fails every
    # rollout, so without it no row carries a policy gradient and actor/* would be null)
    t = Trainer(_cfg(tiny_dir, tmp_path / "run", steps=1, eval_size=0, temperature=0.7,
                     learner_kwargs={"recompute_old_logprobs": False, "kl_coef": 0.01}))
    seen: dict[str, float] = {}
    update = t.learner.update

    def checked_update(batch):
        with torch.no_grad():
            lp, _, _ = token_logprobs(t.policy.model, batch.input_ids, batch.attention_mask,
                                      temperature=t.learner.config.temperature)
        mask = batch.response_mask > 0
        seen["max_dev"] = float((lp[mask] - batch.old_logprobs[mask]).exp().sub(1).abs().max())
        return update(batch)

    t.learner.update = checked_update
    m = t.step().metrics
    assert seen["max_dev"] < 1e-4  # ratio pi_theta / pi_sampler is 1 before any update
    assert abs(m["actor/ppo_kl"]) < 1e-5 and m["actor/clipfrac"] == 0.0


def test_learner_temperature_cannot_contradict_the_sampling_temperature(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match="temperature 0.5 differs from temperature 0.7"):
        Trainer(_cfg(tiny_dir, tmp_path / "run", temperature=0.7,
                     learner_kwargs={"temperature": 0.5}))


def test_step_record_is_aligned_slot_by_slot(tiny_dir, tmp_path) -> None:
    """Slot (i, j) of every array of the record is the j-th rollout of keys[i]."""
    t = Trainer(_cfg(tiny_dir, tmp_path / "run", steps=2, eval_size=0, batch_size=3,
                     group_size=4, strategy="lppo", data_kwargs={"size": 4}))
    t.step()  # the untrained model fails: samples seen again are stuck and get guided
    record = t.step().record
    assert record.shape == (3, 4) and record.rollouts.shape == (3, 4)
    assert record.guided.any(), "the stuck threshold guides the untrained model"
    for i, key in enumerate(record.keys.tolist()):
        problem = t.envs.envs[0].problem(key)
        for j in range(4):
            r = record.rollouts[i, j]
            assert problem.question in record.prompts[i, j]
            assert r.prefix == record.prefixes[i, j] and bool(r.prefix_ids) == record.guided[i, j]
            reward = t.verifier.verify(r.full_text, problem.answer).reward
            assert record.rewards[i, j] == reward
    batch = record.train_batch(np.array([True, False, True]), np.array([1.0, 2.0, 3.0]), 0)
    assert batch.index.tolist() == [0] * 4 + [1] * 4
    assert batch.weights.tolist() == [1.0] * 4 + [3.0] * 4
    assert batch.rewards.tolist() == record.rewards[[0, 2]].ravel().tolist()


def _documented_metrics() -> tuple[dict[str, str], dict[str, str]]:
    """docs/metrics.md tables: {name: when} of the training run, {name: strategies}."""
    import re

    text = (REPO / "docs" / "metrics.md").read_text()
    run_part, sampler_part = text.split("## Strategy metrics")
    row = re.compile(r"^\| `([^`]+)` \| ([^|]+) \|", re.M)
    run = {k: w.strip() for k, w in row.findall(run_part)}
    sampler = {k: w.strip() for k, w in row.findall(sampler_part)}
    return run, sampler


def test_logged_metrics_are_exactly_the_documented_ones(tiny_dir, tmp_path) -> None:
    """Every name the trainer logs is documented once, and every documented name is logged."""
    run_doc, sampler_doc = _documented_metrics()
    cache = tmp_path / "eval-cache"
    runs = {
        # the default job's learner and strategy; step 0 measures the evaluation
        # (with an intermediate evaluation of a fixed subset)
        "grpo": _cfg(tiny_dir, tmp_path / "a", steps=2, eval_every=1, eval_subset=2,
                     eval_cache=str(cache)),
        # PPO with a KL loss term; step 0 is read from the evaluation cache
        "ppo": _cfg(tiny_dir, tmp_path / "b", steps=1, learner="ppo", strategy="uniform",
                    learner_kwargs={"kl_coef": 0.01, "use_kl_in_reward": False},
                    eval_cache=str(cache)),
    }
    scopes = {"grpo": {"every step", "update", "update, grpo"},
              "ppo": {"every step", "update", "update, KL", "update, KL loss", "update, ppo"}}
    logged: set[str] = set()
    for name, cfg in runs.items():
        Trainer(cfg).run()
        lines = (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(x) for x in lines]
        strategy_keys = {
            k for k, s in sampler_doc.items() if s == "all" or cfg.strategy in s.split(", ")
        }
        eval_keys = {k for k, w in run_doc.items() if w == "eval"}
        if cfg.eval_subset:
            eval_keys |= {k for k, w in run_doc.items() if w == "eval, with `eval_subset`"}
        row0 = eval_keys | {"step", "rollout/tokens_total"}
        if name == "ppo":
            row0 |= {"eval/cached"}
        assert set(rows[0]) == row0, set(rows[0]) ^ row0
        for r in rows[1:]:
            expected = {k for k, w in run_doc.items() if w in scopes[name]} | strategy_keys
            if "eval/accuracy" in r:
                expected |= eval_keys
            assert set(r) == expected, (name, r["step"], set(r) ^ expected)
        logged |= {k for r in rows for k in r}
    documented = set(run_doc) | {k for k in sampler_doc if sampler_doc[k] == "all"}
    documented |= {k for k, s in sampler_doc.items() if "lppo" in s.split(", ")}
    assert logged == documented, logged ^ documented


def test_every_strategy_logs_exactly_its_documented_sampler_metrics() -> None:
    """No strategy adds an undocumented name, and no batch-level duplicate survives."""
    from agents.step import SAMPLER_DUPLICATES
    from lppo_sampling import GroupResults, available_strategies

    _, sampler_doc = _documented_metrics()
    from lppo_sampling.strategies.catalog import strategy_info
    from lppo_sampling.strategies.signals import TablePredictor

    def stub(arg: str):  # numpy stand-ins for the model-side signals (agents.signals)
        return {"predictor": TablePredictor(), "estimate_fn": TablePredictor(),
                "score_fn": lambda k: np.zeros(len(k)),
                "restructure_fn": lambda k, m: [None] * len(k)}[arg]

    for name in available_strategies():
        signals = {a: stub(a) for a in strategy_info(name).signals}
        strategy = make_strategy(name, group_size=3, seed=0, **signals)
        keys = [f"k{i}" for i in range(12)]
        # labels ending in a chain depth (h1 reads it; for the others any label will do)
        strategy.add_samples(keys, has_solution=[True] * 12, category=["a1", "b2"] * 6)
        rng = np.random.default_rng(0)
        for _ in range(3):
            batch = strategy.select(4)
            plan = strategy.plan(batch)
            rewards = (rng.random(plan.prefix_ratios.shape) > 0.5).astype(float)
            strategy.observe(GroupResults.build(batch, rewards, guided=plan.prefix_ratios > 0,
                                                lengths=np.ones_like(rewards),
                                                steps=np.ones_like(rewards)))
            strategy.keep(batch)
            strategy.weights(batch)
        logged = set(strategy.metrics()) - set(SAMPLER_DUPLICATES)
        documented = {k for k, s in sampler_doc.items() if s == "all" or name in s.split(", ")}
        assert logged == documented, (name, logged ^ documented)


def test_cpu_learner_defaults_bound_memory_and_yield_to_learner_kwargs(tiny_dir, tmp_path):
    from agents.trainer import CPU_LEARNER_DEFAULTS

    t = Trainer(_cfg(tiny_dir, tmp_path / "a", steps=1, eval_size=0))
    for key, value in CPU_LEARNER_DEFAULTS.items():
        assert getattr(t.learner.config, key) == value, key
    assert t.policy.model.is_gradient_checkpointing
    t = Trainer(_cfg(tiny_dir, tmp_path / "b", steps=1, eval_size=0,
                     learner_kwargs={"token_budget": None, "gradient_checkpointing": False}))
    assert t.learner.config.token_budget is None and not t.learner.config.gradient_checkpointing


def test_eval_subset_evaluates_a_fixed_hashed_subset_between_full_evaluations(
    tiny_dir, tmp_path
) -> None:
    """Step 0 and the last step evaluate the whole held-out set, the steps between only
    the subset; `eval/subset_accuracy` is the same subset's accuracy at every evaluation,
    read from the per-problem log, and the subset is the held-out set of size
    `eval_subset` (same keyed hash), not the leading problems.

    Deliberate bugs this catches (tried): intermediate evaluations on the full set, the
    last evaluation on the subset only, the subset taken as the first problems, subset
    accuracy computed over all evaluated problems.
    """
    from agents.evaluation import read_eval_problems
    from lppo_env import load_problems, split_problems

    cfg = _cfg(tiny_dir, tmp_path / "run", steps=3, eval_every=1, eval_size=6, eval_subset=3,
               save_every=3)
    Trainer(cfg).run()
    rows = [json.loads(x) for x in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if "eval/accuracy" in r}
    assert sorted(evals) == [0, 1, 2, 3]
    assert [evals[s]["eval/n_problems"] for s in range(4)] == [6, 3, 3, 6]
    _, held = split_problems(load_problems(cfg.data, **cfg.data_kwargs), 6, seed=cfg.split_seed)
    _, subset = split_problems(held, 3, seed=cfg.split_seed)
    sub_ids = {str(p.id) for p in subset}
    assert sub_ids != {str(p.id) for p in held[:3]}, "this case must tell hashed from leading"
    log = read_eval_problems(Path(cfg.run_dir) / "eval_problems.jsonl")
    for step, r in evals.items():
        assert set(log[step]) == (sub_ids if step in (1, 2) else {str(p.id) for p in held})
        want = sum(log[step][i] for i in sub_ids) / 3
        assert r["eval/subset_accuracy"] == pytest.approx(want)
    with pytest.raises(ConfigError, match="eval_subset must be <= eval_size"):
        _cfg(tiny_dir, tmp_path / "x", eval_size=4, eval_subset=5)
