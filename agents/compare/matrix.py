"""The comparison matrix: strategies × learners × seeds, one `TrainConfig` per cell.

Why a matrix object: a claim such as "LPPO learns faster than uniform sampling" is only
worth something when every arm saw the same model, data, held-out set, step budget and
seeds; `build_matrix` derives every run from one base config and changes only the fields
in `MATRIX_FIELDS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from agents.config import ConfigError, TrainConfig

__all__ = ["MATRIX_FIELDS", "RunSpec", "build_matrix", "run_name"]

# Fields the matrix itself sets per run; every other TrainConfig field is shared by all arms.
MATRIX_FIELDS = ("strategy", "learner", "seed", "run_dir", "resume")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix: its name, its arm and the full TrainConfig it runs."""

    name: str
    strategy: str
    learner: str
    seed: int
    cfg: TrainConfig

    @property
    def run_dir(self) -> Path:
        """The run's directory (checkpoints, metrics.jsonl, summary.json)."""
        return Path(self.cfg.run_dir)


def run_name(strategy: str, learner: str, seed: int) -> str:
    """Directory name of a run; parseable back into (strategy, learner, seed)."""
    return f"{strategy}__{learner}__s{seed}"


def build_matrix(
    base: TrainConfig,
    strategies: Sequence[str],
    learners: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
) -> list[RunSpec]:
    """All runs of the matrix, in execution order.

    Order is learner-major, then seed, then strategy: if the matrix is stopped early, what
    has finished is a complete comparison of every strategy on the first seeds of the first
    learner, not five seeds of one strategy and nothing to compare it with.

    Every run shares one held-out set (`split_seed`) and, unless `base.eval_cache` says
    otherwise, the step-0 evaluation cache `out/eval_cache`: the untrained model is
    evaluated once per matrix, not once per run.
    """
    if not strategies or not learners or not seeds:
        raise ConfigError("compare needs at least one strategy, one learner and one seed")
    for what, xs in (("strategies", strategies), ("learners", learners), ("seeds", seeds)):
        if len(set(xs)) != len(xs):
            raise ConfigError(f"--{what} lists a value twice: {list(xs)}")
    specs = []
    for learner in learners:
        for seed in seeds:
            for strategy in strategies:
                name = run_name(strategy, learner, seed)
                cfg = dataclasses.replace(
                    base,
                    strategy=strategy,
                    learner=learner,
                    seed=int(seed),
                    run_dir=str(Path(out) / name),
                    resume=True,
                    eval_cache=base.eval_cache or str(Path(out) / "eval_cache"),
                )
                specs.append(RunSpec(name, strategy, learner, int(seed), cfg))
    return specs
