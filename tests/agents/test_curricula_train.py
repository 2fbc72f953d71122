"""The curricula on the training side: model signals on a real (tiny) policy, and one
`lppo train --strategy NAME` step per curriculum through the CLI.

The tiny random Llama of conftest.py stands in for the policy (the default model is too
slow for a per-strategy test); every signal runs its real code path on it: prefill
passes, the `mlp.up_proj` hook, online fitting, greedy restructuring.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cli import main
from agents.signals import AngleScorer, HiddenStates, PolicyRestructurer, ValueHead, build_signals
from lppo_env import arithmetic_problems

PROBLEMS = {p.id: p for p in arithmetic_problems(12, seed=0)}
KEYS = np.array(list(PROBLEMS))


def test_value_head_predicts_in_unit_interval_and_fits_targets(tiny_policy):
    """Bug caught: predictions outside [0, 1] (the sampler refuses them) or an update
    that does not move predictions towards the observed pass rates."""
    head = ValueHead(HiddenStates(lambda: tiny_policy, PROBLEMS))
    p0 = head.predict(KEYS)
    assert p0.shape == (len(KEYS),) and np.allclose(p0, 0.5)
    target = np.linspace(0, 1, len(KEYS))
    head.update(KEYS, target)
    p1 = head.predict(KEYS)
    assert ((p1 >= 0) & (p1 <= 1)).all()
    assert np.abs(p1 - target).mean() < np.abs(p0 - target).mean()
    other = ValueHead(HiddenStates(lambda: tiny_policy, PROBLEMS))
    other.load_state_dict(head.state_dict())
    assert np.array_equal(other.predict(KEYS), p1)


def test_hidden_states_cache_and_fresh_modes(tiny_policy):
    """Bug caught: ADCL's re-estimates reading features cached from an older policy."""
    cached = HiddenStates(lambda: tiny_policy, PROBLEMS, cache=True)
    fresh = HiddenStates(lambda: tiny_policy, PROBLEMS, cache=False)
    a, b = cached(KEYS[:4]), fresh(KEYS[:4])
    assert np.allclose(a, b, atol=1e-6) and np.allclose(np.linalg.norm(a, axis=1), 1)
    import torch

    with torch.no_grad():
        for prm in tiny_policy.model.parameters():
            prm.add_(0.5)
    assert np.array_equal(cached(KEYS[:4]), a)
    assert not np.allclose(fresh(KEYS[:4]), b, atol=1e-4)


def test_angle_scorer_hooks_the_last_up_proj_and_cleans_up(tiny_policy):
    """Bug caught: a hook left on the model (it would run in every training forward)."""
    scorer = AngleScorer(lambda: tiny_policy, PROBLEMS)
    s = scorer(KEYS[:5])
    assert s.shape == (5,) and ((s >= -1) & (s <= 1)).all() and np.array_equal(s, scorer(KEYS[:5]))
    up = tiny_policy.model.model.layers[-1].mlp.up_proj
    assert not up._forward_pre_hooks
    # the score is the mean lower-triangle cosine of that layer's input: check by hand
    import torch

    from agents.signals import _prompt_ids

    seen = []
    h = up.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.no_grad():
        tiny_policy.model(input_ids=torch.tensor([_prompt_ids(tiny_policy,
                                                               PROBLEMS[KEYS[0]].question)]))
    h.remove()
    x = torch.nn.functional.normalize(seen[0][0], dim=-1)
    t = x.shape[0]
    manual = float(sum((x[i] @ x[j]) for i in range(t) for j in range(i)) / (t * (t - 1) / 2))
    assert s[0] == pytest.approx(manual, abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(a=st.integers(-999, 999), b=st.integers(-999, 999), words=st.text(
    alphabet="abcdefgh xyz?", min_size=1, max_size=30).filter(str.strip))
def test_restructure_reply_accepted_only_with_the_same_answer(a, b, words):
    """Bug caught: a rewrite accepted whose answer differs, or one that states it."""
    reply = f"New problem: {words}\nSolution: so \\boxed{{{b}}}"
    got = PolicyRestructurer.parse(reply, str(a))
    assert got == (words.strip() if a == b else None)
    leak = f"New problem: {words} {a}\nSolution: \\boxed{{{a}}}"
    assert PolicyRestructurer.parse(leak, str(a)) is None


def test_restructurer_runs_greedy_on_the_policy(tiny_policy):
    r = PolicyRestructurer(lambda: tiny_policy, PROBLEMS, max_new_tokens=8)
    out = r(KEYS[:2], ["simplify", "diversify"])
    assert len(out) == 2 and r.accepted + r.rejected == 2  # a random model's rewrites fail
    assert out == r(KEYS[:2], ["simplify", "diversify"])  # greedy: reproducible


def test_build_signals_fills_only_what_is_missing():
    s = build_signals("pcl", lambda: None, PROBLEMS)
    assert isinstance(s["predictor"], ValueHead)
    assert build_signals("pcl", lambda: None, PROBLEMS, {"predictor": object()}) == {}
    assert build_signals("uniform", lambda: None, PROBLEMS) == {}
    assert build_signals("no_such", lambda: None, PROBLEMS) == {}


CASES = {
    "pcl": [], "adcl": [], "gain_rl": [],
    # 3 steps over 6 problems: samples come back seen, so restructuring / formats happen
    "clpo": ["--steps", "3", "--data-kwargs", json.dumps({"size": 6})],
    "length_curriculum": ["--strategy-kwargs", json.dumps({"initial_budget": 8, "min_budget": 4})],
    "h1": ["--data", "h1_chains", "--data-kwargs", json.dumps({"size": 40})],
    "cog_drift": ["--steps", "3", "--data-kwargs", json.dumps({"size": 6})],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lppo_train_runs_each_curriculum(name, tiny_dir, tmp_path):
    """Bug caught: a curriculum that cannot be trained from the CLI (signal not built,
    options the env refuses, a budget not applied, state that does not checkpoint)."""
    run = tmp_path / "run"
    argv = ["train", "--strategy", name, "--model", str(tiny_dir), "--run-dir", str(run),
            "--steps", "1", "--batch-size", "3", "--group-size", "2", "--max-new-tokens", "12",
            "--eval-size", "0", "--save-every", "1", "--no-progress",
            "--data-kwargs", json.dumps({"size": 30}), *CASES[name]]
    assert main(argv) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "rollout/pass_rate" in r or "rollout/reward_mean" in r]
    assert train, rows
    if name == "length_curriculum":
        assert train[-1]["sampler/token_budget"] == 8
        assert train[-1]["rollout/response_len_mean"] <= 8
    if name == "h1":
        assert train[-1]["sampler/chain_depth"] == 1
    if name == "clpo":  # the random policy fails everything: hard samples get simplified
        assert max(r["sampler/clpo_simplify_frac"] for r in train) > 0
    if name == "cog_drift":  # ... and hard samples are posed as multiple choice
        assert max(r["sampler/format_mcq_frac"] for r in train) > 0
    ckpts = list((run / "checkpoints").glob("*/sampler.npz"))
    assert ckpts


def test_lppo_compare_runs_the_curricula(tiny_dir, tmp_path, capsys):
    """Bug caught: `lppo compare` preflighting a curriculum without building its signal."""
    out = tmp_path / "cmp"
    argv = ["compare", "--strategies", "pcl,adcl,gain_rl,clpo,length_curriculum,cog_drift,h1",
            "--learners", "grpo", "--seeds", "0", "--out", str(out), "--threshold", "0.0",
            "--in-process", "--model", str(tiny_dir), "--steps", "1", "--batch-size", "2",
            "--group-size", "2", "--max-new-tokens", "8", "--eval-size", "2",
            "--eval-every", "1", "--save-every", "1", "--data", "h1_chains",
            "--data-kwargs", json.dumps({"size": 24}), "--no-progress"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] == report["runs"] == 7 and report["failed"] == []


@pytest.mark.parametrize("name", ["pcl", "adcl", "gain_rl"])
def test_signal_curricula_resume_exactly(name, tiny_dir, tmp_path):
    """Bug caught: a model signal whose state is not checkpointed (value-head statistics,
    scores, order) or that depends on a cache a resumed run does not have."""
    from curricula_stubs import stub_signals

    from agents.checkpoint import latest_checkpoint
    from lppo_sampling import make_strategy

    def run(path: Path, steps: int) -> None:
        argv = ["train", "--strategy", name, "--model", str(tiny_dir), "--run-dir", str(path),
                "--steps", str(steps), "--batch-size", "3", "--group-size", "2",
                "--max-new-tokens", "8", "--eval-size", "0", "--save-every", "1",
                "--no-progress", "--data-kwargs", json.dumps({"size": 12})]
        assert main(argv) == 0

    run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    run(tmp_path / "b", 2)  # resumes from step 1

    def checksum(path: Path) -> str:
        s = make_strategy(name, group_size=2, **stub_signals(name))
        s.load(latest_checkpoint(path / "checkpoints") / "sampler.npz")
        return s.state_checksum()

    assert checksum(tmp_path / "a") == checksum(tmp_path / "b")


def test_cog_drift_refuses_data_without_exact_variants(tiny_dir, tmp_path, capsys):
    """Bug caught: a format curriculum crashing at its first MCQ of a fractional answer."""
    data = tmp_path / "d.jsonl"
    rows = [{"id": f"q{i}", "question": f"Half of {i}?", "answer": f"{i}/2"} for i in range(1, 9)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    argv = ["train", "--strategy", "cog_drift", "--model", str(tiny_dir), "--run-dir",
            str(tmp_path / "r"), "--steps", "1", "--eval-size", "0", "--data", str(data),
            "--data-kwargs", "{}", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cog_drift" in err and "needs an integer answer" in err and "Traceback" not in err


def test_h1_refuses_data_without_chain_depths(tiny_dir, tmp_path, capsys):
    """Bug caught: h1 on plain problems failing with a traceback at its first select."""
    argv = ["train", "--strategy", "h1", "--model", str(tiny_dir), "--run-dir",
            str(tmp_path / "r"), "--steps", "1", "--eval-size", "0", "--no-progress",
            "--data-kwargs", json.dumps({"size": 12})]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "h1" in err and "chain depth" in err and "Traceback" not in err
    from agents.config import ConfigError, TrainConfig
    from agents.trainer import Trainer

    cfg = TrainConfig(strategy="h1", model=str(tiny_dir), run_dir=str(tmp_path / "r2"),
                      steps=1, eval_size=0, progress=False, data_kwargs={"size": 12})
    with pytest.raises(ConfigError, match="h1.*chain depth"):
        Trainer(cfg)  # refused while building, before any step
