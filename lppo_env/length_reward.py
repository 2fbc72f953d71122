r"""Composite reward of the length curriculum ("Train Long, Think Short", arXiv 2508.08940).

    reward = (w_correct·correct + w_length·efficiency + w_format·formatted) / Σw

- correct: 1 when the final answer verifies, else 0;
- efficiency: 1 − tokens / budget for a correct completion within budget, else 0 (a
  short wrong answer earns nothing, so the model cannot trade correctness for brevity);
- formatted: 1 when the completion puts its final answer in `\boxed{}` (our format's
  structural tag).

Normalising by the weights' sum keeps the reward in [0, 1], as the sampler requires. A
completion longer than its budget scores 0 (the rollout engine should have cut it).
"""

from __future__ import annotations

from lppo_env.answers import last_boxed

__all__ = ["length_reward", "formatted"]


def formatted(text: str) -> bool:
    r"""Whether the completion ends with a well-formed `\boxed{}` answer."""
    return bool(last_boxed(text))


def length_reward(
    correct: bool, n_tokens: int, budget: int, is_formatted: bool,
    w_correct: float = 1.0, w_length: float = 0.5, w_format: float = 0.25,
) -> float:
    """The composite reward in [0, 1] (0 over budget)."""
    if budget < 1 or n_tokens < 0:
        raise ValueError(f"length_reward expects budget >= 1 and n_tokens >= 0, got {budget}, "
                         f"{n_tokens}")
    total = w_correct + w_length + w_format
    if min(w_correct, w_length, w_format) < 0 or total <= 0:
        raise ValueError("length_reward expects weights >= 0 with a positive sum")
    if n_tokens > budget:
        return 0.0
    eff = (1.0 - n_tokens / budget) if correct else 0.0
    return (w_correct * float(correct) + w_length * eff + w_format * float(is_formatted)) / total
