"""OpenRLHF `--reward.remote_url` module: `reward_func(queries, prompts, labels)`.

Point OpenRLHF at this file (`python -c "import lppo_sampling.integrations.openrlhf_reward
as m; print(m.__file__)"`). Labels are the JSON written by
`lppo_sampling.integrations.openrlhf.write_prompts`. Each scored rollout is appended to
`$LPPO_OBSERVATION_LOG` (if set) for `feed_observations`. This single-turn path cannot
render prefixes (OpenRLHF gives it no reset hook); use `openrlhf_agent` for guidance.

Your own scorer (e.g. lppo_env's math-verify), in a two-line file given to OpenRLHF:
`from lppo_sampling.integrations.openrlhf_reward import make_reward_func`
`reward_func = make_reward_func(score_fn=my_score)`.

Tested with openrlhf 0.11.2's `SingleTurnAgentExecutor` (installed with --no-deps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lppo_sampling.integrations.openrlhf import append_observation, decode_label, default_score

__all__ = ["reward_func", "make_reward_func"]


def _response(query: str, prompt: str) -> str:
    """The generated part of `query` (= decoded prompt + response)."""
    cut = query.rfind(prompt) if prompt else -1
    return query[cut + len(prompt):] if cut >= 0 else query


def make_reward_func(score_fn: Callable[[str, str], float] | None = None,
                     log_path: str | None = None) -> Callable[..., dict]:
    """Build a `reward_func` with your scorer (OpenRLHF loads the name `reward_func`).

    Args:
        score_fn: `f(response, answer) -> reward in [0, 1]`; default exact match of the
            final answer.
        log_path: observation log; default `$LPPO_OBSERVATION_LOG` at call time.
    """
    score = score_fn or default_score

    def reward_func(queries: list[str], prompts: list[str], labels: list[Any],
                    **kwargs: Any) -> dict:
        """Score each response against its label's answer.

        Returns:
            {"rewards": (n,) tensor, "scores": (n,) tensor (drives dynamic filtering),
            "extra_logs": {"lppo/reward": scalar tensor}}.
        """
        if not (len(queries) == len(prompts) == len(labels)):
            raise ValueError(f"queries, prompts, labels differ in length: "
                             f"{len(queries)}, {len(prompts)}, {len(labels)}")
        rewards = []
        for q, p, lab in zip(queries, prompts, labels, strict=True):
            meta = decode_label(lab)
            r = float(score(_response(q, p), meta["answer"]))
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"score_fn returned {r}; rewards must lie in [0, 1]")
            append_observation(meta["sample_id"], r, guided=False, path=log_path)
            rewards.append(r)
        t = torch.tensor(rewards, dtype=torch.float32)
        return {"rewards": t, "scores": t, "extra_logs": {"lppo/reward": t.mean()}}

    return reward_func


reward_func = make_reward_func()
