"""Checks of the files a command will read and write, run before any model is loaded.

Why: loading the default model takes seconds and an evaluation minutes; a `--run-dir` that
is a file, an `--out` that cannot be written or a mistyped model path must fail before
that, in one line naming the setting and the path, not in a traceback afterwards.
Nothing here creates or changes a file.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

from agents.fields import ConfigError

__all__ = ["check_data", "check_model", "check_output_dir", "check_output_file"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
"""`name` or `org/name`: what the Hugging Face hub accepts as a repo id."""


def _writable_dir(d: Path) -> bool:
    """True when a file can be created in directory `d`.

    Tried for real: `os.access` says yes to root and on read-only file systems.
    """
    try:
        with tempfile.TemporaryFile(dir=d):
            return True
    except OSError:
        return False


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_creatable(p: Path, setting: str) -> None:
    """Refuse `p` unless its nearest existing ancestor (itself, if it exists) is writable."""
    base = _existing_ancestor(p)
    if not base.is_dir():
        raise ConfigError(f"{setting}: cannot create {p}: {base} is a file")
    if not _writable_dir(base):
        raise ConfigError(f"{setting}: {p} is not writable (no permission to write in {base})")


def check_output_dir(path: str | Path, setting: str) -> Path:
    """Refuse an output directory that is a file or could not be created or written.

    Args:
        path: the directory (it may not exist yet; it is not created here).
        setting: the flag or field, for the message (e.g. "--run-dir").

    Returns:
        `path` as a Path.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{setting}: {p} is a file, expected a directory")
    _check_creatable(p, setting)
    return p


def check_output_file(path: str | Path, setting: str) -> Path:
    """Refuse an output file that is a directory or could not be written.

    Args:
        path: the file (its directory may not exist yet).
        setting: the flag or field, for the message (e.g. "--out").

    Returns:
        `path` as a Path.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{setting}: {p} is a directory, expected a file")
    if p.exists():
        try:
            with open(p, "a"):
                pass
        except OSError as e:
            reason = os.strerror(e.errno or errno.EACCES)
            raise ConfigError(f"{setting}: {p} is not writable ({reason})") from None
        return p
    _check_creatable(p, setting)
    return p


def check_model(model: str, setting: str = "model") -> None:
    """Refuse a model that names a missing path, or a hub id absent from the local cache.

    "default" and existing directories pass (their files are read by the loader); a
    `.gguf` path must be a file; anything that is neither a path that exists nor a hub
    id ("org/name") is a missing directory.
    """
    if model == "default":
        return
    p = Path(model).expanduser()
    if model.endswith(".gguf"):
        if not p.is_file():
            raise ConfigError(f"{setting}: no such .gguf file: {model}")
        return
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConfigError(f"{setting}: {model} is not a model directory (no config.json)")
        return
    if p.exists():
        raise ConfigError(f"{setting}: {model} is a file, expected a model directory")
    if not _HUB_ID.match(model) or model.startswith((".", "~")):
        raise ConfigError(f"{setting}: no such model directory: {model}")
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model, "config.json"), str):
        raise ConfigError(
            f"{setting}: no such model directory: {model} (nor a hub model in the local cache; "
            "download it first, or give a local directory)"
        )


def check_data(data: str, data_kwargs: dict, setting: str = "--data-kwargs") -> None:
    """Refuse builder options an embedded data set does not take, naming the setting.

    The embedded builders raise a bare TypeError on an unknown keyword (`{"sise": 3}`);
    building the (small, generated) data set once here turns that, and a bad value, into a
    one-line error. Files and unknown names are left to the loader and `preflight`, whose
    errors name the file.
    """
    from lppo_env import dataset_names, load_problems

    if not data_kwargs or data not in dataset_names():
        return
    try:
        load_problems(data, **data_kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{setting}: cannot build {data!r} with {data_kwargs!r}: {e}") from None
