from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from hypothesis import given, settings
from hypothesis import strategies as st

from lppo_env import (
    ENV_ID,
    MathProblem,
    MathReasoningEnv,
    MathVerifier,
    UnicodeText,
    contains_answer,
    group_options,
    load_problems,
    make_group_env,
)

PROBLEMS = load_problems("default", size=64)


@pytest.fixture()
def env(verifier: MathVerifier) -> MathReasoningEnv:
    return MathReasoningEnv(PROBLEMS, verifier=verifier)


class ChatTokenizer:
    """Stand-in for a HF tokenizer: a visible chat template and whitespace tokens."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False,
                            continue_final_message=False):
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)
        if continue_final_message:
            text = text.removesuffix(f"</{messages[-1]['role']}>")
        return text + ("<assistant>" if add_generation_prompt else "")

    def encode(self, text, add_special_tokens=True):
        return list(range(len(text.split())))


def test_check_env_passes_without_warnings(verifier: MathVerifier) -> None:
    made = gym.make(ENV_ID, problems=PROBLEMS, verifier=verifier)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(made.unwrapped)
    assert [str(w.message) for w in caught] == []


def test_registered_with_gymnasium_make() -> None:
    made = gym.make(ENV_ID, problems=PROBLEMS)
    assert isinstance(made.unwrapped, MathReasoningEnv)
    obs, info = made.reset(seed=0)
    assert obs == made.unwrapped.problem(info["problem_id"]).question
    made.close()


def test_import_pulls_no_heavy_modules() -> None:
    code = ("import sys, lppo_env, gymnasium; gymnasium.spec('lppo/MathReasoning-v0'); "
            "print(sorted(m for m in ('torch', 'transformers', 'math_verify', 'reasoning_gym') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_reset_with_problem_and_ratio(env: MathReasoningEnv) -> None:
    problem = next(p for p in PROBLEMS if len(p.steps) == 3)
    obs, info = env.reset(options={"problem_id": problem.id, "prefix_ratio": 0.7})
    assert obs == problem.question
    assert info["problem_id"] == problem.id
    assert info["prefix"] == "\n".join(problem.steps[: info["prefix_steps"]]) + "\n"
    assert info["guided"] and info["prefix_steps"] >= 1
    assert info["messages"][0]["role"] == "system" and "\\boxed{}" in info["messages"][0]["content"]
    assert info["messages"][-1] == {"role": "assistant", "content": info["prefix"]}


def test_step_scores_prefix_plus_completion(env: MathReasoningEnv) -> None:
    problem = PROBLEMS[0]
    _, info = env.reset(options={"problem_id": problem.id, "prefix": "Let me think.\n####"})
    obs, reward, terminated, truncated, step_info = env.step(f" {problem.answer}")
    assert (obs, reward, terminated, truncated) == ("", 1.0, True, False)
    assert step_info["correct"] and step_info["parsed_answer"] == problem.answer
    assert step_info["status"] == "ok" and step_info["guided"]
    env.reset(options={"problem_id": problem.id})
    _, reward, _, _, step_info = env.step("The answer is \\boxed{99999}.")
    assert (reward, step_info["correct"], step_info["parsed_answer"]) == (0.0, False, "99999")
    env.reset(options={"problem_id": problem.id})
    assert env.step("I don't know")[4]["status"] == "no_answer"


def test_step_before_reset_is_an_error(env: MathReasoningEnv) -> None:
    with pytest.raises(gym.error.ResetNeeded):
        env.step("x")


def test_bad_options_are_rejected(env: MathReasoningEnv) -> None:
    with pytest.raises(ValueError, match=r"got unknown \['prefix_ration'\]"):
        env.reset(options={"prefix_ration": 0.5})
    with pytest.raises(ValueError, match="expects either 'prefix' or 'prefix_ratio', got both"):
        env.reset(options={"prefix": "a", "prefix_ratio": 0.5})
    with pytest.raises(KeyError, match="reset option 'problem_id': expected a known problem id, "
                                       "got 'nope'"):
        env.reset(options={"problem_id": "nope"})


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"prefix_ratio": 1.5}, ValueError,
         "reset option 'prefix_ratio': expected a number in [0, 1], got 1.5"),
        ({"prefix_ratio": float("nan")}, ValueError,
         "reset option 'prefix_ratio': expected a number in [0, 1], got nan"),
        ({"prefix_ratio": "0.5"}, ValueError,
         "reset option 'prefix_ratio': expected a number in [0, 1], got '0.5'"),
        ({"prefix_ratio": True}, ValueError,
         "reset option 'prefix_ratio': expected a number in [0, 1], got True"),
        ({"slots": [{"prefix_ratio": -0.1}]}, ValueError,
         "reset option 'prefix_ratio': expected a number in [0, 1], got -0.1"),
        ({"prefix": 3}, TypeError, "reset option 'prefix': expected str, got int"),
        ({"slots": "ab"}, ValueError, "reset option 'slots': expected a list with an entry"),
        ({"slots": [3]}, ValueError, "reset option 'slots': expected a dict of options for slot 0"),
    ],
)
def test_reset_errors_name_the_option(
    env: MathReasoningEnv, options: dict, error: type, message: str
) -> None:
    """Deliberate bug caught: a bad prefix_ratio raised "make_prefix expects ratio ...",
    naming a function the user never called instead of the option they set.
    """
    with pytest.raises(error) as err:
        env.reset(options=options)
    assert str(err.value).startswith(message) and "make_prefix" not in str(err.value)


@pytest.mark.parametrize("action", [object(), 72, None, b"\\boxed{72}", ["\\boxed{72}"]])
def test_non_str_action_is_a_type_error(env: MathReasoningEnv, action: object) -> None:
    """Deliberate bug caught: actions were passed through str(), so an object whose
    str() states the answer (or a list holding a right completion) could score 1.0.
    """
    env.reset(options={"problem_id": PROBLEMS[0].id})
    with pytest.raises(TypeError, match="MathReasoningEnv.step expects action to be str"):
        env.step(action)  # type: ignore[arg-type]


class _StatesTheAnswer:
    def __str__(self) -> str:
        return f"\\boxed{{{PROBLEMS[0].answer}}}"


def test_object_stating_the_answer_cannot_score(env: MathReasoningEnv) -> None:
    env.reset(options={"problem_id": PROBLEMS[0].id})
    with pytest.raises(TypeError, match="got _StatesTheAnswer"):
        env.step(_StatesTheAnswer())  # type: ignore[arg-type]


@pytest.mark.parametrize("in_slots", [False, True])
def test_prefix_option_goes_through_the_answer_leak_guard(
    verifier: MathVerifier, in_slots: bool
) -> None:
    """Deliberate bug caught: an explicit `prefix` stating the final answer was used as
    is, and an empty completion then scored 1.0.
    """
    problem = next(p for p in PROBLEMS if len(p.steps) == 3)
    env = MathReasoningEnv(PROBLEMS, verifier=verifier)
    leaking = f"{problem.steps[0]}\nSo the answer is {problem.answer}.\nDone.\n"
    options = ({"problem_id": problem.id, "slots": [{"prefix": leaking}]} if in_slots
               else {"problem_id": problem.id, "prefix": leaking})
    _, info = env.reset(options=options)
    assert info["prefix"] == f"{problem.steps[0]}\n" and info["prefix_leak_trimmed"]
    assert info["messages"][-1]["content"] == info["prefix"]
    _, reward, *_, step_info = env.step("")
    assert reward == 0.0 and step_info["parsed_answer"] != problem.answer
    # a prefix whose first line leaks leaves nothing: the rollout is unguided
    _, info = env.reset(options={"problem_id": problem.id, "prefix": f"#### {problem.answer}"})
    assert (info["prefix"], info["guided"], info["prefix_leak_trimmed"]) == ("", False, True)
    assert env.step("")[1] == 0.0
    # a prefix without the answer is kept as given
    _, info = env.reset(options={"problem_id": problem.id, "prefix": "We compute"})
    assert (info["prefix"], info["prefix_leak_trimmed"]) == ("We compute", False)


@settings(max_examples=150, deadline=None)
@given(
    templates=st.lists(st.sampled_from([
        "We add.", "Carry the one.", "so we get {other}.", "so we get {answer}.",
        "$x = {answer}.0$", "\\frac{{{double}}}{{2}} is half", "####", "So {other} + 0",
    ]), max_size=6),
    index=st.integers(0, len(PROBLEMS) - 1),
    newline_at_end=st.booleans(),
)
def test_explicit_prefix_never_states_the_answer(templates, index, newline_at_end) -> None:
    """The guard on `prefix`: what is kept is a head of the given text in whole lines,
    never states the final answer, and is the longest such head.
    """
    problem = PROBLEMS[index]
    value = int(problem.answer)
    lines = [t.format(answer=value, other=value + 1, double=2 * value) for t in templates]
    text = "\n".join(lines) + ("\n" if newline_at_end and lines else "")
    env = MathReasoningEnv(PROBLEMS)
    _, info = env.reset(options={"problem_id": problem.id, "prefix": text})
    kept = info["prefix"]
    assert text.startswith(kept) and not contains_answer(kept, problem.answer)
    assert kept == "" or kept.endswith("\n") or kept == text
    assert info["prefix_leak_trimmed"] == (kept != text)
    if kept != text:  # one more line would state the answer
        rest = text[len(kept):].splitlines(keepends=True)
        assert contains_answer(kept + rest[0], problem.answer)


UNICODE_PROBLEM = MathProblem(id="unicode-1", question="Half of £4 is ½ × £4: how much? ∑ é 𝑥",
                              answer="2", solution="½ × 4 = 2\n#### 2", steps=("½ × 4 = 2",))


@pytest.mark.parametrize(
    "vector_kwargs",
    [{}, {"shared_memory": True, "autoreset_mode": AutoresetMode.DISABLED},
     # gymnasium 1.4's async worker clears its autoreset flag on reset only with shared
     # memory, so without it episodes must not autoreset (see the env's Version notes)
     {"shared_memory": False, "autoreset_mode": AutoresetMode.DISABLED}],
)
def test_make_vec_async_works(vector_kwargs: dict) -> None:
    """Deliberate bugs caught: with shared memory (the default) the worker failed with
    KeyError(':') (a `Text` buffer holds charset indices only) and every later prompt
    read back as a stale ""; without it the daemonic workers could not start the
    verifier pool, so symbolic answers scored 0.
    """
    problems = (*PROBLEMS, UNICODE_PROBLEM)
    envs = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="async", problems=problems,
                        vector_kwargs=vector_kwargs)
    try:
        for problem, symbolic in ((UNICODE_PROBLEM, "\\boxed{\\sqrt{4}}"),
                                  (PROBLEMS[2], "\\boxed{" + PROBLEMS[2].answer + ".0}")):
            obs, info = envs.reset(options={"problem_id": problem.id})
            assert tuple(obs) == (problem.question, problem.question)
            assert list(info["problem_id"]) == [problem.id] * 2
            _, rewards, terminated, _, step_info = envs.step((symbolic, "\\boxed{-12345}"))
            np.testing.assert_array_equal(rewards, [1.0, 0.0], err_msg=str(step_info))
            assert terminated.all() and list(step_info["status"]) == ["ok", "ok"]
    finally:
        envs.close()


def test_same_seed_same_problem(env: MathReasoningEnv) -> None:
    ids = [env.reset(seed=s)[1]["problem_id"] for s in (1, 2, 1)]
    assert ids[0] == ids[2]


def test_tokenizer_renders_prompt_for_continuation(verifier: MathVerifier) -> None:
    env = MathReasoningEnv(PROBLEMS, verifier=verifier, tokenizer=ChatTokenizer(),
                           system_prompt=None, user_template="Q: {question}")
    problem = next(p for p in PROBLEMS if len(p.steps) == 3)
    obs, info = env.reset(options={"problem_id": problem.id, "prefix_ratio": 0.5})
    assert obs == f"<user>Q: {problem.question}</user><assistant>{info['prefix']}"
    assert info["prefix_tokens"] == len(info["prefix"].split())
    obs, info = env.reset(options={"problem_id": problem.id})
    assert obs.endswith("</user><assistant>") and info["prefix_tokens"] == 0


def test_lookup_and_constructor_validation() -> None:
    env = MathReasoningEnv(PROBLEMS)
    assert env.problem_ids == tuple(p.id for p in PROBLEMS)
    assert env.problem(PROBLEMS[3].id) is PROBLEMS[3]
    with pytest.raises(ValueError, match="expects user_template to contain '{question}'"):
        MathReasoningEnv(PROBLEMS, user_template="no placeholder")
    dup = (PROBLEMS[0], MathProblem(id=PROBLEMS[0].id, question="q", answer="1"))
    with pytest.raises(ValueError, match="expected unique ids"):
        MathReasoningEnv(dup)


def test_unicode_text_space() -> None:
    space = UnicodeText(10)
    assert space.contains("∑ ½ $x$") and space.contains("")
    assert not space.contains("x" * 11) and not space.contains(5)
    assert space.contains(space.sample())
    assert space == UnicodeText(10) and space != UnicodeText(11)


def test_group_env_per_slot_prefixes(verifier: MathVerifier) -> None:
    problem = next(p for p in PROBLEMS if len(p.steps) == 3)
    envs = make_group_env(4, PROBLEMS, verifier=verifier)
    obs, info = envs.reset(options=group_options(problem.id, [None, 0.0, 0.7, "We compute"]))
    assert list(obs) == [problem.question] * 4
    assert list(info["problem_id"]) == [problem.id] * 4
    assert list(info["guided"]) == [False, False, True, True]
    assert info["prefix"][3] == "We compute" and info["prefix_steps"][2] >= 1
    completions = ("\\boxed{" + problem.answer + "}", "no idea", "\\boxed{123456}",
                   f" {problem.steps[0].removeprefix('We compute')} = {problem.answer}")
    _, rewards, terminated, truncated, step_info = envs.step(completions)
    np.testing.assert_array_equal(rewards, [1.0, 0.0, 0.0, 1.0])
    assert terminated.all() and not truncated.any()
    assert list(step_info["status"]) == ["ok", "no_answer", "ok", "ok"]
    # a second group on another problem reuses the same envs
    other = PROBLEMS[1]
    obs, info = envs.reset(options=group_options(other.id, [0.5] * 4))
    assert list(info["problem_id"]) == [other.id] * 4
    envs.close()
