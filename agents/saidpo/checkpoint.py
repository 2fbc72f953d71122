"""What a SAI-DPO checkpoint needs beyond `agents.checkpoint`: settings check, weights, learner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from agents.saidpo.config import RESUME_FREE_FIELDS, SAIDPOConfig

__all__ = ["LearnerState", "check_resumable", "load_weights"]


def check_resumable(ckpt: Path, cfg: SAIDPOConfig) -> None:
    """Refuse a checkpoint written with other settings: the run would silently change."""
    state = json.loads((ckpt / "trainer_state.json").read_text())
    saved = state.get("config", {})
    now = json.loads(json.dumps(dataclasses.asdict(cfg)))
    diff = sorted(
        k
        for k in set(saved) | set(now)
        if k not in RESUME_FREE_FIELDS and saved.get(k) != now.get(k)
    )
    if diff:
        was = ", ".join(f"{k}={saved.get(k)!r}" for k in diff)
        got = ", ".join(f"{k}={now.get(k)!r}" for k in diff)
        raise ValueError(
            f"expected the settings of the checkpoint {ckpt} to resume from ({was}), got "
            f"{got}; use the same settings, another run_dir, or --no-resume (starts over)"
        )


def load_weights(policy: Any, model_dir: Path) -> None:
    """Load a checkpoint's weights into `policy.model` in place (callers keep the object)."""
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(model_dir, dtype=policy.model.dtype)
    policy.model.load_state_dict(saved.state_dict())


class LearnerState:
    """The DPO learner as `save_checkpoint` stores it, minus a reference equal to the policy.

    They are equal before any update, or after `sync_reference` with no update since; the
    resumed learner's frozen copy of the loaded policy is then exact, and a model's worth
    of disk is saved.
    """

    def __init__(self, learner: Any) -> None:
        self.learner = learner

    def state_dict(self) -> dict[str, Any]:
        """The learner's state, without `ref_model` when it equals the policy."""
        import torch

        state = self.learner.state_dict()
        ref = state.get("ref_model")
        if ref is not None:
            policy = self.learner.model.state_dict()
            if ref.keys() == policy.keys() and all(torch.equal(ref[k], policy[k]) for k in ref):
                del state["ref_model"]
        return state
