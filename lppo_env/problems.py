"""`MathProblem`, the one record every loader produces and every consumer reads.

Why one frozen record: the sampler keys its statistics on `id`, the prefix builder
reads `steps`, the verifier reads `answer`; none of them should care where a problem
came from. Loaders validate eagerly so that a problem that exists is a usable problem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lppo_env.errors import DataError, DuplicateIdError

__all__ = ["MathProblem", "check_unique_ids", "split_problems"]


@dataclass(frozen=True)
class MathProblem:
    r"""One math problem with its gold answer and, optionally, a worked solution.

    Attributes:
        id: stable key, unique within a dataset (the sampler's sample key).
        question: the problem statement shown to the model.
        answer: the gold final answer as text (e.g. "72", "\frac{1}{2}").
        solution: the full worked solution as text, or None when the source has none.
        steps: the worked solution split into reasoning steps, *without* the final-answer
            line; empty when there is no solution. Expert prefixes are cut from these.
        source: where the problem came from (e.g. "gsm8k", "default", a file name).
        tags: free-form labels (difficulty, topic) used by curricula and SAI-DPO clustering.
    """

    id: str
    question: str
    answer: str
    solution: str | None = None
    steps: tuple[str, ...] = ()
    source: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("id", "question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise DataError(
                    f"expected a non-empty string, got {value!r:.80}", field=name
                )
        if self.solution is not None and not isinstance(self.solution, str):
            raise DataError(f"expected str or None, got {type(self.solution).__name__}",
                            field="solution")
        if not isinstance(self.steps, tuple) or not all(isinstance(s, str) for s in self.steps):
            raise DataError(f"expected a tuple of str, got {self.steps!r:.80}", field="steps")
        if not isinstance(self.tags, tuple) or not all(isinstance(t, str) for t in self.tags):
            raise DataError(f"expected a tuple of str, got {self.tags!r:.80}", field="tags")

    @property
    def has_solution(self) -> bool:
        """Whether an expert prefix can be built (PG-sampling needs at least one step)."""
        return len(self.steps) > 0


def check_unique_ids(
    problems: Iterable[MathProblem],
    *,
    file: str | None = None,
    rows: Sequence[int] | None = None,
) -> None:
    """Raise `DuplicateIdError` on the first repeated id, naming both rows.

    Why an error, not a dedup: two rows with one id would silently merge their sampler
    statistics, and silently dropping either loses data.

    Args:
        problems: the problems, in file order.
        file: the file they came from, for the message.
        rows: each problem's row in that file (e.g. JSONL line numbers when blank lines
            were skipped); default 1, 2, 3, ...
    """
    seen: dict[str, int] = {}
    numbered = zip(rows, problems, strict=True) if rows is not None else enumerate(problems, 1)
    for row, problem in numbered:
        if problem.id in seen:
            raise DuplicateIdError(
                f"expected unique ids, got {problem.id!r} again (first at row {seen[problem.id]})",
                file=file,
                row=row,
                field="id",
            )
        seen[problem.id] = row


def _split_key(problem_id: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{problem_id}".encode(), digest_size=16).digest()


def split_problems(
    problems: Sequence[MathProblem], n_eval: int, *, seed: int = 0
) -> tuple[tuple[MathProblem, ...], tuple[MathProblem, ...]]:
    """Split problems into a training set and a fixed held-out set of `n_eval` problems.

    The held-out set is the `n_eval` problems with the smallest keyed hash of their id,
    so it depends only on the ids and the seed: not on the order of `problems`, and
    adding problems to the pool never moves an existing problem from train to eval
    unless it is displaced by a smaller hash. Both parts keep the input order.

    Args:
        problems: the pool, with unique ids.
        n_eval: held-out size, 0 <= n_eval <= len(problems).
        seed: selects a different held-out set.

    Returns:
        (train, held_out), disjoint, together exactly `problems`.
    """
    if not 0 <= n_eval <= len(problems):
        raise ValueError(f"split_problems expects 0 <= n_eval <= {len(problems)}, got {n_eval}")
    check_unique_ids(problems)
    ranked = sorted(range(len(problems)), key=lambda i: _split_key(problems[i].id, seed))
    held = set(ranked[:n_eval])
    train = tuple(p for i, p in enumerate(problems) if i not in held)
    held_out = tuple(p for i, p in enumerate(problems) if i in held)
    return train, held_out
