"""Expert-solution prefixes for PG-sampling (LPPO): split into steps, cut at or inside a step.

Two cuts: at a step boundary (`"step"`, prose solutions: a prefix a tutor could give), or
inside a step, just after its `=` (`"mid"`, for solutions whose every step computes a
value, such as the `"chain_long"` data: "37 - 18 = 19." is cut to "37 - 18 ="). The mid
cut always leaves the model a computation to finish; a prefix that ends on a partial sum
instead invites the model to answer with that partial sum. A problem chooses the mid cut
with the tag `prefix_cut:mid`. Why the leak guard: a prefix that states the final answer
turns a guided rollout into copying, and its reward says nothing about the policy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol

from lppo_env.answers import contains_answer
from lppo_env.problems import MathProblem

__all__ = [
    "MID_CUT_TAG",
    "Prefix",
    "can_guide",
    "TokenCounter",
    "count_tokens",
    "cut_mode",
    "make_prefix",
    "split_steps",
    "step_head",
]

MID_CUT_TAG = "prefix_cut:mid"
"""A problem with this tag gets prefixes cut inside a step (see `make_prefix`)."""

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
        text: the prefix text ("" = unguided). A step cut ends with a newline so the
            model starts the next step on a fresh line; a mid cut ends with "=" so the
            model's first tokens are that step's result.
        n_steps: whole solution steps in the prefix (a mid cut's partial step excluded).
        total_steps: steps in the solution (the denominator of the ratio).
        ratio: the requested ratio in [0, 1].
        n_tokens: prefix length in tokens when a tokenizer was given, else None.
    """

    text: str
    n_steps: int
    total_steps: int
    ratio: float
    n_tokens: int | None = None
    partial: bool = False

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


def step_head(step: str) -> str | None:
    """The step up to and including its first `=` ("37 - 18 = 19." -> "37 - 18 ="), or None.

    None when the step has no `=` with something before it: no computation to leave open.
    """
    i = step.find("=")
    if i <= 0 or not step[:i].strip():
        return None
    return step[: i + 1]


def cut_mode(problem: MathProblem) -> str:
    """`"mid"` for problems tagged `MID_CUT_TAG`, else `"step"`."""
    return "mid" if MID_CUT_TAG in problem.tags else "step"


def _mid_prefix(steps: tuple[str, ...], ratio: float, answer: str) -> tuple[str, int]:
    """Mid cut: the steps before a computing step (one with an `=`), then that step's head.

    The computing steps are the cut candidates; the k-th of n is chosen with
    k = min(floor(ratio * n), n - 1), so any ratio > 0 gives a prefix and a step that only
    restates the question is never where a prefix ends. The leak guard moves the cut back
    one candidate at a time.
    """
    candidates = [i for i, step in enumerate(steps) if step_head(step) is not None]
    k = min(math.floor(ratio * len(candidates)), len(candidates) - 1)
    while k >= 0:
        c = candidates[k]
        text = "\n".join([*steps[:c], step_head(steps[c])])  # type: ignore[list-item]
        if not contains_answer(text, answer):
            return text, c
        k -= 1
    return "", 0


def make_prefix(
    problem: MathProblem,
    ratio: float,
    tokenizer: TokenCounter | None = None,
    cut: str | None = None,
) -> Prefix:
    """Build the expert prefix of `problem` covering about `ratio` of its steps.

    The cut is at `round(ratio * total_steps)` steps, then moved back so that (a) at
    least one step is left for the model and (b) no step in the prefix states the
    final answer (see `contains_answer`); the guard stops at the *first* step that
    leaks, so the prefix is always a contiguous head of the solution.

    With `cut="mid"` (the default for problems tagged `MID_CUT_TAG`) the prefix ends
    inside a computing step, after its `=` (see `step_head`): of the n steps with an `=`,
    the k-th with k = min(floor(ratio * n), n - 1), preceded by every step before it. Any
    ratio > 0 then gives a prefix unless even the first computing step's head would leak
    the answer.

    Args:
        problem: the problem; without steps the prefix is always empty.
        ratio: fraction of the steps to reveal, in [0, 1]; 0 gives no prefix.
        tokenizer: optional; when given, `n_tokens` is filled.
        cut: `"step"` or `"mid"`; None picks by the problem's tags (`cut_mode`).

    Returns:
        A `Prefix`; its `text` never contains the final answer.
    """
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"make_prefix expects ratio in [0, 1], got {ratio!r}")
    mode = cut_mode(problem) if cut is None else cut
    if mode not in ("step", "mid"):
        raise ValueError(f"make_prefix expects cut 'step' or 'mid', got {cut!r}")
    steps = problem.steps
    total = len(steps)
    if mode == "mid":
        text, k = _mid_prefix(steps, ratio, problem.answer) if ratio > 0 and total else ("", 0)
        n_tokens = None if tokenizer is None else (count_tokens(text, tokenizer) if text else 0)
        return Prefix(text=text, n_steps=k, total_steps=total, ratio=float(ratio),
                      n_tokens=n_tokens, partial=text.endswith("="))
    want = min(math.floor(ratio * total + 0.5), max(total - 1, 0))
    k = 0
    while k < want and not contains_answer("\n".join(steps[: k + 1]), problem.answer):
        k += 1
    text = "\n".join(steps[:k]) + "\n" if k else ""
    n_tokens = None if tokenizer is None else (count_tokens(text, tokenizer) if text else 0)
    return Prefix(text=text, n_steps=k, total_steps=total, ratio=float(ratio), n_tokens=n_tokens)


def can_guide(problem: MathProblem) -> bool:
    """Whether some ratio > 0 gives `problem` a non-empty prefix.

    A guide plans guided slots only for such problems (register `has_solution` with it):
    a planned guided slot without a usable prefix would silently run unguided. With the
    mid cut, the leak guard backs off to the first computing step's head, so one check
    decides for every ratio > 0; with the step cut, the longest prefix decides.
    """
    if cut_mode(problem) == "mid":
        return make_prefix(problem, 1e-9).guided
    return make_prefix(problem, 1.0).guided
