"""OpenRLHF `--train.agent_func_path` module: an `AgentExecutor` with expert-prefix guidance.

Point OpenRLHF at this file (`python -c "import lppo_sampling.integrations.openrlhf_agent
as m; print(m.__file__)"`). Per rollout, `reset` reads the label JSON written by
`lppo_sampling.integrations.openrlhf.write_prompts`, picks this rollout's slot prefix
and returns `prompt + prefix` as the observation: OpenRLHF trains only the action
ranges, so the prefix is context, never a training target. `step` scores prefix +
response, logs the outcome to `$LPPO_OBSERVATION_LOG` and ends the episode.

Slot assignment: OpenRLHF gives a rollout no slot index, so each process counts the
rollouts it has seen per sample_id and uses `count % G`; when the G rollouts of a
prompt run in one vLLM engine (OpenRLHF's default dispatch of a prompt's samples),
each slot is used exactly once, as planned.

To use your own scorer, write a two-line file:
`from lppo_sampling.integrations.openrlhf_agent import make_agent_executor`
`AgentExecutor = make_agent_executor(score_fn=my_score)`.

Tested with openrlhf 0.11.2's `MultiTurnAgentExecutor` (installed with --no-deps).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from lppo_sampling.integrations._common import require
from lppo_sampling.integrations.openrlhf import append_observation, decode_label, default_score

require("openrlhf", "0.11", below="0.12", purpose="the OpenRLHF agent executor")

from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor  # noqa: E402

__all__ = ["AgentExecutor", "AgentInstance", "make_agent_executor"]


def make_agent_executor(score_fn: Callable[[str, str], float] | None = None,
                        log_path: str | None = None) -> type:
    """Build an `AgentExecutor` class (zero-argument constructor, as OpenRLHF requires).

    Args:
        score_fn: `f(prefix + response, answer) -> reward in [0, 1]`; default exact
            match of the final answer.
        log_path: observation log; default `$LPPO_OBSERVATION_LOG` at call time.
    """
    score = score_fn or default_score
    counts: dict[Any, int] = defaultdict(int)
    lock = threading.Lock()

    class AgentInstance(AgentInstanceBase):
        """One rollout: prefix on reset, one scored step."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.meta: dict = {}
            self.prefix = ""

        async def reset(self, states: dict, **kwargs: Any) -> dict:
            """Continue the prompt with this rollout's planned prefix (prompt side)."""
            self.meta = decode_label(states["label"])
            prefixes = self.meta["prefixes"]
            if prefixes:
                with lock:
                    slot = counts[self.meta["sample_id"]] % len(prefixes)
                    counts[self.meta["sample_id"]] += 1
                self.prefix = prefixes[slot]
            return {"observation": states["observation"] + self.prefix}

        async def step(self, states: dict, **kwargs: Any) -> dict:
            """Score prefix + response, log it, end the episode."""
            r = float(score(self.prefix + states["action_text"], self.meta["answer"]))
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"score_fn returned {r}; rewards must lie in [0, 1]")
            append_observation(self.meta["sample_id"], r, bool(self.prefix), log_path)
            t = torch.tensor(r)
            return {"rewards": t, "scores": t, "environment_feedback": "", "done": True,
                    "sampling_params": states.get("sampling_params"),
                    "extra_logs": {"lppo/guided": torch.tensor(float(bool(self.prefix)))}}

    class AgentExecutor(MultiTurnAgentExecutor):
        """What `--train.agent_func_path` loads: one `AgentInstance` per rollout."""

        def __init__(self) -> None:
            super().__init__(AgentInstance)

    return AgentExecutor


AgentExecutor = make_agent_executor()
AgentInstance = AgentExecutor().agent_instance_cls
