"""A verl agent loop that starts the assistant turn with an expert prefix (LPPO PG-sampling).

verl's single-turn agent loop renders the chat prompt and asks the server for the
whole assistant turn. For a guided rollout the strategy's plan gives that slot an
expert prefix; this loop appends the prefix's tokens to the rendered prompt, so the
server continues from it and the prefix lands on the *prompt* side of the sample:
it is context (never in `response_mask`, never trained) and the importance ratios
stay on-policy for the tokens the model actually produced.

The prefix text reaches the loop as the per-row column `lppo_prefix`, which
`LPPORayPPOTrainer` writes into the generation batch after verl has repeated each
prompt `rollout.n` times (one row per (sample, slot)). Under the V1 trainer the worker
repeats the prompt itself, so `LPPOAgentLoopManager` writes `lppo_prefixes` (every
slot's prefix, as JSON) and the loop takes the entry of its `session_id`. The loop
reports the prefix it really used in `extra_fields["prefix"]`; verl turns extra fields into a
`non_tensor_batch` column (the trainer observes those rows as guided) and hands
them to the reward function inside `extra_info` (lppo_env's `compute_score` scores
prefix + response).

Registered under `AGENT_NAME` when this module is imported; `lppo_sampling.integrations.verl`
imports it, and verl imports that module in every agent-loop worker because it is
the dataset class (`data.custom_cls`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

__all__ = ["AGENT_NAME", "PREFIX_COLUMN", "LPPOPrefixAgentLoop"]

AGENT_NAME = "lppo_prefix_agent"
PREFIX_COLUMN = "lppo_prefix"  # per-row prefix text written by the trainer ("" = unguided)
PREFIXES_COLUMN = "lppo_prefixes"  # V1: per prompt, JSON list of each slot's prefix
logger = logging.getLogger(__name__)


@register(AGENT_NAME)
class LPPOPrefixAgentLoop(SingleTurnAgentLoop):
    """`SingleTurnAgentLoop` whose assistant turn begins with the row's `lppo_prefix`.

    A prefix that would push the prompt past `rollout.prompt_length` is cut to fit
    (its head is kept, and `extra_fields["prefix"]` holds the part actually given).
    """

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        """Generate the turn after `prompt + prefix`; report the prefix used."""
        prefix = kwargs.pop(PREFIX_COLUMN, "") or ""
        slots = kwargs.pop(PREFIXES_COLUMN, None)
        if slots is not None and not prefix:  # V1: one JSON list per prompt, session = slot
            prefix = json.loads(slots)[int(kwargs["session_id"])]
        if not isinstance(prefix, str):
            raise ValueError(f"{PREFIX_COLUMN} must be a string, got {type(prefix).__name__}")
        self._lppo_prefix = prefix
        self._lppo_used = ""
        output = await super().run(sampling_params, **kwargs)
        output.extra_fields["prefix"] = self._lppo_used
        return output

    async def ct_build_initial_tokens(self, messages: list[dict], *args: Any,
                                      **kwargs: Any) -> list[int]:
        """The rendered prompt (ending in the assistant header) followed by the prefix tokens."""
        prompt_ids = await super().ct_build_initial_tokens(messages, *args, **kwargs)
        if not getattr(self, "_lppo_prefix", ""):
            return prompt_ids
        prefix_ids = self.tokenizer.encode(self._lppo_prefix, add_special_tokens=False)
        room = self.rollout_config.prompt_length - len(prompt_ids)
        if len(prefix_ids) > room:
            logger.warning("expert prefix of %d tokens cut to %d to fit rollout.prompt_length=%d",
                           len(prefix_ids), max(room, 0), self.rollout_config.prompt_length)
            prefix_ids = prefix_ids[: max(room, 0)]
        self._lppo_used = self.tokenizer.decode(prefix_ids) if prefix_ids else ""
        return list(prompt_ids) + list(prefix_ids)
