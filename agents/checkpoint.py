"""Atomic, verified checkpoints: one bad file never costs a run its progress.

Layout of `run_dir/checkpoints/`::

    step-000008/            one complete checkpoint
        model/              save_pretrained (loadable by `lppo eval --model ...`)
        learner.pt          optimizer, scheduler (and critic) state
        sampler.npz         lppo_sampling strategy state (stats + its RNG)
        rng.pt              python / numpy / torch RNG states
        trainer_state.json  step counter and config
        manifest.json       size and sha256 of every file above; written last
    latest                  name of the newest complete checkpoint (for people and tools)

Writing: a checkpoint is written into a hidden temporary directory; each file is fsynced
as its checksum is taken; `manifest.json` is written last (temp file, fsync, rename);
then the directory is renamed into place (atomic on POSIX) and `latest` replaced (also by
rename). Killing the process at any point leaves either the old or the new checkpoint,
whole.

Reading: `latest_checkpoint` checks the newest checkpoint against its manifest (every
file present, of its size, with its sha256). A damaged one (a file truncated, altered or
missing, the manifest missing or unreadable) is skipped with a warning that names the
file, and the previous one is tried. When checkpoints exist but none is intact it raises
`CheckpointError` rather than start over: starting over would overwrite the damaged
checkpoints and the metrics of the run, so the user decides (move the directory away, or
`--no-resume`). A checkpoint without a manifest counts as damaged: this module always
writes one before the directory gets its final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "MANIFEST",
    "capture_rng_state",
    "checkpoint_file",
    "checkpoint_step",
    "latest_checkpoint",
    "load_rng_state",
    "save_checkpoint",
    "verify_checkpoint",
    "write_manifest",
]

log = logging.getLogger("lppo")

MANIFEST = "manifest.json"
_PREFIX = "step-"
_NAME = re.compile(rf"^{_PREFIX}(\d+)$")
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the checkpoint file at fault."""


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


def checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint directory holds (`step-000008` -> 8), None for other names."""
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


def _checkpoints(ckpt_root: Path) -> list[Path]:
    """Checkpoint directories, oldest first (by step number, not by name)."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p))  # type: ignore[arg-type, return-value]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size_and_sha256(path: Path, *, fsync: bool = False) -> dict[str, Any]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
        if fsync:
            os.fsync(f.fileno())
    return {"size": size, "sha256": h.hexdigest()}


def write_manifest(ckpt_dir: Path, step: int) -> None:
    """Checksum and fsync every file of `ckpt_dir`, then write the manifest atomically."""
    files = {
        p.relative_to(ckpt_dir).as_posix(): _size_and_sha256(p, fsync=True)
        for p in sorted(ckpt_dir.rglob("*"))
        if p.is_file()
    }
    for d in sorted({p.parent for p in ckpt_dir.rglob("*")} | {ckpt_dir}):
        _fsync_dir(d)
    tmp = ckpt_dir / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        json.dump({"step": step, "files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, ckpt_dir / MANIFEST)
    _fsync_dir(ckpt_dir)


def _read_manifest(ckpt_dir: Path) -> dict[str, dict[str, Any]]:
    path = ckpt_dir / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the checkpoint is incomplete or damaged)")
    try:
        files = json.loads(path.read_text())["files"]
        ok = isinstance(files, dict) and all(
            isinstance(v, dict) and isinstance(v.get("size"), int)
            and isinstance(v.get("sha256"), str) for v in files.values()
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from e
    if not ok:
        raise CheckpointError(f"{path}: unreadable (unexpected layout)")
    for name in files:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CheckpointError(f"{path}: unreadable (file name {name!r} leaves the checkpoint)")
    if "trainer_state.json" not in files:
        raise CheckpointError(f"{path}: does not list trainer_state.json")
    return files


def verify_checkpoint(ckpt_dir: Path) -> None:
    """Raise `CheckpointError` naming the first file that differs from the manifest.

    Every file the manifest lists must exist with its recorded size and sha256; files it
    does not list are ignored. Sizes are checked for all files before any checksum, so a
    truncated file is found without reading the large ones.
    """
    ckpt_dir = Path(ckpt_dir)
    files = _read_manifest(ckpt_dir)
    for name, want in files.items():
        path = ckpt_dir / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        size = path.stat().st_size
        if size != want["size"]:
            raise CheckpointError(f"{path}: {size} bytes, the manifest says {want['size']}")
    for name, want in files.items():
        if _size_and_sha256(ckpt_dir / name)["sha256"] != want["sha256"]:
            raise CheckpointError(
                f"{ckpt_dir / name}: sha256 differs from the manifest (altered since it was "
                "written)"
            )


def latest_checkpoint(
    ckpt_root: Path, *, warn: Callable[[str], None] | None = None
) -> Path | None:
    """The newest intact checkpoint; None when `ckpt_root` holds no checkpoint at all.

    Checkpoints are tried newest first; each damaged one is reported through `warn`
    (default: a logged warning) naming the damaged file, and skipped.

    Raises:
        CheckpointError: checkpoints exist but none is intact (the message lists them).
    """
    warn = warn or log.warning
    found = _checkpoints(Path(ckpt_root))
    problems = []
    for ckpt in reversed(found):
        try:
            verify_checkpoint(ckpt)
        except CheckpointError as e:
            problems.append(str(e))
            warn(f"checkpoint {ckpt.name} is damaged, skipped: {e}")
            continue
        if problems:
            warn(f"resuming from the newest intact checkpoint, {ckpt.name}")
        return ckpt
    if problems:
        raise CheckpointError(
            f"{ckpt_root}: no intact checkpoint to resume from ({'; '.join(problems)}). Move "
            "the directory away to keep it, or pass --no-resume to start over (the damaged "
            "checkpoints are then replaced)"
        )
    return None


@contextlib.contextmanager
def checkpoint_file(path: Path) -> Iterator[None]:
    """Turn any failure to read or apply `path` into a `CheckpointError` naming it.

    Why: a checkpoint that passed `verify_checkpoint` can still be refused (a config that
    no longer matches it); the user must learn which file, without a traceback.
    """
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure: the file cannot be used
        raise CheckpointError(f"{path}: cannot be loaded: {e}") from e


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
    """Write checkpoint `step` atomically, with its manifest, and prune old ones.

    Kept: this one and the newest `keep - 1` earlier ones. Checkpoints of a *later* step
    are removed: they belong to a future this run no longer has (it fell back past a
    damaged checkpoint, or started over with `resume` off).
    """
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
    write_manifest(tmp, step)
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
    earlier = [p for p in _checkpoints(ckpt_root) if checkpoint_step(p) < step]  # type: ignore[operator]
    later = [p for p in _checkpoints(ckpt_root) if checkpoint_step(p) > step]  # type: ignore[operator]
    for old in later + earlier[: max(0, len(earlier) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".tmp-*"):  # leftovers of killed writers
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final
