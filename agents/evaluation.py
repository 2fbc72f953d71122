"""Held-out evaluation: pass@1 (greedy) and unbiased pass@k.

pass@k uses the unbiased estimator of Chen et al. 2021 (Codex): with n samples of which
c are correct, pass@k = 1 − C(n−c, k) / C(n, k), averaged over problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb
from typing import Any

import numpy as np

from agents.rollout.base import RolloutBackend, RolloutRequest, SamplingConfig

__all__ = ["pass_at_k", "evaluate", "heldout_accuracy"]


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
) -> dict[str, float]:
    """Greedy pass@1 on a held-out set, with its wall time (`time/eval`); {} if no problems.

    The one evaluation every training loop logs, so runs of different loops compare.
    """
    import time

    if not problems:
        return {}
    t0 = time.perf_counter()
    out = evaluate(backend, problems, messages_fn, verifier, temperature=0.0,
                   max_new_tokens=max_new_tokens, seed=seed)
    out["time/eval"] = time.perf_counter() - t0
    return out
