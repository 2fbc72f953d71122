"""Rollout backends behind one contract (`RolloutBackend`): HF `generate` and vLLM.

Backends are imported lazily so that `import agents.rollout` stays cheap and does not
require vLLM: `from agents.rollout import HFBackend` imports `transformers` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from agents.rollout.base import Messages, Rollout, RolloutBackend, RolloutRequest, SamplingConfig

__all__ = [
    "HFBackend",
    "Messages",
    "Rollout",
    "RolloutBackend",
    "RolloutRequest",
    "SamplingConfig",
    "VLLMBackend",
]

_LAZY = {"HFBackend": "agents.rollout.hf", "VLLMBackend": "agents.rollout.vllm"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agents.rollout' has no attribute {name!r}")
