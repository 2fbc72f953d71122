"""DPO learner: loss, pair batch, and real updates on the tiny model.

The loss is checked against hand-computed values and TRL's formula; updates must grow the
margin, give prompt tokens no gradient, and not depend on the token budget.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from agents.batch import TrainBatch
from agents.learners.base import LEARNER_REGISTRY, make_learner
from agents.learners.dpo import DPOConfig, DPOLearner, PreferenceBatch, _sequence_logps, dpo_loss
from agents.policy import Policy, encode_chat
from agents.rollout.base import Rollout
from tests.agents.conftest import make_tiny_model


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


# --------------------------------------------------------------------------- loss


def test_dpo_loss_hand_computed():
    # h = (-1 - -2) - (-1.5 - -1.5) = 1; loss = -log sigma(0.1) = log(1 + e^-0.1)
    losses, cr, rr = dpo_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.5), 0.1)
    assert losses.item() == pytest.approx(math.log1p(math.exp(-0.1)), abs=1e-6)
    assert cr.item() == pytest.approx(0.05, abs=1e-7)
    assert rr.item() == pytest.approx(-0.05, abs=1e-7)
    # policy == reference: h = 0, loss = log 2 whatever beta
    losses, cr, rr = dpo_loss(t(-3.0), t(-4.0), t(-3.0), t(-4.0), 0.5)
    assert losses.item() == pytest.approx(math.log(2), abs=1e-6)
    assert cr.item() == rr.item() == 0.0


def test_dpo_loss_label_smoothing_ipo_reference_free_hand_computed():
    args = (t(-1.0), t(-2.0), t(-1.5), t(-1.5), 0.1)
    smoothed, _, _ = dpo_loss(*args, label_smoothing=0.1)
    expected = 0.9 * math.log1p(math.exp(-0.1)) + 0.1 * math.log1p(math.exp(0.1))
    assert smoothed.item() == pytest.approx(expected, abs=1e-6)
    ipo, _, _ = dpo_loss(*args, loss_type="ipo")
    assert ipo.item() == pytest.approx((1 - 1 / 0.2) ** 2, abs=1e-5)  # (h - 1/(2 beta))^2 = 16
    free, cr, _ = dpo_loss(t(-1.0), t(-3.0), t(-9.0), t(0.0), 0.1, reference_free=True)
    assert free.item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-6)  # h = 2
    assert cr.item() == pytest.approx(-0.1, abs=1e-7)  # beta * (policy - 0)


def _trl_sigmoid(pc, pr, rc, rr, beta, ls):
    """TRL `DPOTrainer.dpo_loss`, loss_type="sigmoid", written as in its docs."""
    logits = (pc - pr) - (rc - rr)
    return -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta,ls", [(0.1, 0.0), (0.5, 0.2), (2.0, 0.0)])
def test_dpo_loss_matches_trl_formula(seed, beta, ls):
    g = torch.Generator().manual_seed(seed)
    pc, pr, rc, rr = (-20 * torch.rand(16, generator=g) for _ in range(4))
    losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=ls)
    torch.testing.assert_close(losses, _trl_sigmoid(pc, pr, rc, rr, beta, ls))
    torch.testing.assert_close(cr, beta * (pc - rc))
    torch.testing.assert_close(rj, beta * (pr - rr))


def test_dpo_loss_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr = t(-2.0).requires_grad_(), t(-2.0).requires_grad_()
    losses, _, _ = dpo_loss(pc, pr, t(-2.0), t(-2.0), 0.1)
    losses.sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descending raises chosen, lowers rejected
    assert pc.grad.item() == pytest.approx(-0.05, abs=1e-7)  # -beta * sigma(0) = -0.05


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"beta": 0.0}, "dpo_loss expects beta > 0, got 0.0"),
        ({"loss_type": "hinge"}, "dpo_loss expects loss_type in ['sigmoid', 'ipo'], got 'hinge'"),
        ({"label_smoothing": 0.5}, "dpo_loss expects label_smoothing in [0, 0.5), got 0.5"),
    ],
)
def test_dpo_loss_rejects_bad_arguments(kwargs, message):
    args = {"beta": 0.1, **kwargs}
    beta = args.pop("beta")
    with pytest.raises(ValueError, match=re.escape(message)):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), beta, **args)


def test_dpo_config_validation():
    with pytest.raises(ValueError, match=re.escape("DPOConfig expects beta > 0, got -1")):
        DPOConfig(beta=-1)
    with pytest.raises(ValueError, match=re.escape("DPOConfig expects loss_type one of")):
        DPOConfig(loss_type="kto")
    with pytest.raises(ValueError, match="Did you mean 'beta'"):
        DPOConfig.from_kwargs(betta=0.1)


# --------------------------------------------------------------------------- batch


def _rollout(tokenizer, question: str, answer: str, prefix: str = "") -> Rollout:
    prompt_ids, prefix_ids = encode_chat(tokenizer, [{"role": "user", "content": question}], prefix)
    response_ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    return Rollout(prompt_ids, prefix_ids, response_ids, [0.0] * len(response_ids), answer, prefix)


def _pairs(tokenizer, n: int = 4, prefix: str = "") -> PreferenceBatch:
    chosen = [
        _rollout(tokenizer, f"What is {i}+{i}?", f"The answer is {2 * i}.", prefix)
        for i in range(n)
    ]
    rejected = [
        _rollout(tokenizer, f"What is {i}+{i}?", f"Maybe {2 * i + 7}!!", prefix) for i in range(n)
    ]
    return PreferenceBatch.from_rollouts(chosen, rejected, pad_token_id=tokenizer.pad_token_id)


def test_preference_batch_layout(tiny_tokenizer):
    pairs = _pairs(tiny_tokenizer, 3, prefix="Let me")
    assert len(pairs) == 3 and len(pairs.batch) == 6
    assert pairs.batch.rewards.tolist() == [1, 1, 1, 0, 0, 0]
    assert pairs.batch.index.tolist() == [0, 1, 2, 0, 1, 2]
    assert pairs.weights.tolist() == [1.0, 1.0, 1.0]
    # prompt and prefix are outside the trainable mask
    assert (pairs.batch.response_mask * pairs.batch.prefix_mask).sum() == 0
    assert pairs.batch.prefix_mask.sum() == 6 * len(
        tiny_tokenizer.encode("Let me", add_special_tokens=False)
    )


def test_preference_batch_rejects_mismatched_pairs(tiny_tokenizer):
    a = _rollout(tiny_tokenizer, "What is 1+1?", "2")
    b = _rollout(tiny_tokenizer, "What is 1+2?", "3")
    with pytest.raises(ValueError, match=re.escape("expected pair 0 to share one prompt + prefix")):
        PreferenceBatch.from_rollouts([a], [b])
    with pytest.raises(ValueError, match=re.escape("got 1 chosen and 0 rejected")):
        PreferenceBatch.from_rollouts([a], [])
    with pytest.raises(ValueError, match=re.escape("expected weights of shape (1,), got (2,)")):
        PreferenceBatch.from_rollouts([a], [a], weights=[1.0, 2.0])


# --------------------------------------------------------------------------- learner


def _margin(learner: DPOLearner, pairs: PreferenceBatch) -> float:
    """Mean (pi_c - pi_r) - (ref_c - ref_r) over pairs."""
    with torch.no_grad():
        logps = _sequence_logps(learner.model, pairs.batch, temperature=1.0, average=False)
    ref = learner.reference_logps(pairs)
    P = len(pairs)
    return float(((logps[:P] - logps[P:]) - (ref[:P] - ref[P:])).mean())


def test_dpo_is_built_directly_not_from_the_rl_registry(tiny_policy):
    learner = DPOLearner(tiny_policy, DPOConfig(beta=0.2, lr=1e-4))
    assert learner.config.beta == 0.2
    assert learner.ref_model is not None and learner.ref_model is not tiny_policy.model
    assert DPOLearner.batch_type is PreferenceBatch
    assert "dpo" not in LEARNER_REGISTRY  # it cannot take the trainer's TrainBatch
    with pytest.raises(ValueError, match="expected a learner name"):
        make_learner("dpo", tiny_policy)
    free = DPOLearner(tiny_policy, DPOConfig(reference_free=True))
    assert free.ref_model is None


def test_update_rejects_a_train_batch(tiny_policy, tiny_tokenizer):
    learner = DPOLearner(tiny_policy, DPOConfig())
    batch: TrainBatch = _pairs(tiny_tokenizer, 1).batch
    with pytest.raises(ValueError, match=re.escape("expected a PreferenceBatch")):
        learner.update(batch)


def test_dpo_updates_increase_the_margin(tiny_policy, tiny_tokenizer):
    pairs = _pairs(tiny_tokenizer, 4)
    learner = DPOLearner(tiny_policy, DPOConfig(lr=3e-3, beta=0.1, max_grad_norm=None))
    before = {n: p.detach().clone() for n, p in tiny_policy.model.named_parameters()}
    assert _margin(learner, pairs) == pytest.approx(0.0, abs=1e-5)  # reference = initial policy
    history = []
    for _ in range(4):
        metrics = learner.update(pairs)
        history.append(_margin(learner, pairs))
    assert metrics["loss/dpo"] < math.log(2)
    assert metrics["rewards/accuracy"] == 1.0 and metrics["rewards/margin"] > 0
    for key in ("rewards/chosen", "rewards/rejected", "actor/grad_norm", "dpo/num_pairs"):
        assert math.isfinite(metrics[key])
    assert history[0] > 0 and all(b > a for a, b in zip(history, history[1:], strict=False))
    changed = [n for n, p in tiny_policy.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)  # every parameter was trained
    # the reference stays the initial policy
    ref_params = dict(learner.ref_model.named_parameters())
    assert all(torch.equal(ref_params[n], before[n]) for n in before)


def test_reference_free_and_ipo_update(tiny_policy, tiny_tokenizer):
    pairs = _pairs(tiny_tokenizer, 2)
    learner = DPOLearner(tiny_policy, DPOConfig(lr=1e-3, reference_free=True, loss_type="ipo"))
    assert learner.ref_model is None
    m = learner.update(pairs)
    assert math.isfinite(m["loss/dpo"]) and m["perf/optimizer_steps"] == 1


class _LogitsSpy(torch.nn.Module):
    """Wraps a causal LM and keeps the gradient of its logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.logits: list[torch.Tensor] = []

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        if torch.is_grad_enabled():
            out.logits.retain_grad()
            self.logits.append(out.logits)
        return out


def test_prompt_and_prefix_tokens_get_exactly_zero_gradient(tiny_policy, tiny_tokenizer):
    pairs = _pairs(tiny_tokenizer, 3, prefix="Step 1:")
    spy = _LogitsSpy(tiny_policy.model)
    learner = DPOLearner(Policy(spy, tiny_tokenizer, "spy"), DPOConfig(lr=1e-3))
    learner.update(pairs)
    (logits,) = spy.logits
    grad = logits.grad  # (2P, L, V); logits at t - 1 predict the token at t
    mask = pairs.batch.response_mask
    predicts_response = torch.zeros_like(mask, dtype=torch.bool)
    predicts_response[:, :-1] = mask[:, 1:] > 0
    assert grad[~predicts_response].abs().max() == 0  # prompt, prefix and padding: exactly 0
    assert grad[predicts_response].abs().sum(-1).min() > 0  # every response token is trained


def test_token_budget_does_not_change_the_step(tiny_tokenizer):
    pairs = _pairs(tiny_tokenizer, 4)
    params = []
    for budget in (None, 80):
        policy = Policy(make_tiny_model(len(tiny_tokenizer)), tiny_tokenizer, "tiny")
        learner = DPOLearner(policy, DPOConfig(lr=1e-3, token_budget=budget))
        m = learner.update(pairs)
        # the step's accumulated gradient (Adam's first step would amplify float noise)
        params.append([p.grad.clone() for p in policy.model.parameters()])
    assert m["perf/micro_batches"] > 1
    for a, b in zip(*params, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_state_dict_roundtrip_and_sync_reference(tiny_policy, tiny_tokenizer):
    pairs = _pairs(tiny_tokenizer, 2)
    learner = DPOLearner(tiny_policy, DPOConfig(lr=1e-3, num_minibatches=2))
    learner.update(pairs)
    state = learner.state_dict()
    assert {"optimizer", "generator", "ref_model"} <= set(state)
    learner.sync_reference()
    assert _margin(learner, pairs) == pytest.approx(0.0, abs=1e-5)
    learner.load_state_dict(state)  # restores the initial reference
    assert _margin(learner, pairs) > 0
