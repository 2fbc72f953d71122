"""Held-out evaluation: pass@1 (greedy) and unbiased pass@k.

pass@k uses the unbiased estimator of Chen et al. 2021 (Codex): with n samples of which
c are correct, pass@k = 1 − C(n−c, k) / C(n, k), averaged over problems.

Per-problem records (`records=` / `log_path=`): one line per held-out problem and
evaluation (step, problem id, correct, response length), so two arms evaluated on the same
problems can be compared with paired tests (McNemar, paired bootstrap) instead of only their
aggregate accuracies. `read_eval_problems` reads them back (last record wins on a resumed
run that evaluated a step twice).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from math import comb
from pathlib import Path
from typing import Any

import numpy as np

from agents.rollout.base import RolloutBackend, RolloutRequest, SamplingConfig

__all__ = ["pass_at_k", "evaluate", "heldout_accuracy", "read_eval_problems"]

EVAL_PROBLEMS_FILE = "eval_problems.jsonl"
"""Per-problem evaluation log in a run directory (one JSON object per problem and step)."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `c` correct out of `n` samples."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k expects 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def evaluate(
    backend: RolloutBackend,
    problems: Sequence[Any],
    messages_fn: Any,
    verifier: Any,
    *,
    n_samples: int = 1,
    ks: Sequence[int] = (1,),
    temperature: float = 0.0,
    max_new_tokens: int = 96,
    seed: int = 0,
    records: list[dict] | None = None,
) -> dict[str, float]:
    """Accuracy of `backend`'s policy on `problems`.

    Args:
        backend: any `RolloutBackend`.
        problems: `MathProblem`s (id, answer).
        messages_fn: problem -> chat messages (e.g. `MathReasoningEnv.messages`).
        verifier: a `MathVerifier` (`verify_batch`).
        n_samples: samples per problem; 1 with temperature 0 is greedy pass@1.
        ks: which pass@k to report (each k <= n_samples).
        temperature: 0 for greedy.
        max_new_tokens: generation cap.
        seed: sampling seed.
        records: if given, one dict per problem is appended: `problem_id`, `correct`
            (passes out of `n_samples`, an int; with one sample 0 or 1), `n_samples`,
            `response_len` (mean response tokens).

    Returns:
        {"eval/accuracy": mean reward, "eval/pass@k": ..., "eval/n_problems": ...}.
    """
    if not problems:
        raise ValueError("evaluate expects at least one problem")
    bad = [k for k in ks if not 1 <= k <= n_samples]
    if bad:
        raise ValueError(
            f"evaluate expects every k in ks to lie in [1, n_samples={n_samples}], got {bad}"
        )
    requests = [RolloutRequest(messages_fn(p), n=n_samples, tag=i) for i, p in enumerate(problems)]
    rollouts = backend.generate(
        requests,
        SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed),
    )
    answers = [problems[r.request_index].answer for r in rollouts]
    results = verifier.verify_batch([r.full_text for r in rollouts], answers)
    rewards = np.array([res.reward for res in results]).reshape(len(problems), n_samples)
    correct = (rewards >= 1.0).sum(axis=1)
    if records is not None:
        lens = np.array([len(r.response_ids) for r in rollouts], dtype=np.float64)
        lens = lens.reshape(len(problems), n_samples).mean(axis=1)
        for p, c, ln in zip(problems, correct, lens, strict=True):
            records.append({"problem_id": str(p.id), "correct": int(c),
                            "n_samples": n_samples, "response_len": float(ln)})
    out = {
        "eval/accuracy": float(rewards.mean()),
        "eval/n_problems": float(len(problems)),
        "eval/response_len_mean": float(np.mean([len(r.response_ids) for r in rollouts])),
    }
    for k in ks:
        out[f"eval/pass@{k}"] = float(np.mean([pass_at_k(n_samples, int(c), k) for c in correct]))
    return out


def heldout_accuracy(
    backend: RolloutBackend,
    problems: Sequence[Any],
    messages_fn: Any,
    verifier: Any,
    *,
    max_new_tokens: int,
    seed: int = 0,
    log_path: str | os.PathLike[str] | None = None,
    step: int | None = None,
    subset: Sequence[Any] = (),
) -> dict[str, float]:
    """Greedy pass@1 on a held-out set, with its wall time (`time/eval`); {} if no problems.

    The one evaluation every training loop logs, so runs of different loops compare.
    With `log_path`, one line per problem (`step`, `problem_id`, `correct`,
    `response_len`) is appended to that JSONL file (see `EVAL_PROBLEMS_FILE`). With
    `subset` (problems, all among `problems`), `eval/subset_accuracy` is the accuracy on
    them: the fixed subset a run evaluates between its first and last evaluation.
    """
    import time

    if not problems:
        return {}
    t0 = time.perf_counter()
    records: list[dict] = []
    out = evaluate(backend, problems, messages_fn, verifier, temperature=0.0,
                   max_new_tokens=max_new_tokens, seed=seed, records=records)
    out["time/eval"] = time.perf_counter() - t0
    if subset:
        out["eval/subset_accuracy"] = subset_accuracy(records, subset)
    if log_path is not None:
        path = Path(log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            for r in records:
                f.write(json.dumps({"step": step, **r}) + "\n")
    return out


def subset_accuracy(records: Sequence[dict], subset: Sequence[Any]) -> float:
    """Accuracy over the per-problem `records` of the problems in `subset`.

    Raises:
        ValueError: naming a subset problem the records lack (it was not evaluated).
    """
    by_id = {r["problem_id"]: r for r in records}
    ids = [str(p.id) for p in subset]
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"subset problem {missing[0]!r} was not evaluated")
    return sum(by_id[i]["correct"] / by_id[i]["n_samples"] for i in ids) / len(ids)


def read_eval_problems(path: str | os.PathLike[str]) -> dict[int, dict[str, int]]:
    """`{step: {problem_id: correct}}` from a per-problem log; the last record of a pair wins.

    A torn last line (a run killed mid-write) is skipped; a missing file gives {}.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[int, dict[str, int]] = {}
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.setdefault(int(r["step"]), {})[str(r["problem_id"])] = int(r["correct"])
    return out
