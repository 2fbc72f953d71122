"""Estimators, KL estimators, aggregation and losses against hand-computed values and loops."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from agents import core_algos as ca


def _outcome(scores, lengths, T=6, start=1):
    """Token-level rewards with the score on the last response token; responses start at `start`."""
    B = len(scores)
    mask = torch.zeros(B, T)
    for i, n in enumerate(lengths):
        mask[i, start : start + n] = 1.0
    rewards = ca.compute_token_level_rewards(torch.tensor(scores, dtype=torch.float32), mask)
    return rewards, mask


# ----------------------------------------------------------------------------- registry


def test_registry_has_verl_names():
    assert {"grpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "gae"} <= set(
        ca.ADV_ESTIMATOR_REGISTRY
    )
    assert ca.get_adv_estimator_fn("grpo") is ca.compute_grpo_outcome_advantage
    assert ca.get_policy_loss_fn("vanilla") is ca.compute_policy_loss_vanilla


def test_registry_refuses_a_different_function_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):

        @ca.register_adv_est("grpo")
        def other(token_level_rewards, response_mask, **kw):
            return token_level_rewards, token_level_rewards

    # the same function again is accepted (module reload)
    ca.register_adv_est("grpo")(ca.compute_grpo_outcome_advantage)
    assert ca.get_adv_estimator_fn("grpo") is ca.compute_grpo_outcome_advantage


def test_registry_accepts_a_new_estimator_and_miss_suggests():
    @ca.register_adv_est("test_only_constant")
    def constant(token_level_rewards, response_mask, **kw):
        return response_mask, response_mask

    try:
        assert ca.get_adv_estimator_fn("test_only_constant") is constant
    finally:
        del ca.ADV_ESTIMATOR_REGISTRY["test_only_constant"]
    with pytest.raises(ValueError, match=re.escape("got 'rlo'. Did you mean 'rloo'?")):
        ca.get_adv_estimator_fn("rlo")
    with pytest.raises(ValueError, match="expected a policy loss name in"):
        ca.get_policy_loss_fn("nope")


def test_group_estimators_require_index_and_gae_requires_values():
    rewards, mask = _outcome([1.0, 0.0], [2, 2])
    for name in ("grpo", "rloo", "reinforce_plus_plus_baseline"):
        with pytest.raises(ValueError, match="expected `index`"):
            ca.get_adv_estimator_fn(name)(rewards, mask)
    with pytest.raises(ValueError, match="expected `values`"):
        ca.get_adv_estimator_fn("gae")(rewards, mask)
    with pytest.raises(ValueError, match="expected index of length 2"):
        ca.get_adv_estimator_fn("grpo")(rewards, mask, index=[0])


# ----------------------------------------------------------------------------- hand values


def test_token_level_rewards_on_last_token_and_kl():
    scores = torch.tensor([1.0, 2.0, 3.0])
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.float32)
    r = ca.compute_token_level_rewards(scores, mask)
    assert torch.equal(r, torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 2.0], [0, 0, 0, 0]]))
    kl = torch.full((3, 4), 0.5)
    r = ca.compute_token_level_rewards(scores, mask, kl=kl, kl_coef=0.1)
    assert torch.allclose(r[0], torch.tensor([0, -0.05, 0.95, 0]))
    assert torch.allclose(r[1], torch.tensor([0, 0, -0.05, 1.95]))


def test_grpo_hand_values():
    # group a: scores 1, 0, 0 -> mean 1/3, unbiased std sqrt(1/3)
    rewards, mask = _outcome([1.0, 0.0, 0.0, 5.0], [2, 3, 1, 2])
    adv, ret = ca.compute_grpo_outcome_advantage(rewards, mask, index=["a", "a", "a", "b"])
    std = math.sqrt(1 / 3)
    expected = torch.tensor(
        [(1 - 1 / 3) / (std + 1e-6), (-1 / 3) / (std + 1e-6), (-1 / 3) / (std + 1e-6), 5.0]
    )
    assert torch.allclose(adv.sum(-1) / mask.sum(-1), expected, atol=1e-5)
    assert torch.equal(adv * (1 - mask), torch.zeros_like(adv))  # zero off-mask
    assert torch.equal(adv, ret)
    # Dr.GRPO: no std division
    adv, _ = ca.compute_grpo_outcome_advantage(
        rewards, mask, index=[0, 0, 0, 1], norm_adv_by_std_in_grpo=False
    )
    assert torch.allclose(adv[:, 1], torch.tensor([2 / 3, -1 / 3, -1 / 3, 5.0]))


def test_grpo_all_equal_group_gives_zero():
    rewards, mask = _outcome([1.0, 1.0, 1.0], [1, 2, 3])
    adv, _ = ca.compute_grpo_outcome_advantage(rewards, mask, index=[7, 7, 7])
    assert torch.equal(adv, torch.zeros_like(adv))


def test_rloo_hand_values():
    rewards, mask = _outcome([1.0, 0.0, 0.0, 2.0], [1, 1, 1, 1])
    adv, _ = ca.compute_rloo_outcome_advantage(rewards, mask, index=[0, 0, 0, 1])
    # leave-one-out baselines: 0, 0.5, 0.5; singleton: no baseline
    assert torch.allclose(adv[:, 1], torch.tensor([1.0, -0.5, -0.5, 2.0]))


def test_reinforce_plus_plus_hand_values():
    T = 3
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = ca.compute_reinforce_plus_plus_outcome_advantage(rewards, mask, gamma=0.5)
    assert torch.allclose(ret, torch.tensor([[0.25, 0.5, 1.0], [1.0, 2.0, 0.0]]))
    vals = torch.tensor([0.25, 0.5, 1.0, 1.0, 2.0])
    expected = (vals - vals.mean()) / torch.sqrt(vals.var(unbiased=True) + 1e-8)
    assert torch.allclose(adv[mask > 0], expected, atol=1e-6)
    assert adv[1, 2] == 0 and T == 3


def test_reinforce_plus_plus_baseline_hand_values():
    rewards, mask = _outcome([1.0, 0.0, 3.0, 1.0], [1, 2, 1, 1])
    adv, _ = ca.compute_reinforce_plus_plus_baseline_outcome_advantage(
        rewards, mask, index=[0, 0, 1, 1]
    )
    centred = torch.tensor([0.5, -0.5, -0.5, 1.0, -1.0])  # per token: row0 x1, row1 x2, ...
    expected = (centred - centred.mean()) / torch.sqrt(centred.var(unbiased=True) + 1e-8)
    assert torch.allclose(adv[mask > 0], expected, atol=1e-6)


def test_gae_hand_values_with_prompt_and_padding_skipped():
    # one row: prompt at t=0, response t=1..2, padding t=3
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[9.0, 0.5, 0.8, 9.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    gamma, lam = 0.9, 0.5
    adv, ret = ca.compute_gae_advantage_return(rewards, mask, values=values, gamma=gamma, lam=lam)
    d2 = 1.0 + gamma * 0.0 - 0.8
    d1 = 0.0 + gamma * 0.8 - 0.5
    a2, a1 = d2, d1 + gamma * lam * d2
    assert torch.allclose(ret, torch.tensor([[0.0, a1 + 0.5, a2 + 0.8, 0.0]]))
    raw = torch.tensor([a1, a2])
    expected = (raw - raw.mean()) / torch.sqrt(raw.var(unbiased=True) + 1e-8)
    assert torch.allclose(adv[mask > 0], expected, atol=1e-6)
    assert adv[0, 0] == 0 and adv[0, 3] == 0


# ----------------------------------------------------------------------------- loops


def _loop_grpo(scores, index, norm, eps=1e-6):
    out = np.zeros(len(scores))
    for g in set(index):
        rows = [i for i, x in enumerate(index) if x == g]
        s = np.array([scores[i] for i in rows])
        mean, std = (0.0, 1.0) if len(rows) == 1 else (s.mean(), s.std(ddof=1))
        for i in rows:
            out[i] = (scores[i] - mean) / (std + eps) if norm else scores[i] - mean
    return out


def _loop_rloo(scores, index):
    out = np.zeros(len(scores))
    for i, g in enumerate(index):
        others = [scores[j] for j, x in enumerate(index) if x == g and j != i]
        out[i] = scores[i] - (np.mean(others) if others else 0.0)
    return out


def _loop_gae(rewards, values, mask, gamma, lam):
    B, T = rewards.shape
    adv = np.zeros((B, T))
    for b in range(B):
        pos = [t for t in range(T) if mask[b, t] > 0]
        last = 0.0
        for k in reversed(range(len(pos))):
            t = pos[k]
            nv = values[b, pos[k + 1]] if k + 1 < len(pos) else 0.0
            delta = rewards[b, t] + gamma * nv - values[b, t]
            last = delta + gamma * lam * last
            adv[b, t] = last
    return adv


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("norm", [True, False])
def test_grpo_and_rloo_match_loops(seed, norm):
    rng = np.random.default_rng(seed)
    B = int(rng.integers(2, 30))
    index = rng.integers(0, max(1, B // 3), size=B).tolist()
    scores = rng.integers(0, 2, size=B).astype(np.float64) + rng.normal(0, 0.1, size=B)
    lengths = rng.integers(1, 5, size=B).tolist()
    rewards, mask = _outcome(scores.tolist(), lengths, T=8, start=2)
    rewards, mask = rewards.double(), mask.double()
    adv, _ = ca.compute_grpo_outcome_advantage(
        rewards, mask, index=index, norm_adv_by_std_in_grpo=norm
    )
    assert np.allclose(adv[:, 2].numpy(), _loop_grpo(scores, index, norm), atol=1e-6)
    adv, _ = ca.compute_rloo_outcome_advantage(rewards, mask, index=np.array(index))
    assert np.allclose(adv[:, 2].numpy(), _loop_rloo(scores, index), atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_gae_matches_loop(seed):
    g = torch.Generator().manual_seed(seed)
    B, T = 4, 9
    mask = (torch.rand(B, T, generator=g) > 0.3).double()
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64) * mask
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    adv, ret = ca.compute_gae_advantage_return(rewards, mask, values=values, gamma=0.95, lam=0.9)
    raw = _loop_gae(rewards.numpy(), values.numpy(), mask.numpy(), 0.95, 0.9)
    assert np.allclose(ret.numpy(), (raw + values.numpy()) * mask.numpy(), atol=1e-9)
    m = mask.numpy() > 0
    whitened = (raw[m] - raw[m].mean()) / np.sqrt(raw[m].var(ddof=1) + 1e-8)
    assert np.allclose(adv.numpy()[m], whitened, atol=1e-9)


# ----------------------------------------------------------------------------- KL, agg


def test_kl_estimators_hand_values():
    lp = torch.tensor([math.log(0.5)])
    ref = torch.tensor([math.log(0.25)])
    k1 = math.log(2.0)
    assert torch.allclose(ca.kl_penalty(lp, ref, "k1"), torch.tensor([k1]))
    assert torch.allclose(ca.kl_penalty(lp, ref, "kl"), torch.tensor([k1]))
    assert torch.allclose(ca.kl_penalty(ref, lp, "abs"), torch.tensor([k1]))
    assert torch.allclose(ca.kl_penalty(lp, ref, "k2"), torch.tensor([0.5 * k1**2]))
    assert torch.allclose(ca.kl_penalty(lp, ref, "mse"), torch.tensor([0.5 * k1**2]))
    # k3: r = ref/pi = 0.5 -> 0.5 - log 0.5 - 1
    assert torch.allclose(ca.kl_penalty(lp, ref, "k3"), torch.tensor([0.5 - math.log(0.5) - 1]))
    assert torch.allclose(ca.kl_penalty(lp, ref, "low_var_kl"), ca.kl_penalty(lp, ref, "k3"))
    with pytest.raises(ValueError, match=re.escape("got 'low_var'. Did you mean 'low_var_kl'?")):
        ca.kl_penalty(lp, ref, "low_var")


def test_k3_is_unbiased_for_kl():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.3, 0.3, 0.4])
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    true_kl = float((p * (p / q).log()).sum())
    for name in ("k1", "k3"):
        est = ca.kl_penalty(p.log()[x], q.log()[x], name).mean()
        assert abs(float(est) - true_kl) < 0.01, name


def test_agg_loss_modes_hand_values():
    loss = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert torch.isclose(ca.agg_loss(loss, mask, "token-mean"), torch.tensor(10 / 4))
    assert torch.isclose(ca.agg_loss(loss, mask, "seq-mean-token-sum"), torch.tensor((6 + 4) / 2))
    assert torch.isclose(ca.agg_loss(loss, mask, "seq-mean-token-mean"), torch.tensor((2 + 4) / 2))
    assert torch.isclose(
        ca.agg_loss(loss, mask, "seq-mean-token-sum-norm"), torch.tensor((6 / 4 + 4 / 4) / 2)
    )
    assert torch.isclose(
        ca.agg_loss(loss, mask, "seq-mean-token-sum-norm", norm_constant=8),
        torch.tensor((6 + 4) / 8 / 2),
    )
    with pytest.raises(ValueError, match=re.escape("got 'token_mean'. Did you mean 'token-mean'?")):
        ca.agg_loss(loss, mask, "token_mean")


@pytest.mark.parametrize("mode", ca.LOSS_AGG_MODES)
def test_agg_loss_micro_batches_sum_to_full_batch(mode):
    g = torch.Generator().manual_seed(1)
    loss = torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.4).float()
    mask[:, 0] = 1
    full = ca.agg_loss(loss, mask, mode, norm_constant=5)
    parts = sum(
        ca.agg_loss(loss[s], mask[s], mode, num_tokens=mask.sum(), num_seqs=6, norm_constant=5)
        for s in (slice(0, 2), slice(2, 3), slice(3, 6))
    )
    assert torch.isclose(full, parts, atol=1e-6)


# ----------------------------------------------------------------------------- losses


def test_ppo_clip_hand_values():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.ones(1, 4)
    loss, m = ca.compute_policy_loss_vanilla(
        old, new, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.28
    )
    # token losses: max(-1.5, -1.28) = -1.28; max(-0.5, -0.8) = -0.5;
    #               max(1.5, 1.28) = 1.5;     max(0.5, 0.8) = 0.8
    assert torch.isclose(loss, torch.tensor((-1.28 - 0.5 + 1.5 + 0.8) / 4))
    assert m["actor/pg_clipfrac"] == pytest.approx(0.5)  # tokens 0 and 3 are clipped


def test_ppo_dual_clip_bounds_negative_advantages():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[10.0, 10.0]]))
    adv = torch.tensor([[-1.0, 1.0]])
    mask = torch.ones(1, 2)
    loss, m = ca.compute_policy_loss_vanilla(old, new, adv, mask, clip_ratio_c=3.0)
    # token 0: min(max(10, 1.2), 3) = 3; token 1: max(-10, -1.2) = -1.2
    assert torch.isclose(loss, torch.tensor((3.0 - 1.2) / 2))
    assert m["actor/pg_clipfrac_lower"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="expected clip_ratio_c > 1"):
        ca.compute_policy_loss_vanilla(old, new, adv, mask, clip_ratio_c=0.5)


def test_ppo_loss_gradient_on_policy_is_minus_advantage_times_score():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    tokens = torch.randint(0, 5, (2, 3))
    lp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, m = ca.compute_policy_loss_vanilla(lp.detach(), lp, adv, mask)
    (g,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (g_ref,) = torch.autograd.grad(-(adv * lp * mask).sum() / mask.sum(), logits)
    assert torch.allclose(g, g_ref, atol=1e-6)
    assert m["actor/ppo_kl"] == 0 and m["actor/pg_clipfrac"] == 0
    assert torch.equal(g[0, 2], torch.zeros(5))  # masked position: exactly no gradient


def test_value_loss_hand_values():
    v = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    ret = torch.tensor([[0.5, 1.0]])
    mask = torch.ones(1, 2)
    loss, m = ca.compute_value_loss(v, old, ret, mask, cliprange_value=0.2)
    # token0: max((1-0.5)^2, (0.2-0.5)^2) = 0.25 ; token1: max(1, 1) = 1
    assert torch.isclose(loss, torch.tensor(0.5 * (0.25 + 1.0) / 2))
    assert ca.explained_variance(ret, ret, mask) == pytest.approx(1.0)
