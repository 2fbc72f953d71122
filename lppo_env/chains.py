r"""Dependency chains of short problems (h1): the answer of one feeds the next.

A chain of depth d poses d problems in order. Problem k ≥ 2 has one of its numbers
rewritten in terms of the previous answer: the first integer n of its question becomes
"(A + c)" with A the previous problem's answer and c = n − A, so the problem keeps its
meaning and its answer but cannot be solved without the one before. The chain's answer
is the last problem's; its worked solution chains the links' solutions with the
substitution written out, so expert prefixes and the answer-leak guard work as for any
problem. Any problems with integer answers and an integer in the question compose:
our procedural arithmetic, GSM8K, GSM-Symbolic. The first tag of a chain is
"depth:d", the category the h1 curriculum reads.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from lppo_env.answers import parse_number
from lppo_env.prefix import split_steps
from lppo_env.problems import MathProblem

__all__ = ["composable", "compose_chain", "compose_chains", "chain_problems"]

_INT = re.compile(r"(?<![\w.\-])\d+(?![\w]|\.\d)")
_NAMES = "ABCDEFGHJKLMNPQRSTUVWXYZ"


def _int_answer(p: MathProblem) -> int | None:
    v = parse_number(p.answer)
    return int(v) if v is not None and v.denominator == 1 else None


def composable(p: MathProblem) -> bool:
    """An integer answer and an integer in the question (a link can feed and be fed)."""
    return _int_answer(p) is not None and _INT.search(p.question) is not None


def _fed(question: str, name: str, prev: int) -> tuple[str, int, int]:
    """The question with its first integer n written as (name ± c); returns (text, n, c)."""
    m = _INT.search(question)
    assert m is not None
    n = int(m.group())
    c = n - prev
    expr = f"({name} + {c})" if c >= 0 else f"({name} - {-c})"
    return question[: m.start()] + expr + question[m.end():], n, c


def _solution_body(p: MathProblem) -> list[str]:
    if p.steps:
        return list(p.steps)
    return [f"The answer to this problem is {p.answer}."]


def compose_chain(links: Sequence[MathProblem]) -> MathProblem:
    """One chain from composable problems, in order (depth = len(links))."""
    if not links:
        raise ValueError("compose_chain expects at least one problem")
    bad = [p.id for p in links if not composable(p)]
    if bad:
        raise ValueError(f"compose_chain expects integer answers and an integer in each "
                         f"question; not composable: {bad[:3]}")
    d = len(links)
    q_lines = [f"Solve these {d} problems in order; each uses the answer of the one before. "
               f"Give the answer to problem {d}."] if d > 1 else []
    s_lines: list[str] = []
    prev: int | None = None
    for k, p in enumerate(links):
        name = _NAMES[(k - 1) % len(_NAMES)] if k else ""
        if prev is None:
            q = p.question
        else:
            q, n, c = _fed(p.question, name, prev)
            q = f"Let {name} be the answer to problem {k}. {q}"
            s_lines.append(f"Problem {k + 1}: {name} = {prev}, so "
                           f"{name} {'+' if c >= 0 else '-'} {abs(c)} = {n}.")
        q_lines.append(f"Problem {k + 1}: {q}" if d > 1 else q)
        body = _solution_body(p)
        if k < d - 1:
            s_lines += body + [f"The answer to problem {k + 1} is {p.answer}."]
        else:
            s_lines += body
        prev = _int_answer(p)
    last = links[-1]
    solution = "\n".join(s_lines + [f"The answer is \\boxed{{{last.answer}}}."])
    digest = hashlib.blake2b("\x00".join(p.id for p in links).encode(), digest_size=6).hexdigest()
    return MathProblem(
        id=f"chain{d}:{digest}",
        question="\n".join(q_lines),
        answer=last.answer,
        solution=solution,
        steps=split_steps(solution),
        source="chain:" + (links[0].source or "problems"),
        tags=(f"depth:{d}", "chain", *(t for t in last.tags if t.startswith("difficulty"))),
    )


def compose_chains(
    problems: Sequence[MathProblem], depths: Sequence[int] = (1, 2, 3, 4),
    per_depth: int = 200, seed: int = 0,
) -> tuple[MathProblem, ...]:
    """`per_depth` distinct chains at each depth, links drawn without repeats in a chain.

    Raises:
        ValueError: fewer composable problems than the deepest chain needs, or a bad depth.
    """
    pool = [p for p in problems if composable(p)]
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in depths):
        raise ValueError(f"compose_chains expects depths >= 1, got {list(depths)}")
    if not depths or max(depths) > len(pool):
        raise ValueError(f"compose_chains expects at least max(depths) composable problems, "
                         f"got {len(pool)} of {len(problems)}")
    rng = np.random.default_rng(seed)
    out: dict[str, MathProblem] = {}
    for d in depths:
        made, tries = 0, 0
        while made < per_depth and tries < 20 * per_depth:
            tries += 1
            chain = compose_chain([pool[i] for i in rng.choice(len(pool), d, replace=False)])
            if chain.id not in out:
                out[chain.id] = chain
                made += 1
    return tuple(out.values())


def chain_problems(
    size: int = 800, seed: int = 0, depths: Sequence[int] = (1, 2, 3, 4), difficulty: int = 1,
) -> tuple[MathProblem, ...]:
    """Embedded dataset "h1_chains": arithmetic chains, `size // len(depths)` per depth."""
    from lppo_env.default_data import arithmetic_problems

    depths = tuple(depths)
    per = max(1, size // max(1, len(depths)))
    base = arithmetic_problems(size=max(50, 2 * per), seed=seed, difficulty=difficulty)
    return compose_chains(base, depths=depths, per_depth=per, seed=seed)
