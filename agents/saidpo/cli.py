"""`lppo saidpo`: one flag per `SAIDPOConfig` field, built by `agents.args`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agents.args import add_dataclass_arguments
from agents.fields import from_mapping
from agents.paths import check_data, check_model, check_output_dir, check_output_file
from agents.saidpo.config import SAIDPOConfig

__all__ = ["add_saidpo_parser", "run_saidpo"]


def add_saidpo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `lppo saidpo`: one flag per `SAIDPOConfig` field (`--pairs-per-iteration 16`)."""
    p = subparsers.add_parser(
        "saidpo", help="SAI-DPO: iterative probe -> self-aware selection -> DPO"
    )
    return add_dataclass_arguments(p, SAIDPOConfig)


def run_saidpo(args: argparse.Namespace) -> int:
    """Run `lppo saidpo`; prints the summary as JSON. Bad settings raise ValueError (exit 2).

    Output paths and the model are checked before the model is loaded.
    """
    from agents.saidpo.loop import SAIDPOLoop

    cfg = from_mapping(
        SAIDPOConfig, {k: getattr(args, k) for k in SAIDPOConfig.__dataclass_fields__}
    )
    check_output_dir(cfg.run_dir, "--run-dir")
    if cfg.tags_cache:
        check_output_file(cfg.tags_cache, "--tags-cache")
    check_model(cfg.model, "--model")
    check_data(cfg.data, cfg.data_kwargs)
    summary = SAIDPOLoop(cfg).run()
    print(json.dumps(summary, indent=2))
    return 0
