r"""Embedded datasets that need no download, generated with `reasoning-gym`.

Why arithmetic is the default: the default policy (SmolLM2-135M-Instruct) solves
~10-14% of one-digit chain sums and ~0% of GSM-style word problems. Learning progress
and prefix guidance need a start between "never" and "always", so `"default"` is
chain sums with 2-3 one-digit terms. reasoning-gym gives no worked solution for them,
so one is built: one partial sum per line, then "The answer is \boxed{N}.", which
gives the prefix builder real steps to cut.

`"chain_long"` is the task for prefix guidance: 4-6 terms of two digits, a worked
solution in which every line computes one partial sum (no restatement of the
question), and the tag `prefix_cut:mid`, so `make_prefix` cuts inside a step
("... 37 - 18 =") and the model is always left a computation to finish.

Everything is deterministic for a seed: reasoning-gym seeds each item from
`seed + index`, and duplicates are removed in generation order. Ids are derived from
the content (the expression, or a hash of the question), so a problem keeps its id
whatever `size` or `seed` produced it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from lppo_env.errors import DataError
from lppo_env.prefix import split_steps
from lppo_env.problems import MathProblem

__all__ = [
    "DATASETS",
    "arithmetic_config",
    "arithmetic_solution",
    "arithmetic_problems",
    "chain_long_problems",
    "default_problems",
    "gsm_symbolic_problems",
]

_MAX_DRAWS_PER_PROBLEM = 16


def arithmetic_config(difficulty: int) -> dict[str, int]:
    """reasoning-gym `chain_sum` settings for a difficulty level >= 1.

    Level 1: 2-3 terms, 1 digit (the default); level 2: 2-3 terms, 1-2 digits (the
    measured ~10% setting); each further pair of levels adds a term and each further
    two levels a digit, so difficulty grows without bound.
    """
    if isinstance(difficulty, bool) or not isinstance(difficulty, int) or difficulty < 1:
        raise ValueError(f"arithmetic expects difficulty to be an integer >= 1, got {difficulty!r}")
    min_terms = 2 + (difficulty - 1) // 2
    max_digits = 1 + difficulty // 2
    return {
        "min_terms": min_terms,
        "max_terms": min_terms + 1,
        "min_digits": max(1, max_digits - 1),
        "max_digits": max_digits,
    }


def arithmetic_solution(expression: str, restate: bool = True) -> tuple[str, int]:
    r"""Worked left-to-right solution of a `+`/`-` chain such as "4 - 1 + 7".

    Args:
        expression: the chain, terms and operators separated by spaces.
        restate: start with "We compute ... from left to right." (the default data's
            format); False gives a solution whose every line computes something.

    Returns:
        (solution text, value). The text has one partial sum per line and ends with
        "The answer is \boxed{value}.".
    """
    tokens = expression.split()
    if len(tokens) < 3 or len(tokens) % 2 == 0:
        raise ValueError(f"arithmetic_solution expects 'a op b [op c ...]', got {expression!r}")
    try:
        total = int(tokens[0])
        lines = [f"We compute {expression} from left to right."] if restate else []
        for op, term in zip(tokens[1::2], tokens[2::2], strict=True):
            value = int(term)
            if op == "+":
                new = total + value
            elif op == "-":
                new = total - value
            else:
                raise ValueError(
                    f"arithmetic_solution expects + or -, got {op!r} in {expression!r}"
                )
            lines.append(f"{total} {op} {value} = {new}.")
            total = new
    except ValueError as e:
        raise ValueError(f"arithmetic_solution expects integer terms, got {expression!r}") from e
    lines.append(f"The answer is \\boxed{{{total}}}.")
    return "\n".join(lines), total


def _unique_items(
    task: str, size: int, seed: int, config: dict[str, Any], key: Callable[[dict], str]
) -> Iterator[tuple[str, dict]]:
    import reasoning_gym  # 1.5 s import: only when an embedded dataset is built

    seen: set[str] = set()
    draws = 0
    batch = max(size, 64)
    while len(seen) < size:
        if draws >= size * _MAX_DRAWS_PER_PROBLEM:
            raise DataError(
                f"expected {size} distinct problems, got only {len(seen)} after {draws} draws; "
                "lower size or raise difficulty",
                file=task,
            )
        # A disjoint seed range per batch keeps earlier items identical when size grows.
        dataset = reasoning_gym.create_dataset(task, size=batch, seed=seed + draws, **config)
        for item in dataset:
            draws += 1
            k = key(item)
            if k not in seen:
                seen.add(k)
                yield k, item
                if len(seen) == size:
                    return


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"expected size to be an integer >= 1, got {size!r}")


def _cut_tags(prefix_cut: str) -> tuple[str, ...]:
    if prefix_cut not in ("step", "mid"):
        raise ValueError(f"expected prefix_cut 'step' or 'mid', got {prefix_cut!r}")
    return ("prefix_cut:mid",) if prefix_cut == "mid" else ()


def arithmetic_problems(
    size: int = 2000, seed: int = 0, difficulty: int = 1, prefix_cut: str = "step"
) -> tuple[MathProblem, ...]:
    """Chain sums (`+`/`-`) from reasoning-gym `chain_sum`, with worked solutions.

    Args:
        size: number of distinct problems.
        seed: generation seed.
        difficulty: level >= 1, see `arithmetic_config`.
        prefix_cut: `"step"` (prefixes end after a whole step) or `"mid"` (inside a step,
            before its result: tag `prefix_cut:mid`, see `lppo_env.prefix.make_prefix`).
    """
    _check_size(size)
    extra_tags = _cut_tags(prefix_cut)
    config = arithmetic_config(difficulty)
    problems = []
    for expression, item in _unique_items(
        "chain_sum", size, seed, config, key=lambda it: it["metadata"]["expression"]
    ):
        solution, value = arithmetic_solution(expression)
        if str(value) != str(item["answer"]).strip():
            raise DataError(
                f"expected reasoning-gym answer {value} for {expression!r}, got {item['answer']!r}",
                file="chain_sum", field="answer",
            )
        n_terms = item["metadata"]["num_terms"]
        problems.append(MathProblem(
            id="arith:" + expression.replace(" ", ""),
            question=item["question"],
            answer=str(value),
            solution=solution,
            steps=split_steps(solution),
            source="reasoning_gym/chain_sum",
            tags=("arithmetic", f"difficulty:{difficulty}", f"terms:{n_terms}", *extra_tags),
        ))
    return tuple(problems)


CHAIN_LONG_CONFIG = {"min_terms": 4, "max_terms": 6, "min_digits": 2, "max_digits": 2}
"""reasoning-gym `chain_sum` settings of `"chain_long"`: 4-6 terms of two digits."""


def chain_long_problems(size: int = 2000, seed: int = 0) -> tuple[MathProblem, ...]:
    """Long chain sums (4-6 two-digit terms) whose solution computes on every line.

    Why: prefix guidance needs solutions with content. Each step is one partial sum
    ("37 - 18 = 19."), there are 3-5 of them, and the problems carry the tag
    `prefix_cut:mid` so prefixes end inside a step, just before its result.
    """
    _check_size(size)
    problems = []
    for expression, item in _unique_items(
        "chain_sum", size, seed, CHAIN_LONG_CONFIG, key=lambda it: it["metadata"]["expression"]
    ):
        solution, value = arithmetic_solution(expression, restate=False)
        if str(value) != str(item["answer"]).strip():
            raise DataError(
                f"expected reasoning-gym answer {value} for {expression!r}, got {item['answer']!r}",
                file="chain_sum", field="answer",
            )
        problems.append(MathProblem(
            id="chain:" + expression.replace(" ", ""),
            question=item["question"],
            answer=str(value),
            solution=solution,
            steps=split_steps(solution),
            source="reasoning_gym/chain_sum",
            tags=("arithmetic", "chain_long", f"terms:{item['metadata']['num_terms']}",
                  "prefix_cut:mid"),
        ))
    return tuple(problems)


def default_problems(
    size: int = 2000, seed: int = 0, prefix_cut: str = "step"
) -> tuple[MathProblem, ...]:
    """The default dataset: `arithmetic_problems(size, seed, difficulty=1, prefix_cut)`."""
    return arithmetic_problems(size=size, seed=seed, difficulty=1, prefix_cut=prefix_cut)


def gsm_symbolic_problems(size: int = 1000, seed: int = 0) -> tuple[MathProblem, ...]:
    """GSM-style word problems from reasoning-gym `gsm_symbolic`.

    The worked solution is `metadata["answer_cot"]` (ends with `#### N`). The default
    policy scores ~0% here unguided, so this set exercises prefix guidance.
    """
    _check_size(size)

    def key(item: dict) -> str:
        return hashlib.blake2b(item["question"].encode(), digest_size=6).hexdigest()

    problems = []
    for digest, item in _unique_items("gsm_symbolic", size, seed, {}, key=key):
        solution = item["metadata"].get("answer_cot")
        if not isinstance(solution, str) or not solution.strip():
            raise DataError(f"expected a worked solution string, got {solution!r:.60}",
                            file="gsm_symbolic", field="metadata.answer_cot")
        problems.append(MathProblem(
            id=f"gsm_symbolic:{digest}",
            question=item["question"],
            answer=str(item["answer"]).strip(),
            solution=solution,
            steps=split_steps(solution),
            source="reasoning_gym/gsm_symbolic",
            tags=("gsm_symbolic",),
        ))
    return tuple(problems)


DATASETS: dict[str, Callable[..., tuple[MathProblem, ...]]] = {
    "default": default_problems,
    "arithmetic": arithmetic_problems,
    "gsm_symbolic": gsm_symbolic_problems,
    "chain_long": chain_long_problems,
    "h1_chains": lambda **kw: _h1_chains(**kw),
}


def _h1_chains(**kwargs: object) -> tuple[MathProblem, ...]:
    """Dependency chains of arithmetic problems, tagged "depth:d" (lppo_env.chains)."""
    from lppo_env.chains import chain_problems

    return chain_problems(**kwargs)  # type: ignore[arg-type]
