from __future__ import annotations

import pytest

from lppo_env import (
    MathProblem,
    arithmetic_problems,
    default_problems,
    extract_final_answer,
    gsm_symbolic_problems,
    load_problems,
    parse_number,
    split_problems,
)
from lppo_env.default_data import arithmetic_config, arithmetic_solution


@pytest.fixture(scope="module")
def default() -> tuple[MathProblem, ...]:
    return load_problems("default")


def left_to_right(expression: str) -> int:
    tokens = expression.split()
    total = int(tokens[0])
    for op, term in zip(tokens[1::2], tokens[2::2], strict=False):
        total = total + int(term) if op == "+" else total - int(term)
    return total


def test_default_is_one_digit_chain_sums_with_worked_solutions(
    default: tuple[MathProblem, ...],
) -> None:
    assert len(default) == 2000
    assert len({p.id for p in default}) == 2000
    assert len({p.question for p in default}) == 2000
    for p in default:
        expression = p.id.removeprefix("arith:")
        terms = [t for t in expression.replace("-", "+").split("+") if t]
        assert 2 <= len(terms) <= 3 and all(len(t) == 1 for t in terms)
        value = left_to_right(p.steps[0].removeprefix("We compute ").removesuffix(
            " from left to right."))
        assert p.answer == str(value)
        assert extract_final_answer(p.solution) == p.answer
        assert len(p.steps) == len(terms)  # restatement + one partial sum per operator


def test_default_is_deterministic_and_seeded() -> None:
    assert default_problems(size=50, seed=3) == default_problems(size=50, seed=3)
    assert default_problems(size=50, seed=3) != default_problems(size=50, seed=4)
    assert load_problems("default", size=50, seed=3) == default_problems(size=50, seed=3)


def test_growing_size_keeps_earlier_problems() -> None:
    assert arithmetic_problems(size=80, seed=1)[:30] == arithmetic_problems(size=30, seed=1)


@pytest.mark.parametrize("difficulty", [1, 2, 3, 5, 8])
def test_difficulty_knob_changes_terms_and_digits(difficulty: int) -> None:
    cfg = arithmetic_config(difficulty)
    problems = arithmetic_problems(size=40, seed=0, difficulty=difficulty)
    for p in problems:
        terms = p.id.removeprefix("arith:").replace("-", "+").split("+")
        terms = [t for t in terms if t]
        assert cfg["min_terms"] <= len(terms) <= cfg["max_terms"]
        assert all(cfg["min_digits"] <= len(t) <= cfg["max_digits"] for t in terms)
        assert f"difficulty:{difficulty}" in p.tags


def test_difficulty_grows() -> None:
    sizes = [arithmetic_config(d) for d in range(1, 10)]
    assert all(a["max_terms"] <= b["max_terms"] and a["max_digits"] <= b["max_digits"]
               for a, b in zip(sizes, sizes[1:], strict=False))
    assert sizes[-1]["max_terms"] > sizes[0]["max_terms"]
    with pytest.raises(ValueError, match="expects difficulty to be an integer >= 1, got 0"):
        arithmetic_config(0)


def test_arithmetic_solution_format() -> None:
    text, value = arithmetic_solution("4 - 15 + 7")
    assert value == -4
    assert text.splitlines() == [
        "We compute 4 - 15 + 7 from left to right.",
        "4 - 15 = -11.",
        "-11 + 7 = -4.",
        "The answer is \\boxed{-4}.",
    ]


def test_too_many_requested_is_an_error() -> None:
    # 2-3 one-digit terms allow ~4200 distinct chains; 5000 cannot be found.
    with pytest.raises(ValueError, match="expected 5000 distinct problems"):
        arithmetic_problems(size=5000)


def test_gsm_symbolic_uses_answer_cot() -> None:
    problems = gsm_symbolic_problems(size=30, seed=0)
    assert len({p.id for p in problems}) == 30
    for p in problems:
        assert p.solution is not None and p.steps
        assert parse_number(extract_final_answer(p.solution)) == parse_number(p.answer)
        assert not any("####" in s for s in p.steps)


def test_split_is_disjoint_deterministic_and_order_free(
    default: tuple[MathProblem, ...],
) -> None:
    train, held = split_problems(default, 200, seed=0)
    assert len(held) == 200 and len(train) == 1800
    assert not {p.id for p in train} & {p.id for p in held}
    assert split_problems(default, 200, seed=0) == (train, held)
    _, held_reversed = split_problems(default[::-1], 200, seed=0)
    assert {p.id for p in held_reversed} == {p.id for p in held}
    _, held_other = split_problems(default, 200, seed=1)
    assert {p.id for p in held_other} != {p.id for p in held}
    with pytest.raises(ValueError, match="expects 0 <= n_eval <= 2000, got 2001"):
        split_problems(default, 2001)


@pytest.fixture(scope="module")
def chain_long() -> tuple[MathProblem, ...]:
    return load_problems("chain_long", size=300)


def test_chain_long_is_4_to_6_two_digit_terms(chain_long: tuple[MathProblem, ...]) -> None:
    assert len({p.id for p in chain_long}) == 300
    n_terms = set()
    for p in chain_long:
        expression = p.question.rsplit(":", 1)[1].removesuffix("=").strip()
        terms = expression.replace("-", "+").split("+")
        n_terms.add(len(terms))
        assert all(len(t.strip()) == 2 for t in terms)
        assert p.answer == str(left_to_right(expression))
        assert extract_final_answer(p.solution) == p.answer
        assert "prefix_cut:mid" in p.tags
    assert n_terms == {4, 5, 6}


def test_chain_long_every_step_computes(chain_long: tuple[MathProblem, ...]) -> None:
    for p in chain_long:
        expression = p.question.rsplit(":", 1)[1].removesuffix("=").strip()
        assert len(p.steps) == len(expression.split()) // 2  # one partial sum per operator
        total = int(expression.split()[0])
        for step in p.steps:  # "a op b = c." with a the running total, c the next one
            lhs, rhs = step.removesuffix(".").split(" = ")
            a, op, b = lhs.rsplit(" ", 2)
            assert int(a) == total
            total = total + int(b) if op == "+" else total - int(b)
            assert int(rhs) == total
        assert str(total) == p.answer


def test_arithmetic_solution_without_restatement() -> None:
    text, value = arithmetic_solution("40 - 15 + 17", restate=False)
    assert value == 42
    assert text.splitlines() == ["40 - 15 = 25.", "25 + 17 = 42.", "The answer is \\boxed{42}."]


def test_chain_long_is_deterministic() -> None:
    assert load_problems("chain_long", size=40, seed=2) == load_problems("chain_long", size=40,
                                                                         seed=2)
    assert load_problems("chain_long", size=40, seed=2) != load_problems("chain_long", size=40,
                                                                         seed=3)


def test_default_with_mid_cut_is_the_same_problems_tagged() -> None:
    from lppo_env import make_prefix

    plain = load_problems("default", size=30)
    mid = load_problems("default", size=30, prefix_cut="mid")
    assert [p.id for p in mid] == [p.id for p in plain]
    assert all("prefix_cut:mid" in p.tags and "prefix_cut:mid" not in q.tags
               for p, q in zip(mid, plain, strict=True))
    # the restatement step is given whole and the first partial sum is left open
    p = mid[0]
    assert make_prefix(p, 0.01).text == p.steps[0] + "\n" + p.steps[1].split("=")[0] + "="
    from lppo_env.prefix import can_guide

    # one-digit answers often occur in the restatement (the leak guard then refuses)
    assert sum(map(can_guide, mid)) > 0.8 * len(mid)
    with pytest.raises(ValueError, match="prefix_cut 'step' or 'mid', got 'x'"):
        load_problems("default", size=3, prefix_cut="x")
