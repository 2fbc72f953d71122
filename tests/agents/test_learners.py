"""Learners on a tiny random Llama: masking, weights, accumulation, learning direction."""

from __future__ import annotations

import math
import re

import pytest
import torch

from agents.batch import TrainBatch
from agents.learners import (
    LEARNER_REGISTRY,
    GRPOConfig,
    GRPOLearner,
    Learner,
    PPOConfig,
    get_learner_class,
    make_learner,
    register_learner,
    sequence_logprobs,
    token_logprobs,
)
from agents.learners.logprobs import no_grad_token_logprobs
from agents.policy import Policy, encode_chat
from agents.rollout.base import Rollout
from tests.agents.conftest import make_tiny_model

LEARNERS = ["grpo", "ppo", "reinforce_plus_plus"]


def make_batch(policy, weights=None, rewards=(1.0, 0.0, 0.0, 1.0)):
    """Two prompts x two completions; the second prompt is guided by an expert prefix."""
    tok = policy.tokenizer
    chats = [
        ([{"role": "user", "content": "2+3?"}], ""),
        ([{"role": "user", "content": "7*6?"}], "7*6 ="),
    ]
    completions = [["5", "six or so"], [" 42", "forty-one"]]
    rollouts = []
    for i, (messages, prefix) in enumerate(chats):
        prompt_ids, prefix_ids = encode_chat(tok, messages, prefix)
        for text in completions[i]:
            response_ids = tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
            rollouts.append(
                Rollout(
                    prompt_ids=prompt_ids,
                    prefix_ids=prefix_ids,
                    response_ids=response_ids,
                    response_logprobs=[0.0] * len(response_ids),
                    text=text,
                    prefix=prefix,
                    request_index=i,
                )
            )
    return TrainBatch.from_rollouts(
        rollouts, list(rewards), weights=weights, pad_token_id=tok.pad_token_id
    )


def flat_grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def grad_of_update(learner, batch):
    """The gradient the learner applied (lr=0 keeps weights fixed; no clipping)."""
    learner.update(batch)
    return flat_grad(learner.model).clone()


def probe(name, policy, **cfg):
    base = {"lr": 0.0, "max_grad_norm": None, "kl_coef": 0.0, "weight_decay": 0.0}
    if name == "ppo":
        base["critic_lr"] = 0.0
    return make_learner(name, policy, **{**base, **cfg})


# ----------------------------------------------------------------------------- registry


def test_registry_and_config_validation(tiny_policy):
    assert set(LEARNERS) <= set(LEARNER_REGISTRY)
    learner = make_learner("grpo", tiny_policy, lr=1e-3)
    assert isinstance(learner, Learner) and learner.config.lr == 1e-3
    assert get_learner_class("reinforce_plus_plus").config_class().use_kl_in_reward
    with pytest.raises(ValueError, match=re.escape("got 'gpro'. Did you mean 'grpo'?")):
        make_learner("gpro", tiny_policy)
    with pytest.raises(
        ValueError, match=re.escape("got 'clip_ratio'. Did you mean 'clip_ratio_c'?")
    ):
        make_learner("grpo", tiny_policy, clip_ratio=0.2)
    with pytest.raises(ValueError, match=re.escape("GRPOConfig expects epochs >= 1, got 0")):
        GRPOConfig(epochs=0)
    with pytest.raises(ValueError, match=re.escape("PPOConfig expects vf_coef >= 0, got -1")):
        PPOConfig(vf_coef=-1)
    with pytest.raises(ValueError, match="expected a advantage estimator name"):
        GRPOConfig(adv_estimator="nope")
    with pytest.raises(ValueError, match="expected a free learner name"):
        register_learner("grpo")(type("Other", (), {}))
    with pytest.raises(ValueError, match="expected num_minibatches <= batch size, got 5"):
        make_learner("grpo", tiny_policy, num_minibatches=5).update(make_batch(tiny_policy))


def test_reference_model_only_when_kl_is_used(tiny_policy):
    assert make_learner("grpo", tiny_policy).ref_model is None
    learner = make_learner("grpo", tiny_policy, kl_coef=0.01)
    assert learner.ref_model is not None and learner.ref_model is not tiny_policy.model
    assert not any(p.requires_grad for p in learner.ref_model.parameters())


# ----------------------------------------------------------------------------- updates


@pytest.mark.parametrize("name", LEARNERS)
def test_update_logs_metrics_and_changes_every_trained_parameter(tiny_policy, name):
    before = {n: p.detach().clone() for n, p in tiny_policy.model.named_parameters()}
    learner = make_learner(name, tiny_policy, lr=1e-3, kl_coef=0.01, num_minibatches=2, epochs=2)
    metrics = learner.update(make_batch(tiny_policy))
    for key in (
        "loss/policy",
        "loss/total",
        "actor/clipfrac",
        "actor/approx_kl",
        "actor/grad_norm",
        "actor/entropy",
        "actor/kl_ref",
        "advantages/mean",
    ):
        assert key in metrics and metrics[key] == metrics[key], key  # present, not NaN
    # batch statistics (rewards, lengths, weights) are the trainer's, logged once from its record
    assert not any(k.startswith(("rollout/", "weights/", "update/")) for k in metrics)
    assert metrics["perf/optimizer_steps"] == 4
    if name == "ppo":
        assert {"loss/value", "critic/explained_var", "critic/vf_clipfrac"} <= set(metrics)
    changed = [n for n, p in tiny_policy.model.named_parameters() if not torch.equal(p, before[n])]
    assert set(changed) == set(before), set(before) - set(changed)


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("use_kl_in_reward", [False, True])
def test_kl_is_logged_always_and_a_loss_term_only_outside_the_reward(
    tiny_policy, tiny_tokenizer, name, use_kl_in_reward
):
    ref = make_tiny_model(len(tiny_tokenizer), seed=1).requires_grad_(False)
    cls = get_learner_class(name)
    config = cls.config_class(kl_coef=0.5, use_kl_in_reward=use_kl_in_reward, lr=0.0)
    metrics = cls(tiny_policy, config, ref_model=ref).update(make_batch(tiny_policy))
    assert metrics["actor/kl_ref"] != 0  # a different reference model
    assert ("loss/kl" in metrics) == (not use_kl_in_reward)
    if not use_kl_in_reward:
        assert metrics["loss/kl"] != 0
    assert metrics["advantages/min"] <= metrics["advantages/mean"] <= metrics["advantages/max"]
    assert metrics["actor/lr"] == 0.0 and metrics["perf/micro_batches"] >= 1


@pytest.mark.parametrize("name", LEARNERS)
def test_prompt_and_prefix_positions_get_exactly_zero_gradient(tiny_policy, tiny_tokenizer, name):
    """The loss gradient w.r.t. the LM head's input is exactly 0 wherever the next token is
    not a response token (the logits there, computed or not, cannot move the loss).

    This includes the KL term: a different reference model makes its gradient non-zero.
    """
    batch = make_batch(tiny_policy)
    ref = make_tiny_model(len(tiny_tokenizer), seed=1).requires_grad_(False)
    use_kl_in_reward = name == "reinforce_plus_plus"
    learner = get_learner_class(name)(
        tiny_policy,
        get_learner_class(name).config_class(
            kl_coef=0.5, use_kl_in_reward=use_kl_in_reward, max_grad_norm=None
        ),
        ref_model=ref,
    )
    captured = []

    def on_trunk(module, args, kwargs, output):
        hidden = output.last_hidden_state  # what the LM head turns into logits
        if hidden.requires_grad:
            ids = kwargs["input_ids"]
            hidden.register_hook(lambda g: captured.append((ids, g)))

    trunk = tiny_policy.model.get_decoder()
    handle = trunk.register_forward_hook(on_trunk, with_kwargs=True)
    try:
        learner.update(batch)
    finally:
        handle.remove()
    assert captured
    rows_checked = 0
    for ids, grad in captured:
        for r in range(ids.shape[0]):
            (match,) = [
                i
                for i in range(len(batch))
                if torch.equal(batch.input_ids[i, : ids.shape[1]], ids[r])
            ]
            trained = batch.response_mask[match, 1 : ids.shape[1]] > 0  # token t+1 predicted at t
            g = grad[r, :-1].abs().sum(-1)
            assert torch.all(g[~trained] == 0), f"row {match}: gradient on a prompt/prefix position"
            assert torch.all(g[trained] > 0)
            assert torch.all(grad[r, -1] == 0)
            rows_checked += 1
    assert rows_checked == len(batch)
    assert batch.prefix_mask.sum() > 0  # the batch does contain prefix tokens


@pytest.mark.parametrize("name", ["grpo", "ppo"])
def test_gradient_is_linear_in_per_sample_weights(tiny_policy, name):
    learner = probe(name, tiny_policy)
    per_sample = [
        grad_of_update(learner, make_batch(tiny_policy, weights=torch.eye(4)[i])) for i in range(4)
    ]
    if name == "ppo":  # the value loss does not depend on weights: compare policy parts only
        zero = grad_of_update(learner, make_batch(tiny_policy, weights=torch.zeros(4)))
        per_sample = [g - zero for g in per_sample]
    else:
        zero = torch.zeros_like(per_sample[0])
    w = torch.tensor([0.5, 1.5, 0.0, 2.0])
    combined = grad_of_update(learner, make_batch(tiny_policy, weights=w))
    expected = zero + sum(wi * gi for wi, gi in zip(w, per_sample, strict=True))
    assert torch.allclose(combined, expected, atol=1e-6)
    doubled = grad_of_update(learner, make_batch(tiny_policy, weights=2 * torch.eye(4)[1]))
    assert torch.allclose(doubled - zero, 2 * per_sample[1], atol=1e-6)


def test_unit_weights_reproduce_the_unweighted_grpo_gradient(tiny_policy):
    """Weights of 1 give exactly the textbook on-policy GRPO gradient -sum(A * grad log pi) / N."""
    batch = make_batch(tiny_policy, weights=torch.ones(4))
    unweighted = make_batch(tiny_policy)
    learner = probe("grpo", tiny_policy)
    g_weighted = grad_of_update(learner, batch)
    assert torch.equal(g_weighted, grad_of_update(learner, unweighted))

    model = tiny_policy.model
    model.zero_grad(set_to_none=True)
    lp, _, _ = token_logprobs(model, batch.input_ids, batch.attention_mask)
    r = batch.rewards
    adv = torch.zeros(4)
    for g in (0, 1):
        rows = batch.index == g
        adv[rows] = (r[rows] - r[rows].mean()) / (r[rows].std() + 1e-6)
    loss = -(adv[:, None] * lp * batch.response_mask).sum() / batch.response_mask.sum()
    loss.backward()
    assert torch.allclose(g_weighted, flat_grad(model), atol=1e-6)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_token_budget_accumulation_equals_one_big_batch(tiny_policy, mode):
    batch = make_batch(tiny_policy)
    full = grad_of_update(probe("grpo", tiny_policy, loss_agg_mode=mode, kl_coef=0.1), batch)
    learner = probe("grpo", tiny_policy, loss_agg_mode=mode, kl_coef=0.1, token_budget=40)
    micro = grad_of_update(learner, batch)
    assert learner.update(batch)["perf/micro_batches"] > 1
    assert torch.allclose(full, micro, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradient(tiny_policy):
    batch = make_batch(tiny_policy)
    plain = grad_of_update(probe("grpo", tiny_policy), batch)
    ckpt = grad_of_update(probe("grpo", tiny_policy, gradient_checkpointing=True), batch)
    assert torch.allclose(plain, ckpt, atol=1e-6)


def test_sampler_logprobs_are_used_only_when_asked(tiny_policy):
    batch = make_batch(tiny_policy)  # rollout logprobs are 0: far from the model's
    recomputed = probe("grpo", tiny_policy).update(batch)
    trusted = probe("grpo", tiny_policy, recompute_old_logprobs=False).update(batch)
    assert recomputed["actor/ppo_kl"] == pytest.approx(0.0, abs=1e-6)
    assert recomputed["actor/clipfrac"] == 0.0
    assert trusted["actor/clipfrac"] > 0.0


@pytest.mark.parametrize("name", LEARNERS)
def test_updates_raise_rewarded_and_lower_penalised_completions(tiny_policy, name):
    batch = make_batch(tiny_policy)
    model = tiny_policy.model
    with torch.no_grad():
        before = sequence_logprobs(model.eval(), batch)
    learner = (
        make_learner(name, tiny_policy, lr=3e-3, kl_coef=0.0, critic_lr=1e-2)
        if name == "ppo"
        else (make_learner(name, tiny_policy, lr=3e-3, kl_coef=0.0))
    )
    for _ in range(3):
        learner.update(batch)
    with torch.no_grad():
        after = sequence_logprobs(model.eval(), batch)
    delta = after - before
    rewarded = batch.rewards > 0
    assert torch.all(delta[rewarded] > 0), delta
    assert torch.all(delta[~rewarded] < 0), delta


def test_state_dict_round_trip(tiny_policy):
    batch = make_batch(tiny_policy)
    for name in LEARNERS:
        learner = make_learner(name, tiny_policy, lr=1e-3)
        learner.update(batch)
        state = learner.state_dict()
        other = make_learner(name, tiny_policy, lr=1e-3)
        other.load_state_dict(state)
        assert torch.equal(other.generator.get_state(), learner.generator.get_state())
        assert other.optimizer.state_dict()["state"].keys() == state["optimizer"]["state"].keys()


def test_grpo_learner_rejects_a_foreign_config(tiny_policy):
    with pytest.raises(ValueError, match="expected a GRPOConfig, got PPOConfig"):
        GRPOLearner(tiny_policy, PPOConfig())


@pytest.mark.parametrize("token_budget", [None, 40])
def test_one_epoch_one_minibatch_reuses_the_first_forward_as_old_logprobs(
    tiny_policy, tiny_tokenizer, token_budget
):
    """Ratio 1 by construction: no separate no-grad pass, and the very same update."""
    twin = Policy(make_tiny_model(len(tiny_tokenizer)), tiny_tokenizer, "twin")
    fast = make_learner("grpo", tiny_policy, lr=1e-2, token_budget=token_budget)
    slow = make_learner("grpo", twin, lr=1e-2, token_budget=token_budget)
    assert fast.reuses_old_logprobs
    calls = {"fast": 0, "slow": 0}
    def count(name):
        return lambda *a: calls.__setitem__(name, calls[name] + 1)

    tiny_policy.model.get_decoder().register_forward_hook(count("fast"))  # the trunk's passes
    twin.model.get_decoder().register_forward_hook(count("slow"))
    with torch.no_grad():
        old, _ = no_grad_token_logprobs(twin.model, make_batch(twin), token_budget=token_budget)
    calls["slow"] = 0
    m_fast = fast.update(make_batch(tiny_policy))
    m_slow = _update_with_old_logprobs(slow, make_batch(twin), old)
    n_micro = m_fast["perf/micro_batches"]
    assert calls["fast"] == n_micro and calls["slow"] == n_micro  # one forward per micro-batch
    pairs = zip(tiny_policy.model.named_parameters(), twin.model.parameters(), strict=True)
    for (name, p), q in pairs:
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert m_fast["loss/policy"] == pytest.approx(m_slow["loss/policy"], abs=1e-6)


def _update_with_old_logprobs(learner, batch, old):
    """The reference path: old log-probs from a separate no-grad pass, trusted as given."""
    batch.old_logprobs = old
    learner.config.recompute_old_logprobs = False
    assert not learner.reuses_old_logprobs
    return learner.update(batch)


def test_old_logprobs_are_recomputed_when_the_ratio_can_move(tiny_policy):
    assert make_learner("grpo", tiny_policy).reuses_old_logprobs
    assert not make_learner("grpo", tiny_policy, epochs=2).reuses_old_logprobs
    assert not make_learner("grpo", tiny_policy, num_minibatches=2).reuses_old_logprobs
    assert not make_learner("grpo", tiny_policy, recompute_old_logprobs=False).reuses_old_logprobs
    assert not make_learner("reinforce_plus_plus", tiny_policy).reuses_old_logprobs  # KL reward


def test_logprobs_come_in_chunks_at_the_wanted_positions_only(tiny_policy, monkeypatch):
    """No (B, L, V) logits: the LM head sees <= LOGIT_CHUNK_TOKENS positions at a time, only
    response positions, and the result equals the plain full-logits computation."""
    from agents.learners import logprobs as lp_module

    monkeypatch.setattr(lp_module, "LOGIT_CHUNK_TOKENS", 5)
    batch = make_batch(tiny_policy)
    model = tiny_policy.model
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda m, a, out: seen.append(out.shape))
    lp, _, ent = token_logprobs(model, batch.input_ids, batch.attention_mask, temperature=0.7,
                                with_entropy=True, positions=batch.response_mask)
    wanted = int(batch.response_mask[:, 1:].sum())
    assert max(s[0] for s in seen) <= 5 and sum(s[0] for s in seen) == wanted
    full, _, full_ent = lp_module._full_logits_logprobs(
        model, batch.input_ids, batch.attention_mask, 0.7, None, True
    )
    mask = batch.response_mask
    torch.testing.assert_close(lp * mask, full * mask, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent * mask, full_ent * mask, rtol=1e-5, atol=1e-5)
    assert torch.all(lp[mask == 0] == 0)
    # with gradient: each chunk's logits are recomputed in backward, the gradient is the same
    seen.clear()
    lp, _, _ = token_logprobs(model, batch.input_ids, batch.attention_mask,
                              positions=batch.response_mask)
    (lp * mask).sum().backward()
    n_chunks = -(-wanted // 5)
    assert len(seen) == 2 * n_chunks  # each chunk once forward, once recomputed in backward
    chunked = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    full, _, _ = lp_module._full_logits_logprobs(
        model, batch.input_ids, batch.attention_mask, 1.0, None, False
    )
    (full * mask).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(chunked[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


# ------------------------------------------------------- rows that carry no gradient


def _rows_through_model(model) -> list[int]:
    """Batch sizes of the forwards of the model's decoder stack (appended by a hook)."""
    seen: list[int] = []
    model.get_decoder().register_forward_hook(lambda _m, args, kwargs, _out: seen.append(
        (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]).shape[0]),
        with_kwargs=True)
    return seen


@pytest.mark.parametrize("token_budget", [None, 40])
def test_rows_without_gradient_skip_the_model_and_change_nothing_else(
    tiny_tokenizer, token_budget
):
    """Rows whose advantage is 0 everywhere add exactly 0 to the PPO-clip loss: skipping
    them leaves weights, AdamW state and losses as when every row runs, also for an update
    in which no row carries a gradient (AdamW still steps: momentum and weight decay).
    Breaks if the skip drops a row with signal, if it changes the loss normalisation (the
    whole minibatch's token count), or if the all-skipped update leaves out AdamW's step."""
    cfg = {"lr": 1e-2, "weight_decay": 0.1, "token_budget": token_budget}
    updates = [(1.0, 1.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0), (1.0, 1.0, 0.0, 0.0)]
    results = {}
    for skip in (True, False):
        policy = Policy(make_tiny_model(len(tiny_tokenizer)), tiny_tokenizer, "tiny")
        seen = _rows_through_model(policy.model)
        learner = make_learner("grpo", policy, skip_rows_without_gradient=skip, **cfg)
        metrics = [learner.update(make_batch(policy, rewards=r)) for r in updates]
        results[skip] = (policy.model, learner, metrics, sum(seen))
    (m_skip, l_skip, met_skip, rows_skip), (m_all, l_all, met_all, rows_all) = results.values()
    assert rows_skip == 2 + 0 + 0 and rows_all == 4 + 4 + 4  # (1,1|0,1): group 2 only
    assert [m["perf/rows_without_gradient"] for m in met_skip] == [2.0, 4.0, 4.0]
    for a, b in zip(m_skip.parameters(), m_all.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    s_skip, s_all = l_skip.optimizer.state_dict()["state"], l_all.optimizer.state_dict()["state"]
    for k in s_all:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(s_skip[k][name], s_all[k][name], rtol=1e-5, atol=1e-7)
    for a, b in zip(met_skip, met_all, strict=True):
        assert a["loss/policy"] == pytest.approx(b["loss/policy"], abs=1e-6)
        assert a["actor/grad_norm"] == pytest.approx(b["actor/grad_norm"], rel=1e-4)
    assert math.isnan(met_skip[1]["actor/entropy"]) and not math.isnan(met_all[1]["actor/entropy"])


def test_a_policy_loss_not_known_to_be_row_separable_runs_every_row(tiny_policy):
    from agents.core_algos import POLICY_LOSS_REGISTRY, compute_policy_loss_vanilla

    POLICY_LOSS_REGISTRY.setdefault("vanilla_copy", compute_policy_loss_vanilla)
    seen = _rows_through_model(tiny_policy.model)
    learner = make_learner("grpo", tiny_policy, policy_loss="vanilla_copy")
    learner.update(make_batch(tiny_policy, rewards=(1.0, 1.0, 1.0, 1.0)))
    assert sum(seen) == 4


def test_a_kl_loss_runs_every_row(tiny_policy):
    """With a KL loss a zero-advantage row still has a gradient (its KL term): no skip."""
    seen = _rows_through_model(tiny_policy.model)
    learner = make_learner("grpo", tiny_policy, kl_coef=0.1)
    seen.clear()  # the reference copy's forwards are not hooked; the policy's are
    learner.update(make_batch(tiny_policy, rewards=(1.0, 1.0, 1.0, 1.0)))
    assert sum(seen) >= 4
