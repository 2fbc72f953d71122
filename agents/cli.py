"""The `lppo` command: train, eval, plot, compare, saidpo.

    lppo train                       # default model, lppo strategy, GRPO, embedded data
    lppo train --strategy uniform --learner reinforce_plus_plus --steps 20
    lppo train --config run.yaml --lr 1e-5
    lppo eval --model runs/default/checkpoints/step-000006/model --n-samples 4 --k 1 4
    lppo plot runs/a runs/b -o curves.png
    lppo compare --strategies uniform lppo --learners grpo --seeds 0 1 2 --out runs/cmp
    lppo saidpo --iterations 2            # iterative SAI-DPO: probe -> select -> DPO

Each subcommand is a config dataclass (`TrainConfig`, `EvalConfig`, `CompareConfig`,
`SAIDPOConfig`) whose fields are its flags, with the field docs as `--help`
(`agents.args`); mappings take JSON (`--strategy-kwargs '{"kappa": 4}'`). A user error
(a bad value, a missing file, an output that cannot be written) is one line naming the
setting and exit status 2, before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agents.args import ArgumentParser, add_dataclass_arguments, dataclass_from_args
from agents.config import ConfigError, TrainConfig
from agents.fields import coerce_fields, from_mapping
from agents.paths import check_data, check_model, check_output_dir, check_output_file

__all__ = ["EvalConfig", "build_parser", "main"]


@dataclass
class EvalConfig:
    """Configuration of `lppo eval` (every field is a `--flag`)."""

    model: str = "default"
    """model name, HF directory or checkpoint model directory."""
    data: str = "default"
    """dataset name or JSONL/Parquet file."""
    data_kwargs: dict = field(default_factory=dict)
    """options for lppo_env.load_problems (JSON), e.g. {"size": 64}."""
    split: Literal["heldout", "all"] = "heldout"
    """heldout: the fixed held-out split a run with this --split-seed/--eval-size uses."""
    split_seed: int = 0
    """the run's split_seed."""
    eval_size: int = 48
    """held-out problems (the run's eval_size)."""
    limit: int | None = None
    """evaluate only the first N problems."""
    n_samples: int = 1
    """samples per problem (1 = greedy)."""
    k: list[int] = field(default_factory=lambda: [1])
    """report pass@k for these k (each <= n_samples)."""
    temperature: float | None = None
    """sampling temperature; default 0 if n_samples = 1 else 1.0."""
    max_new_tokens: int = 96
    """cap on generated tokens per answer."""
    seed: int = 0
    """sampling seed."""
    out: str | None = None
    """also write the result as JSON to this file."""

    def __post_init__(self) -> None:
        coerce_fields(self)
        checks = [
            ("eval_size", self.eval_size >= 1 or self.split == "all", ">= 1 with split heldout"),
            ("limit", self.limit is None or self.limit >= 1, ">= 1"),
            ("n_samples", self.n_samples >= 1, ">= 1"),
            (
                "k",
                bool(self.k) and all(1 <= k <= self.n_samples for k in self.k),
                f"values in [1, n_samples={self.n_samples}]",
            ),
            ("temperature", self.temperature is None or self.temperature >= 0, ">= 0"),
            ("max_new_tokens", self.max_new_tokens >= 1, ">= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                got = getattr(self, name)
                raise ConfigError(f"EvalConfig expects {name} {expected}, got {got!r}")


def build_parser() -> argparse.ArgumentParser:
    """The `lppo` argument parser (one subparser per command, flags from the dataclasses)."""
    from agents.compare.cli import add_compare_parser
    from agents.saidpo.cli import add_saidpo_parser

    ap = ArgumentParser(prog="lppo", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train a policy (defaults: the embedded default job)")
    tr.add_argument(
        "--config", type=Path, default=None, help="YAML/JSON file of TrainConfig fields"
    )
    add_dataclass_arguments(tr, TrainConfig, defaults=False)  # unset flags keep --config's

    ev = sub.add_parser("eval", help="pass@1 / pass@k of a model or checkpoint on a dataset")
    add_dataclass_arguments(ev, EvalConfig)

    pl = sub.add_parser("plot", help="curves of one or several runs on one figure")
    pl.add_argument("runs", nargs="+", type=Path, help="run directories (or metrics.jsonl files)")
    pl.add_argument("-o", "--out", type=Path, default=Path("curves.png"))
    pl.add_argument("--labels", nargs="*", default=None)
    pl.add_argument("--x", default="step", help="x axis: step or rollout/tokens_total")

    add_compare_parser(sub)
    add_saidpo_parser(sub)
    return ap


def _train(args: argparse.Namespace) -> int:
    cfg = dataclass_from_args(TrainConfig, args, config_file=args.config)
    check_output_dir(cfg.run_dir, "--run-dir")
    if cfg.eval_cache:
        check_output_dir(cfg.eval_cache, "--eval-cache")
    check_model(cfg.model, "--model")
    check_data(cfg.data, cfg.data_kwargs)

    from agents.trainer import Trainer, preflight

    preflight(cfg)  # names: strategy, learner, data, model
    cfg.learner_config()  # learner_kwargs, checked without a model
    summary = Trainer(cfg).run()
    print(json.dumps(summary, indent=2))
    from agents.stopping import exit_status

    return exit_status(summary["stopped_by"])  # 130 after SIGINT, 143 after SIGTERM


def _eval(args: argparse.Namespace) -> int:
    cfg = from_mapping(EvalConfig, {k: getattr(args, k) for k in EvalConfig.__dataclass_fields__})
    if cfg.out:
        check_output_file(cfg.out, "--out")
    check_model(cfg.model, "--model")
    check_data(cfg.data, cfg.data_kwargs)

    from agents.evaluation import evaluate
    from agents.policy import load_policy
    from agents.rollout.hf import HFBackend
    from lppo_env import MathReasoningEnv, default_verifier, load_problems, split_problems

    problems = load_problems(cfg.data, **cfg.data_kwargs)
    if cfg.split == "heldout":
        _, problems = split_problems(problems, cfg.eval_size, seed=cfg.split_seed)
    if cfg.limit:
        problems = problems[: cfg.limit]
    policy = load_policy(cfg.model)
    env = MathReasoningEnv(list(problems), tokenizer=policy.tokenizer)
    temperature = (
        cfg.temperature if cfg.temperature is not None else (0.0 if cfg.n_samples == 1 else 1.0)
    )
    out = evaluate(
        HFBackend(policy, batch_size=64),
        problems,
        env.messages,
        default_verifier(),
        n_samples=cfg.n_samples,
        ks=cfg.k,
        temperature=temperature,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
    )
    out = {"model": cfg.model, "data": cfg.data, "split": cfg.split, **out}
    print(json.dumps(out, indent=2))
    if cfg.out:
        path = Path(cfg.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from agents.metrics import plot_runs

    check_output_file(args.out, "--out")
    out = plot_runs(args.runs, args.out, labels=args.labels, x=args.x)
    print(out)
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "train":
        return _train(args)
    if args.command == "eval":
        return _eval(args)
    if args.command == "plot":
        return _plot(args)
    if args.command == "compare":
        from agents.compare.cli import run_compare

        return run_compare(args)
    if args.command == "saidpo":
        from agents.saidpo.cli import run_saidpo

        return run_saidpo(args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse restricts choices


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lppo` console script; user errors: one line, exit status 2."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "transformers", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as e:
        print(f"lppo {args.command}: configuration error: {_one_line(e)}", file=sys.stderr)
    except (FileNotFoundError, ValueError) as e:
        print(f"lppo {args.command}: error: {_one_line(e)}", file=sys.stderr)
    except KeyboardInterrupt:  # outside the trainer's own graceful stop (loading, eval, ...)
        print(f"lppo {args.command}: interrupted", file=sys.stderr)
        return 130
    return 2


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
