"""Verified checkpoints: a damaged file is found, named, and the run resumes past it.

The end-to-end tests run the real `lppo train` entry point in-process on the tiny model
of conftest.py; the property tests drive `verify_checkpoint` / `latest_checkpoint` on
synthetic checkpoint directories.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_train import (
    DEFAULTS,
    assert_identical,
    checkpoint_state,
    ensure_tiny_model,
    metrics_without_timings,
)

from agents.checkpoint import (
    MANIFEST,
    CheckpointError,
    latest_checkpoint,
    verify_checkpoint,
    write_manifest,
)
from agents.cli import main

FILE_KINDS = [
    "model/model.safetensors", "learner.pt", "sampler.npz", "rng.pt", "trainer_state.json",
    MANIFEST,
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _train(model: Path, run: Path, *flags: str) -> int:
    """`lppo train` in-process; `flags` come last, so they override the defaults."""
    args = {**DEFAULTS, "--eval-size": "4", "--eval-every": "2", "--keep-checkpoints": "2"}
    argv = ["train", "--no-progress", "--model", str(model), "--run-dir", str(run)]
    return main(argv + [x for kv in args.items() for x in kv] + list(flags))


@pytest.fixture(scope="module")
def two_checkpoints(tiny_dir, tmp_path_factory) -> Path:
    """A run stopped after step 2: checkpoints step-000001 and step-000002."""
    run = tmp_path_factory.mktemp("base") / "run"
    assert _train(tiny_dir, run, "--steps", "2") == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == [
        "step-000001", "step-000002"
    ]
    return run


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("full") / "run"
    assert _train(tiny_dir, run, "--steps", "3") == 0
    return run


def _truncate_to_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_a_damaged_file_makes_the_run_resume_from_the_previous_checkpoint(
    kind, tiny_dir, two_checkpoints, uninterrupted, tmp_path, caplog
) -> None:
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    damaged = run / "checkpoints" / "step-000002" / kind
    _truncate_to_half(damaged)

    with caplog.at_level(logging.INFO, logger="lppo"):
        assert _train(tiny_dir, run, "--steps", "3") == 0

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(damaged) in w and "step-000002 is damaged" in w for w in warnings), warnings
    assert any("resumed from" in r.getMessage() and r.getMessage().endswith(
        "step-000001 at step 1") for r in caplog.records)
    # it redid step 2 and ran step 3 exactly as a run that was never damaged
    assert metrics_without_timings(run) == metrics_without_timings(uninterrupted)
    assert_identical(
        checkpoint_state(run / "checkpoints" / "step-000003"),
        checkpoint_state(uninterrupted / "checkpoints" / "step-000003"),
    )
    verify_checkpoint(run / "checkpoints" / "step-000002")  # rewritten whole


def test_no_intact_checkpoint_is_a_one_line_error_until_the_user_starts_over(
    tiny_dir, two_checkpoints, tmp_path, capsys
) -> None:
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    _truncate_to_half(run / "checkpoints" / "step-000002" / "learner.pt")
    (run / "checkpoints" / "step-000001" / "rng.pt").unlink()
    metrics_before = (run / "metrics.jsonl").read_text()

    assert _train(tiny_dir, run, "--steps", "3") == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("lppo train:")]
    assert len(line) == 1 and "Traceback" not in err
    assert "no intact checkpoint" in line[0] and "--no-resume" in line[0]
    assert "step-000002/learner.pt" in line[0] and "step-000001/rng.pt: missing" in line[0]
    assert (run / "metrics.jsonl").read_text() == metrics_before  # nothing overwritten

    # starting over replaces the damaged checkpoints, including the later step-000002
    assert _train(tiny_dir, run, "--steps", "1", "--no-resume") == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000001"]
    verify_checkpoint(run / "checkpoints" / "step-000001")


def test_a_verified_file_that_cannot_be_applied_is_named(
    tiny_dir, two_checkpoints, tmp_path, capsys
) -> None:
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    assert _train(tiny_dir, run, "--steps", "3", "--strategy", "uniform") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "step-000002/sampler.npz: cannot be loaded" in err and "'uniform'" in err


def test_checkpoint_files_are_fsynced_manifest_last(tiny_dir, tmp_path, monkeypatch) -> None:
    """The manifest is written after every other file is on disk, by an atomic rename."""
    import os

    import agents.checkpoint as ck

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync:" + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(f"replace:{Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "fsync", fsync)
    monkeypatch.setattr(ck.os, "replace", replace)
    assert _train(tiny_dir, tmp_path / "run", "--steps", "1", "--eval-size", "0") == 0
    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    listed = json.loads((ckpt / MANIFEST).read_text())["files"]
    assert set(listed) == {
        p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()
    } - {MANIFEST}
    manifest_at = events.index(f"replace:{MANIFEST}")
    for name in listed:
        assert any(e.startswith("fsync:") and e.endswith("/" + name.split("/")[-1])
                   for e in events[:manifest_at]), name
    assert events.index("replace:step-000001") > manifest_at  # the directory gets its name last


# ---------------------------------------------------------------- properties
_names = st.sampled_from(["a.bin", "b.pt", "model/w.safetensors", "model/config.json", "x.npz"])
_tree = st.dictionaries(_names, st.binary(min_size=0, max_size=300), min_size=1)
_damage = st.sampled_from(["truncate", "flip", "append", "delete"])


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in {**files, "trainer_state.json": b'{"step": 1}'}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


@settings(max_examples=150, deadline=None)
@given(files=_tree, damage=_damage, which=st.integers(0, 10**6), where=st.integers(0, 10**6))
def test_any_damage_to_any_file_is_found_and_named(files, damage, which, where) -> None:
    """Deliberate bug caught: checking sizes only (a flipped byte passes) or skipping a file."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        _write_tree(root, files)
        write_manifest(root, 1)
        verify_checkpoint(root)  # intact: no error
        names = sorted(files) + ["trainer_state.json", MANIFEST]
        name = names[which % len(names)]
        path = root / name
        data = path.read_bytes()
        if damage == "truncate" and data:
            path.write_bytes(data[: where % len(data)])
        elif damage == "flip" and data:
            i = where % len(data)
            path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
        elif damage == "delete":
            path.unlink()
        else:
            path.write_bytes(data + b"\0")
        with pytest.raises(CheckpointError) as e:
            verify_checkpoint(root)
        assert str(e.value).startswith(f"{path}:")


@settings(max_examples=60, deadline=None)
@given(
    steps=st.sets(st.integers(0, 2_000_000), min_size=1, max_size=5),
    damaged_mask=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_latest_checkpoint_is_the_newest_intact_one(steps, damaged_mask) -> None:
    """Deliberate bugs caught: ordering by name (step-1000000 < step-999999), stopping at
    the first damaged checkpoint, starting over when only some are damaged."""
    steps = sorted(steps)
    damaged = {s for s, bad in zip(steps, damaged_mask, strict=False) if bad}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for s in steps:
            ckpt = root / f"step-{s:06d}"
            ckpt.mkdir()
            _write_tree(ckpt, {"learner.pt": b"state %d" % s})
            write_manifest(ckpt, s)
            if s in damaged:
                (ckpt / "learner.pt").write_bytes(b"")
        warned: list[str] = []
        intact = [s for s in steps if s not in damaged]
        if not intact:
            with pytest.raises(CheckpointError, match="no intact checkpoint"):
                latest_checkpoint(root, warn=warned.append)
            return
        got = latest_checkpoint(root, warn=warned.append)
        assert got == root / f"step-{max(intact):06d}"
        newer_damaged = [s for s in damaged if s > max(intact)]
        assert len([w for w in warned if "is damaged" in w]) == len(newer_damaged)
        for s in newer_damaged:
            assert any(f"step-{s:06d}/learner.pt" in w for w in warned)


def test_no_checkpoint_directory_means_a_fresh_start(tmp_path) -> None:
    assert latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".tmp-step-000003-123").mkdir()  # a killed writer's leftover
    assert latest_checkpoint(tmp_path / "empty") is None
