"""`lppo compare`: the command line of the comparison matrix.

`CompareConfig` holds the matrix's own settings; every `TrainConfig` field except the ones
the matrix sets per run (`MATRIX_FIELDS`) is a flag too, shared by all runs. Both sets of
flags come from the dataclasses (`agents.args`), with their field docs as `--help`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

from agents.args import add_dataclass_arguments, dataclass_from_args
from agents.compare.execute import drain_when_file, run_matrix
from agents.compare.matrix import MATRIX_FIELDS, build_matrix
from agents.compare.report import summarize_matrix
from agents.config import ConfigError, TrainConfig
from agents.fields import coerce_fields, from_mapping
from agents.paths import check_data, check_model, check_output_dir

__all__ = ["CompareConfig", "add_compare_parser", "run_compare"]


@dataclass
class CompareConfig:
    """Settings of the matrix itself (the runs' settings are `TrainConfig` flags)."""

    strategies: list[str] = field(default_factory=lambda: ["uniform", "lppo"])
    """strategy names (`--strategies a b` or `--strategies a,b`)."""
    learners: list[str] = field(default_factory=lambda: ["grpo"])
    """learner names."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """seeds; each arm runs once per seed."""
    out: str = "runs/compare"
    """output root: one run directory per cell, summary.md, matrix.json, curves."""
    threshold: float | None = None
    """report the first step whose held-out accuracy reaches this (0-1)."""
    config: str | None = None
    """YAML/JSON file of TrainConfig fields shared by every run."""
    in_process: bool = False
    """run each Trainer in this process instead of a subprocess."""
    run_timeout: float | None = None
    """seconds per run (subprocess mode)."""
    prune_checkpoints: bool = False
    """delete a run's checkpoints once it is complete (saves ~1.6 GB per default-model run)."""
    jobs: int = 1
    """runs in flight at once (subprocesses), each pinned to its own cpu_count // jobs cores;
    `touch <out>/DRAIN` lets them finish and starts no more."""
    summarize_only: bool = False
    """do not train; only (re)write summaries and figures from existing runs."""

    def __post_init__(self) -> None:
        coerce_fields(self)
        # accept both `--strategies a b` and `--strategies a,b`
        self.strategies = [v for item in self.strategies for v in item.split(",") if v]
        self.learners = [v for item in self.learners for v in item.split(",") if v]
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"CompareConfig expects threshold in [0, 1], got {self.threshold}")
        if self.jobs < 1:
            raise ConfigError(f"CompareConfig expects jobs >= 1, got {self.jobs}")
        if self.jobs > 1 and self.in_process:
            raise ConfigError("CompareConfig runs jobs > 1 in subprocesses: drop --in-process")
        if self.run_timeout is not None and not self.run_timeout > 0:
            raise ConfigError(f"CompareConfig expects run_timeout > 0, got {self.run_timeout}")


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `lppo compare` (called by `agents.cli.build_parser`)."""
    from agents.compare import __doc__ as package_doc

    p = subparsers.add_parser(
        "compare",
        help="matrix of strategies × learners × seeds; summary table and curves",
        description=(package_doc or "").split("\n\n")[0],
    )
    add_dataclass_arguments(p, CompareConfig)
    add_dataclass_arguments(p, TrainConfig, exclude=MATRIX_FIELDS, defaults=False)
    return p


def run_compare(args: argparse.Namespace) -> int:
    """Entry point of `lppo compare`: validate, run the matrix, write the summaries."""
    from agents.trainer import preflight

    cc = from_mapping(
        CompareConfig, {k: getattr(args, k) for k in CompareConfig.__dataclass_fields__}
    )
    base = dataclass_from_args(TrainConfig, args, config_file=cc.config, exclude=MATRIX_FIELDS)
    if base.eval_size == 0:
        raise ConfigError("compare needs held-out accuracy: eval_size must be >= 1")
    out = check_output_dir(cc.out, "--out")
    if base.eval_cache:
        check_output_dir(base.eval_cache, "--eval-cache")
    check_model(base.model, "--model")
    check_data(base.data, base.data_kwargs)
    specs = build_matrix(base, cc.strategies, cc.learners, cc.seeds, out)
    for spec in {(s.strategy, s.learner): s for s in specs}.values():
        preflight(spec.cfg)  # every name checked before the first (long) run starts
        spec.cfg.learner_config()  # and every learner's learner_kwargs
    out.mkdir(parents=True, exist_ok=True)
    statuses = []
    if not cc.summarize_only:
        statuses = run_matrix(
            specs,
            subprocesses=not cc.in_process,
            timeout=cc.run_timeout,
            progress=base.progress,
            prune_checkpoints=cc.prune_checkpoints,
            jobs=cc.jobs,
            drain=drain_when_file(out),
        )
    result = summarize_matrix(specs, out, threshold=cc.threshold)
    failed = [s for s in statuses if s["returncode"] not in (0, None)]
    print(
        json.dumps(
            {
                "out": str(out),
                "summary": str(out / "summary.md"),
                "figures": result["figures"],
                "complete": sum(r["complete"] for r in result["runs"]),
                "runs": len(specs),
                "failed": [f"{s['run']}: {s['error']}" for s in failed],
            },
            indent=2,
        )
    )
    return 1 if failed else 0
