"""Env side of the curricula: Cog-DRIFT variants, h1 chains, the length budget and reward.

All through `reset` options and the env's reward, from the Gymnasium API.
"""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lppo_env import ENV_ID, MathProblem, arithmetic_problems, make_group_env, parse_number
from lppo_env.answers import contains_answer, last_boxed
from lppo_env.chains import compose_chain, compose_chains
from lppo_env.formats import LETTERS, VariantError, make_cloze, make_mcq
from lppo_env.length_reward import length_reward

SET = settings(max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
ARITH = arithmetic_problems(200, seed=3, difficulty=2)


def _problem(answer: int, pid: str = "p") -> MathProblem:
    return MathProblem(id=pid, question="Compute it.", answer=str(answer))


# -------------------------------------------------------------- Cog-DRIFT
@SET
@given(a=st.integers(-10**6, 10**6), pid=st.text(min_size=1, max_size=12).filter(str.strip))
def test_mcq_keeps_the_answer_behind_the_right_letter(a, pid):
    """Bug caught: the answer missing from the options, a duplicated option, or a letter
    that resolves to a distractor."""
    m = make_mcq(_problem(a, pid))
    assert len(set(m.options)) == 4 and m.options.count(str(a)) == 1
    assert m.options[LETTERS.index(m.correct)] == str(a)
    for letter, value in zip(LETTERS, m.options, strict=True):
        assert last_boxed(m.resolve(f"so \\boxed{{{letter}}}")) == value
        assert f"{letter}) {value}" in m.question
    assert make_mcq(_problem(a, pid)) == m  # fixed per problem id


@pytest.mark.parametrize("answer", ["1/2", "\\sqrt{2}", "0.5"])
def test_mcq_refuses_answers_it_cannot_keep_exactly(answer):
    with pytest.raises(VariantError, match="problem 'p': format 'mcq' needs an integer"):
        make_mcq(MathProblem(id="p", question="q?", answer=answer))


@SET
@given(p=st.sampled_from(ARITH + arithmetic_problems(100, seed=5, difficulty=4)))
def test_cloze_blanks_every_statement_of_the_answer(p):
    """Bug caught: the cloze variant still stating the answer (free reward)."""
    text = make_cloze(p)
    body = text.split("blanked out (____):\n", 1)[1]
    assert "____" in body and not contains_answer(body, p.answer)


def test_cloze_needs_a_solution_and_never_leaks():
    with pytest.raises(VariantError, match="'q1': format 'cloze' needs a worked solution"):
        make_cloze(MathProblem(id="q1", question="q?", answer="4"))
    leaky = MathProblem(id="q2", question="q?", answer="4", solution="x = 4.0\nso 4",
                        steps=("x = 4.0",))
    with pytest.raises(VariantError, match="'q2'.*would still state the answer"):
        make_cloze(leaky)


def test_env_scores_mcq_letters_and_cloze_through_gymnasium(verifier):
    p = ARITH[0]
    env = gym.make(ENV_ID, problems=ARITH[:5], verifier=verifier)
    obs, info = env.reset(options={"problem_id": p.id, "format": "mcq"})
    m = make_mcq(p)
    assert info["format"] == "mcq" and obs == m.question
    wrong = next(x for x in LETTERS if x != m.correct)
    assert env.step(f"\\boxed{{{m.correct}}}")[1] == 1.0
    env.reset(options={"problem_id": p.id, "format": "mcq"})
    assert env.step(f"\\boxed{{{wrong}}}")[1] == 0.0
    obs, _ = env.reset(options={"problem_id": p.id, "format": "cloze"})
    assert "____" in obs
    assert env.step(f"\\boxed{{{p.answer}}}")[1] == 1.0
    with pytest.raises(ValueError, match="reset option 'format'"):
        env.reset(options={"problem_id": p.id, "format": "essay"})
    env2 = gym.make(ENV_ID, problems=[MathProblem(id="f", question="q", answer="1/2")],
                    verifier=verifier)
    with pytest.raises(VariantError, match="reset option 'format': problem 'f'"):
        env2.reset(options={"problem_id": "f", "format": "mcq"})


def test_restructured_question_is_posed_and_scored_against_the_original(verifier):
    p = ARITH[1]
    env = gym.make(ENV_ID, problems=ARITH[:5], verifier=verifier)
    obs, info = env.reset(options={"problem_id": p.id, "question": "Rephrased: add them.",
                                   "restructure": "diversify"})
    assert obs == "Rephrased: add them." and info["restructure"] == "diversify"
    assert env.step(f"\\boxed{{{p.answer}}}")[1] == 1.0
    with pytest.raises(ValueError, match="reset option 'question'"):
        env.reset(options={"problem_id": p.id, "question": "  "})


# ------------------------------------------------------------------- h1
@SET
@given(seed=st.integers(0, 2**16), depth=st.integers(1, 6))
def test_chain_keeps_each_links_answer_and_feeds_the_next(seed, depth):
    """Bug caught: a substitution that changes a link's number (wrong c), a chain answer
    that is not the last link's, or a solution whose final box differs from the answer."""
    rng = np.random.default_rng(seed)
    links = [ARITH[i] for i in rng.choice(len(ARITH), depth, replace=False)]
    c = compose_chain(links)
    assert c.answer == links[-1].answer and last_boxed(c.solution) == c.answer
    assert c.tags[0] == f"depth:{depth}" and c.steps
    for k in range(1, depth):
        m = re.search(rf"Problem {k + 1}: Let (\w) be the answer to problem {k}\. (.*)",
                      c.question)
        assert m is not None
        name, q = m.groups()
        e = re.search(rf"\({name} ([+-]) (\d+)\)", q)
        prev = int(parse_number(links[k - 1].answer))
        val = prev + int(e.group(2)) * (1 if e.group(1) == "+" else -1)
        # putting the value back gives the original question exactly
        assert q[: e.start()] + str(val) + q[e.end():] == links[k].question


def test_compose_chains_counts_and_errors():
    cs = compose_chains(ARITH, depths=(1, 3), per_depth=10, seed=0)
    tags = [c.tags[0] for c in cs]
    assert tags.count("depth:1") == 10 and tags.count("depth:3") == 10
    assert len({c.id for c in cs}) == 20
    with pytest.raises(ValueError, match="composable"):
        compose_chains([MathProblem(id="x", question="no numbers", answer="3")], depths=(1,))


def test_h1_chains_dataset_loads_by_name():
    from lppo_env import load_problems

    ps = load_problems("h1_chains", size=40, seed=0)
    assert {p.tags[0] for p in ps} == {"depth:1", "depth:2", "depth:3", "depth:4"}


# ------------------------------------------------------------ length budget
@SET
@given(correct=st.booleans(), n=st.integers(0, 600), b=st.integers(1, 512), fmt=st.booleans(),
       w=st.tuples(*[st.floats(0, 5)] * 3).filter(lambda w: sum(w) > 0))
def test_length_reward_is_bounded_and_prefers_short_correct_answers(correct, n, b, fmt, w):
    """Bug caught: a reward outside [0, 1] (the sampler refuses it), a brevity bonus for
    wrong answers, or a longer correct answer scoring more."""
    r = length_reward(correct, n, b, fmt, *w)
    assert 0.0 <= r <= 1.0
    if n > b:
        assert r == 0.0
    else:
        assert r >= length_reward(correct, min(n + 1, b), b, fmt, *w)
        assert length_reward(True, n, b, fmt, *w) >= length_reward(False, n, b, fmt, *w)
        assert length_reward(False, n, b, fmt, *w) == length_reward(False, 0, b, fmt, *w)


def test_budget_and_composite_reward_in_a_group_env(verifier):
    p = ARITH[2]
    envs = make_group_env(2, ARITH[:5], verifier=verifier)
    opts = {"max_new_tokens": 10, "length_reward": True, "w_correct": 1.0, "w_length": 1.0,
            "w_format": 0.0}
    _, info = envs.reset(options={"problem_id": p.id, "slots": [opts, {}]})
    assert list(info["max_new_tokens"][:1]) == [10]
    short = f"\\boxed{{{p.answer}}}"
    _, r, *_ , step_info = envs.step((short, short))
    assert r[0] == pytest.approx((1 + (1 - 1 / 10)) / 2) and r[1] == 1.0
    _, _ = envs.reset(options={"problem_id": p.id, "slots": [opts, opts]})
    _, r, *_ = envs.step(("word " * 11 + short, "wrong \\boxed{x}"))
    assert r[0] == 0.0 and r[1] == 0.0
    with pytest.raises(ValueError, match="'max_new_tokens'"):
        envs.reset(options={"problem_id": p.id, "max_new_tokens": 0})
    with pytest.raises(ValueError, match="'length_reward': needs 'max_new_tokens'"):
        envs.reset(options={"problem_id": p.id, "length_reward": True})
    with pytest.raises(ValueError, match="'w_length'"):
        envs.reset(options={"problem_id": p.id, "max_new_tokens": 5, "w_length": -1.0})
