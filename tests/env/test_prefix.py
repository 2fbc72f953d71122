from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lppo_env import (
    MathProblem,
    contains_answer,
    extract_final_answer,
    load_problems,
    make_prefix,
    split_steps,
)

RATIOS = [0.0, 0.1, 0.15, 0.3, 0.5, 0.55, 0.8, 1.0]


class WhitespaceTokenizer:
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [len(w) for w in text.split()] + ([0] if add_special_tokens else [])


def assert_valid_prefix(problem: MathProblem, ratio: float) -> None:
    prefix = make_prefix(problem, ratio)
    assert not contains_answer(prefix.text, problem.answer)
    assert extract_final_answer(prefix.text) != problem.answer or not prefix.text
    if prefix.n_steps:
        assert prefix.text == "\n".join(problem.steps[: prefix.n_steps]) + "\n"
        assert prefix.n_steps < len(problem.steps)  # at least one step left to the model
    else:
        assert prefix.text == ""
    assert prefix.n_steps <= round(ratio * len(problem.steps) + 1e-9) + 1


def test_gsm8k_prefixes_never_leak(gsm8k: tuple[MathProblem, ...]) -> None:
    # Prefixes are heads of one another, so the longest (ratio 1) bounds all shorter ones.
    guided = 0
    for problem in gsm8k:
        assert_valid_prefix(problem, 1.0)
        guided += bool(make_prefix(problem, 0.5).text)
    assert guided > 0.8 * len(gsm8k)  # the guard does not empty most prefixes


@pytest.mark.slow
def test_gsm8k_prefixes_never_leak_all_ratios(gsm8k: tuple[MathProblem, ...]) -> None:
    for problem in gsm8k:
        for ratio in RATIOS:
            assert_valid_prefix(problem, ratio)


def test_default_prefixes_never_leak() -> None:
    for problem in load_problems("default", size=500):
        for ratio in RATIOS:
            assert_valid_prefix(problem, ratio)


def test_ratio_zero_is_no_prefix(gsm8k: tuple[MathProblem, ...]) -> None:
    prefix = make_prefix(gsm8k[0], 0.0, WhitespaceTokenizer())
    assert (prefix.text, prefix.n_steps, prefix.n_tokens, prefix.guided) == ("", 0, 0, False)


def test_prefix_token_count_without_special_tokens() -> None:
    problem = MathProblem(id="p", question="q", answer="10",
                          steps=("one two three", "four five", "six = 10"))
    prefix = make_prefix(problem, 0.7, WhitespaceTokenizer())
    assert prefix.text == "one two three\nfour five\n"
    assert prefix.n_tokens == 5


def test_leak_guard_stops_at_first_leaking_step() -> None:
    problem = MathProblem(id="p", question="q", answer="7",
                          steps=("a = 3", "b = 7.0", "c = 9", "d = 1"))
    assert make_prefix(problem, 1.0).text == "a = 3\n"


def test_bad_ratio_is_rejected() -> None:
    problem = MathProblem(id="p", question="q", answer="1", steps=("x",))
    with pytest.raises(ValueError, match=r"expects ratio in \[0, 1\], got 1.5"):
        make_prefix(problem, 1.5)


def test_split_steps_sentences_and_final_lines() -> None:
    assert split_steps("First $a. B$ holds. Then x = 2. So \\boxed{2}.") == (
        "First $a. B$ holds.", "Then x = 2.")
    assert split_steps("1. Initial:\n   • John has 3\n#### 3") == ("1. Initial:", "• John has 3")


step_text = st.text(alphabet="abcxyz +-=0123456789.,$", min_size=1, max_size=30).filter(
    lambda s: s.strip())


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(step_text, min_size=0, max_size=8),
    answer=st.one_of(st.integers(-1000, 1000).map(str), st.sampled_from(["x+1", "\\frac{1}{2}",
                                                                          "0.5", "1,000"])),
    ratio=st.floats(0.0, 1.0),
)
def test_prefix_properties(steps: list[str], answer: str, ratio: float) -> None:
    problem = MathProblem(id="p", question="q", answer=answer,
                          steps=tuple(s.strip() for s in steps))
    prefix = make_prefix(problem, ratio)
    assert not contains_answer(prefix.text, answer)
    assert prefix.text == ("\n".join(problem.steps[: prefix.n_steps]) + "\n"
                           if prefix.n_steps else "")
    # monotone: a larger ratio never gives a shorter prefix
    assert make_prefix(problem, min(1.0, ratio + 0.25)).n_steps >= prefix.n_steps


def test_mid_cut_leaves_a_computation() -> None:
    from lppo_env.prefix import can_guide

    problem = MathProblem(id="p", question="q", answer="-114", tags=("prefix_cut:mid",),
                          steps=("15 - 43 = -28.", "-28 - 75 = -103.", "-103 - 72 = -175.",
                                 "-175 + 61 = -114."))
    assert make_prefix(problem, 0.1).text == "15 - 43 ="
    assert make_prefix(problem, 0.5).text == "15 - 43 = -28.\n-28 - 75 = -103.\n-103 - 72 ="
    # the longest cut still leaves the last step's result to the model
    assert make_prefix(problem, 1.0).text.endswith("-175 + 61 =")
    assert make_prefix(problem, 1.0).partial and make_prefix(problem, 1.0).n_steps == 3
    assert make_prefix(problem, 0.0).text == ""
    assert make_prefix(problem, 0.5, cut="step").text == "15 - 43 = -28.\n-28 - 75 = -103.\n"
    assert can_guide(problem)
    leaky = MathProblem(id="q", question="q", answer="15", tags=("prefix_cut:mid",),
                        steps=("15 - 43 = -28.", "-28 + 43 = 15."))
    assert make_prefix(leaky, 0.9).text == "" and not can_guide(leaky)


@settings(max_examples=300, deadline=None)
@given(
    terms=st.lists(st.integers(10, 99), min_size=4, max_size=6),
    ops=st.lists(st.sampled_from("+-"), min_size=5, max_size=5),
    ratio=st.floats(1e-6, 1.0),
)
def test_mid_cut_properties(terms: list[int], ops: list[str], ratio: float) -> None:
    from lppo_env.default_data import arithmetic_solution
    from lppo_env.prefix import can_guide

    expression = " ".join([str(terms[0])] + [f"{o} {t}" for o, t in zip(ops, terms[1:],
                                                                          strict=False)])
    solution, value = arithmetic_solution(expression, restate=False)
    problem = MathProblem(id="p", question="q", answer=str(value), solution=solution,
                          steps=split_steps(solution), tags=("prefix_cut:mid",))
    prefix = make_prefix(problem, ratio)
    assert not contains_answer(prefix.text, problem.answer)
    # a usable problem gets a prefix at every ratio > 0, and it ends with an open "="
    assert prefix.guided == can_guide(problem)
    if prefix.guided:
        assert prefix.text.endswith("=") and prefix.partial
        assert prefix.n_steps < len(problem.steps)
        assert prefix.text.startswith("\n".join(problem.steps[: prefix.n_steps]))
    # monotone in the ratio
    assert len(make_prefix(problem, min(1.0, ratio + 0.25)).text) >= len(prefix.text)


def test_chain_long_prefixes_are_usable_and_never_leak() -> None:
    from lppo_env.prefix import can_guide

    problems = load_problems("chain_long", size=300)
    usable = [p for p in problems if can_guide(p)]
    assert len(usable) > 0.97 * len(problems)
    for problem in problems:
        for ratio in RATIOS[1:]:
            prefix = make_prefix(problem, ratio)
            assert not contains_answer(prefix.text, problem.answer)
            assert prefix.guided == can_guide(problem)
