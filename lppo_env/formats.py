r"""Answer-preserving reformulations of a problem (Cog-DRIFT): multiple choice and cloze.

Cog-DRIFT (arXiv 2604.04767) poses hard problems in cognitively easier formats first. For
problems with an integer answer the variants are built exactly, without a model:

- **mcq**: the question followed by four options A-D: the answer and three distractors
  near it (±1, ±2, ±10, the negation, twice the answer), in an order fixed by the
  problem id. The reward maps a boxed letter back to its value (`MCQ.resolve`), so
  `\boxed{B}` and `\boxed{17}` score alike.
- **cloze**: the question followed by its worked solution with every statement of the
  answer blanked (`____`); the model fills the blank. Needs a worked solution.

The gold answer is never changed: each builder checks its own output (the correct
option holds exactly the answer; the cloze text does not state it) and raises
`VariantError`, naming the problem and the format, instead of training on a variant
whose answer differs from the original.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from fractions import Fraction

from lppo_env.answers import contains_answer, last_boxed, parse_number
from lppo_env.problems import MathProblem

__all__ = [
    "FORMATS",
    "LETTERS",
    "MCQ",
    "VariantError",
    "make_mcq",
    "make_cloze",
    "variant",
    "check_reformulable",
]

FORMATS = ("mcq", "cloze", "open")
LETTERS = ("A", "B", "C", "D")
BLANK = "____"


class VariantError(ValueError):
    """A reformulation that cannot keep the problem's answer."""


@dataclass(frozen=True)
class MCQ:
    """A multiple-choice variant: its question and the value behind each letter."""

    question: str
    options: tuple[str, ...]
    correct: str

    def resolve(self, completion: str) -> str:
        r"""The completion with a boxed option letter replaced by that option's value."""
        boxed = last_boxed(completion)
        if boxed is None:
            return completion
        letter = re.fullmatch(r"\(?\s*([A-Da-d])\s*\)?(?:\s*[.:)].*)?", boxed.strip())
        if letter is None:
            return completion
        value = self.options[LETTERS.index(letter.group(1).upper())]
        return completion + f"\n\\boxed{{{value}}}"


def _int_answer(problem: MathProblem, fmt: str) -> int:
    v = parse_number(problem.answer)
    if v is None or v.denominator != 1:
        raise VariantError(f"problem {problem.id!r}: format {fmt!r} needs an integer answer, "
                           f"got {problem.answer!r}")
    return int(v)


def _seed(problem_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(problem_id.encode(), digest_size=8).digest(), "big")


def make_mcq(problem: MathProblem) -> MCQ:
    """The multiple-choice variant of an integer-answer problem (deterministic per id)."""
    a = _int_answer(problem, "mcq")
    pool = []
    for d in (a + 1, a - 1, a + 2, a - 2, a + 10, a - 10, -a, 2 * a):
        if d != a and d not in pool:
            pool.append(d)
    h = _seed(problem.id)
    picks = [pool.pop((h // 7**i) % len(pool)) for i in range(3)]
    pos = (h // 343) % 4
    values = [*picks[:pos], a, *picks[pos:]]
    options = tuple(str(v) for v in values)
    if Fraction(options[pos]) != Fraction(a) or len(set(options)) != 4:
        raise VariantError(f"problem {problem.id!r}: the mcq variant would not keep the answer "
                           f"{problem.answer!r} (options {options})")
    lines = [problem.question, "", "Choose the correct option:"]
    lines += [f"{letter}) {v}" for letter, v in zip(LETTERS, options, strict=True)]
    lines.append("Give the letter of the correct option in \\boxed{}.")
    return MCQ("\n".join(lines), options, LETTERS[pos])


def _blank_answer(text: str, answer: str) -> str:
    a = answer.strip()
    behind = r"(?<![\w.])" if a.startswith("-") else r"(?<![\w.\-])"  # 4 is not in -4
    return re.sub(behind + re.escape(a) + r"(?![\w]|\.\d)", BLANK, text)


def make_cloze(problem: MathProblem) -> str:
    """The cloze variant: the worked solution with the answer blanked out."""
    if not problem.steps:
        raise VariantError(f"problem {problem.id!r}: format 'cloze' needs a worked solution")
    body = _blank_answer("\n".join(problem.steps), problem.answer)
    if contains_answer(body, problem.answer):
        raise VariantError(f"problem {problem.id!r}: the cloze variant would still state the "
                           f"answer {problem.answer!r} (written another way in the solution)")
    return (f"{problem.question}\n\nA worked solution with the result blanked out ({BLANK}):\n"
            f"{body}\nWhat number goes in the blank? Give it in \\boxed{{}}.")


def variant(problem: MathProblem, fmt: str) -> tuple[str, MCQ | None]:
    """(question text, MCQ or None) of `problem` in format `fmt` ("open" = unchanged)."""
    if fmt == "open":
        return problem.question, None
    if fmt == "mcq":
        m = make_mcq(problem)
        return m.question, m
    if fmt == "cloze":
        return make_cloze(problem), None
    raise VariantError(f"format must be one of {FORMATS}, got {fmt!r}")


def check_reformulable(problems: list[MathProblem] | tuple[MathProblem, ...],
                       formats: tuple[str, ...] = ("mcq", "cloze")) -> None:
    """Raise `VariantError` naming the first problem that cannot be posed in every format.

    A trainer calls this at start-up for a format curriculum, so that a dataset the
    variants cannot keep the answer of fails before training, not at its first MCQ.
    """
    for p in problems:
        for fmt in formats:
            variant(p, fmt)
