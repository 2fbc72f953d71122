"""Per-problem evaluation records: what paired tests between arms are computed from."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.evaluation import (
    EVAL_PROBLEMS_FILE,
    evaluate,
    heldout_accuracy,
    read_eval_problems,
    subset_accuracy,
)
from agents.rollout.base import Rollout
from lppo_env import MathProblem, MathVerifier


class ScriptedBackend:
    """Answers problem i with `answers[i]`, response length i + 1 tokens."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    def generate(self, requests, sampling):
        out = []
        for k, req in enumerate(requests):
            for _ in range(req.n):
                text = f"The answer is \\boxed{{{self.answers[k]}}}."
                out.append(Rollout([1], [], [7] * (k + 1), [0.0] * (k + 1), text,
                                   request_index=k, tag=req.tag))
        return out

    def sync_weights(self, model) -> None:
        pass


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier() as v:
        yield v


PROBLEMS = [MathProblem(id=f"p{i}", question=f"{i}+1?", answer=str(i + 1)) for i in range(5)]


def test_records_name_each_problem_with_its_verdict_and_length(verifier, tmp_path) -> None:
    answers = ["1", "0", "3", "4", "9"]  # right, wrong, right, right, wrong
    log = tmp_path / EVAL_PROBLEMS_FILE
    out = heldout_accuracy(ScriptedBackend(answers), PROBLEMS, lambda p: [
        {"role": "user", "content": p.question}], verifier, max_new_tokens=8, log_path=log, step=3)
    assert out["eval/accuracy"] == pytest.approx(3 / 5)
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == [p.id for p in PROBLEMS]
    assert [r["correct"] for r in rows] == [1, 0, 1, 1, 0]
    assert [r["response_len"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["step"] for r in rows} == {3}
    # the mean of the records is the logged accuracy
    assert sum(r["correct"] for r in rows) / len(rows) == out["eval/accuracy"]


def test_read_back_last_record_wins_and_torn_line_skipped(verifier, tmp_path) -> None:
    log = tmp_path / EVAL_PROBLEMS_FILE
    msgs = lambda p: [{"role": "user", "content": p.question}]  # noqa: E731
    heldout_accuracy(ScriptedBackend(["0"] * 5), PROBLEMS, msgs, verifier, max_new_tokens=8,
                     log_path=log, step=0)
    heldout_accuracy(ScriptedBackend(["1", "2", "3", "4", "5"]), PROBLEMS, msgs, verifier,
                     max_new_tokens=8, log_path=log, step=0)  # resumed run, same step again
    with log.open("a") as f:
        f.write('{"step": 5, "problem_')
    got = read_eval_problems(log)
    assert got == {0: {p.id: 1 for p in PROBLEMS}}
    assert read_eval_problems(tmp_path / "missing.jsonl") == {}


def test_records_count_passes_with_several_samples(verifier) -> None:
    records: list[dict] = []
    evaluate(ScriptedBackend(["1", "9", "3", "9", "5"]), PROBLEMS, lambda p: [
        {"role": "user", "content": p.question}], verifier, n_samples=2, ks=(1, 2),
        records=records)
    assert [r["correct"] for r in records] == [2, 0, 2, 0, 2]
    assert all(r["n_samples"] == 2 for r in records)


def test_subset_accuracy_counts_only_the_subset(verifier) -> None:
    answers = ["1", "0", "3", "4", "9"]  # right, wrong, right, right, wrong
    msgs = lambda p: [{"role": "user", "content": p.question}]  # noqa: E731
    out = heldout_accuracy(ScriptedBackend(answers), PROBLEMS, msgs, verifier,
                           max_new_tokens=8, subset=[PROBLEMS[1], PROBLEMS[4], PROBLEMS[0]])
    assert out["eval/accuracy"] == pytest.approx(3 / 5)
    assert out["eval/subset_accuracy"] == pytest.approx(1 / 3)  # p1 wrong, p4 wrong, p0 right
    with pytest.raises(ValueError, match="'q9' was not evaluated"):
        heldout_accuracy(ScriptedBackend(answers), PROBLEMS, msgs, verifier, max_new_tokens=8,
                         subset=[MathProblem(id="q9", question="?", answer="1")])


@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 4), st.booleans()), min_size=1,
                max_size=30))
def test_subset_accuracy_is_the_mean_pass_rate_over_the_subset(rows) -> None:
    """Deliberate bugs this catches (tried): averaging over every record, ignoring
    `n_samples` (passes counted as accuracy), averaging over records not in the subset."""
    records = [{"problem_id": f"p{i}", "correct": min(c, n), "n_samples": n}
               for i, (n, c, _) in enumerate(rows)]
    chosen = [MathProblem(id=f"p{i}", question="?", answer="1")
              for i, (_, _, inside) in enumerate(rows) if inside]
    if not chosen:
        return
    want = sum(min(c, n) / n for n, c, inside in rows if inside) / len(chosen)
    assert subset_accuracy(records, chosen) == pytest.approx(want)
