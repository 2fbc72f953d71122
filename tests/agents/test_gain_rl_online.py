"""GAIN-RL through `lppo train`: both angle signals are computed on the real policy.

The per-prompt score (angle concentration at the last `mlp.up_proj` input) is computed
once, with the initial policy, at the first select, and kept (the paper scores before
training and never re-scores); the online angle term of μ's update is the batch's mean
angle concentration with the policy at that step (`agents.signals.BatchAngle`). The
tiny random Llama stands in for the policy; the checkpointed sampler state is compared
with the signals recomputed on the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.cli import main
from agents.policy import load_policy
from agents.signals import AngleScorer, BatchAngle, build_signals
from lppo_env import load_problems
from lppo_sampling import make_strategy
from lppo_sampling.strategies.gain import gain_mu_step

SIZE = 12
PACE = (500.0, 2.0, 0.0, 0.0, 1000.0, 2.0)  # n_adj, alpha, acc_beta (set below), adj_min/max, div


def saved_strategy(ckpt: Path):
    s = make_strategy("gain_rl", group_size=2, acc_beta=0.0,
                      **build_signals("gain_rl", lambda: None, {}))
    s.load(ckpt / "sampler.npz")
    return s


@pytest.mark.slow
def test_lppo_train_gain_rl_scores_and_paces_with_the_policy(tiny_dir, tmp_path):
    """Bug caught: scores from a stub or a re-scored (trained) model, scores recomputed
    every step, or a centre μ that never moves (no online angle term: with rewards in
    [0, 1] the accuracy term alone is never positive, so μ stayed at 0)."""
    run = tmp_path / "run"
    argv = ["train", "--strategy", "gain_rl", "--model", str(tiny_dir), "--run-dir", str(run),
            "--steps", "2", "--batch-size", "3", "--group-size", "2", "--max-new-tokens", "8",
            "--eval-size", "0", "--save-every", "1", "--keep-checkpoints", "10", "--lr", "1.0",
            "--no-progress", "--data-kwargs", json.dumps({"size": SIZE}),
            # β = 0: the accuracy term is >= 0, so the (small) angle term of a random tiny
            # model shows in μ instead of being clipped away at adj_min = 0
            "--strategy-kwargs", json.dumps({"acc_beta": 0.0})]
    assert main(argv) == 0
    s1, s2 = (saved_strategy(run / "checkpoints" / f"step-{i:06d}") for i in (1, 2))
    problems = {p.id: p for p in load_problems("default", size=SIZE)}
    initial = load_policy(str(tiny_dir))
    keys = s1.stats.index.keys_of(np.arange(len(s1)))
    assert len(keys) == SIZE
    want = AngleScorer(lambda: initial, problems)(keys)
    np.testing.assert_allclose(s1.selector.scores, want, atol=1e-6)   # the initial policy's
    assert np.ptp(want) > 0                                           # a real, varying score
    np.testing.assert_array_equal(s2.selector.scores, s1.selector.scores)  # scored once
    # μ after step 1: accuracy and the batch's angle on the policy of that step's observe
    rows = np.flatnonzero(s1.stats.seen())
    acc = s1.stats["reward_sum"][rows].sum() / s1.stats["n_rollouts"][rows].sum()
    angle = BatchAngle(lambda: initial, problems)(s1.stats.index.keys_of(rows))
    mu = gain_mu_step(acc, angle, *PACE)
    assert s1.selector.mu == pytest.approx(mu, rel=1e-6, abs=1e-6)
    assert s1.selector.mu != pytest.approx(gain_mu_step(acc, 0.0, *PACE))  # angle term counted
    assert s2.selector.mu > s1.selector.mu > 0                          # the centre moves
    # step 2's angle is taken with the policy of step 2 (the checkpoint after step 1)
    trained = load_policy(str(run / "checkpoints" / "step-000001" / "model"))
    grew = s2.stats["n_rollouts"] - s1.stats["n_rollouts"]
    rows2 = np.flatnonzero(grew > 0)
    acc2 = (s2.stats["reward_sum"] - s1.stats["reward_sum"])[rows2].sum() / grew[rows2].sum()
    a2 = BatchAngle(lambda: trained, problems)(s2.stats.index.keys_of(rows2))
    # the update changed the policy (AdamW's decay at lr 1, even with all rewards 0), so
    # an angle taken on the initial policy would not match
    assert a2 != pytest.approx(BatchAngle(lambda: initial, problems)(
        s2.stats.index.keys_of(rows2)), rel=1e-6, abs=1e-6)
    assert s2.selector.mu - s1.selector.mu == pytest.approx(
        gain_mu_step(acc2, a2, *PACE), rel=1e-6, abs=1e-6)
