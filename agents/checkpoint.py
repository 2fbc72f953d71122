"""Atomic checkpoints: a crash mid-write never corrupts the last good checkpoint.

Layout of `run_dir/checkpoints/`::

    step-000008/            one complete checkpoint
        model/              save_pretrained (loadable by `lppo eval --model ...`)
        learner.pt          optimizer, scheduler (and critic) state
        sampler.npz         lppo_sampling strategy state (stats + its RNG)
        rng.pt              python / numpy / torch RNG states
        trainer_state.json  step counter and config
    latest                  name of the newest complete checkpoint

A checkpoint is written into a hidden temporary directory, fsynced, then renamed into
place (rename is atomic on POSIX), and only then is `latest` replaced (also by rename).
Killing the process at any point leaves either the old or the new checkpoint, whole.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "latest_checkpoint", "load_rng_state", "capture_rng_state"]

_PREFIX = "step-"


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG a training step touches."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def load_rng_state(state: dict[str, Any]) -> None:
    """Restore what `capture_rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for p in sorted({q.parent for q in root.rglob("*")} | {root}):
        _fsync_dir(p)


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    *,
    policy: Any,
    learner: Any,
    strategy: Any,
    trainer_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` atomically and prune all but the newest `keep`."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"{_PREFIX}{step:06d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    policy.model.save_pretrained(tmp / "model", safe_serialization=True)
    policy.tokenizer.save_pretrained(tmp / "model")
    torch.save(learner.state_dict(), tmp / "learner.pt")
    strategy.save(tmp / "sampler.npz")
    torch.save(capture_rng_state(), tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}, indent=2))
    _fsync_tree(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_root)
    pointer_tmp = ckpt_root / f".latest-{os.getpid()}"
    pointer_tmp.write_text(name + "\n")
    with open(pointer_tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(pointer_tmp, ckpt_root / "latest")
    _fsync_dir(ckpt_root)
    complete = sorted(p for p in ckpt_root.glob(f"{_PREFIX}*") if p.is_dir())
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".tmp-*"):  # leftovers of killed writers
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint, or None. Falls back to scanning if `latest` is bad."""
    pointer = ckpt_root / "latest"
    if pointer.is_file():
        cand = ckpt_root / pointer.read_text().strip()
        if (cand / "trainer_state.json").is_file():
            return cand
    complete = sorted(
        p for p in ckpt_root.glob(f"{_PREFIX}*") if (p / "trainer_state.json").is_file()
    )
    return complete[-1] if complete else None
