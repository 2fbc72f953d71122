"""Expert-solution prefixes for PG-sampling (LPPO): split into steps, cut at a step boundary.

Why step boundaries: a prefix that ends mid-equation teaches the model to continue
an arbitrary token stream; a prefix that ends after a whole step is a hint a tutor
could give. Why the leak guard: a prefix that states the final answer turns a guided
rollout into copying, and its reward says nothing about the policy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol

from lppo_env.answers import contains_answer
from lppo_env.problems import MathProblem

__all__ = ["Prefix", "TokenCounter", "split_steps", "make_prefix", "count_tokens"]

_FINAL_LINE_RE = re.compile(r"^\s*####|\\boxed|\\fbox")
_BULLET_ONLY_RE = re.compile(r"^[\s•*\-\d.)]*$")


class TokenCounter(Protocol):
    """Anything with a Hugging Face style `encode` (a `PreTrainedTokenizer` fits)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]:
        """Token ids of `text`."""
        ...


@dataclass(frozen=True)
class Prefix:
    """An expert prefix that starts the assistant turn.

    Attributes:
        text: the prefix text ("" = unguided); ends with a newline when non-empty so
            the model starts the next step on a fresh line.
        n_steps: whole solution steps in the prefix.
        total_steps: steps in the solution (the denominator of the ratio).
        ratio: the requested ratio in [0, 1].
        n_tokens: prefix length in tokens when a tokenizer was given, else None.
    """

    text: str
    n_steps: int
    total_steps: int
    ratio: float
    n_tokens: int | None = None

    @property
    def guided(self) -> bool:
        """Whether the rollout starts from expert text (guided rollouts are tracked apart)."""
        return bool(self.text)


def _sentences(line: str) -> list[str]:
    """Split prose at ". " boundaries outside `$...$` math (MATH solutions are paragraphs)."""
    out: list[str] = []
    start = 0
    in_math = False
    i = 0
    n = len(line)
    while i < n:
        ch = line[i]
        if ch == "$":
            in_math = not in_math
        elif (
            not in_math
            and ch in ".!?"
            and i + 1 < n
            and line[i + 1] == " "
            and i + 2 < n
            and (line[i + 2].isupper() or line[i + 2] in "$\\")
        ):
            out.append(line[start : i + 1].strip())
            start = i + 2
        i += 1
    out.append(line[start:].strip())
    return [s for s in out if s]


def split_steps(solution: str) -> tuple[str, ...]:
    r"""Split a worked solution into reasoning steps, dropping the final-answer statement.

    One non-empty line is one step; a solution written as a single paragraph is split
    into sentences instead. Lines that state the final answer (`#### N`, or any line
    with `\boxed{}`) are dropped: they are never part of a prefix. Bullet-only lines
    and headings that carry no text of their own are merged into the next step.
    """
    lines = [ln.strip() for ln in solution.splitlines() if ln.strip()]
    if len(lines) == 1:
        lines = _sentences(lines[0])
    steps: list[str] = []
    carry = ""
    for line in lines:
        if _FINAL_LINE_RE.search(line):
            continue
        if _BULLET_ONLY_RE.fullmatch(line):
            carry = f"{carry}{line} "
            continue
        steps.append(f"{carry}{line}")
        carry = ""
    return tuple(steps)


def count_tokens(text: str, tokenizer: TokenCounter) -> int:
    """Tokens of `text` without special tokens: how many prefix tokens the loss must mask."""
    return len(tokenizer.encode(text, add_special_tokens=False))


def make_prefix(
    problem: MathProblem, ratio: float, tokenizer: TokenCounter | None = None
) -> Prefix:
    """Build the expert prefix of `problem` covering about `ratio` of its steps.

    The cut is at `round(ratio * total_steps)` steps, then moved back so that (a) at
    least one step is left for the model and (b) no step in the prefix states the
    final answer (see `contains_answer`); the guard stops at the *first* step that
    leaks, so the prefix is always a contiguous head of the solution.

    Args:
        problem: the problem; without steps the prefix is always empty.
        ratio: fraction of the steps to reveal, in [0, 1]; 0 gives no prefix.
        tokenizer: optional; when given, `n_tokens` is filled.

    Returns:
        A `Prefix`; its `text` never contains the final answer.
    """
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"make_prefix expects ratio in [0, 1], got {ratio!r}")
    steps = problem.steps
    total = len(steps)
    want = min(math.floor(ratio * total + 0.5), max(total - 1, 0))
    k = 0
    while k < want and not contains_answer("\n".join(steps[: k + 1]), problem.answer):
        k += 1
    text = "\n".join(steps[:k]) + "\n" if k else ""
    n_tokens = None if tokenizer is None else (count_tokens(text, tokenizer) if text else 0)
    return Prefix(text=text, n_steps=k, total_steps=total, ratio=float(ratio), n_tokens=n_tokens)
