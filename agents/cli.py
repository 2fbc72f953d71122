"""The `lppo` command: train, eval, plot, compare, saidpo.

    lppo train                       # default model, lppo strategy, GRPO, embedded data
    lppo train --strategy uniform --learner reinforce_plus_plus --steps 20
    lppo train --config run.yaml --lr 1e-5
    lppo eval --model runs/default/checkpoints/step-000006/model --n-samples 4 --k 1 4
    lppo plot runs/a runs/b -o curves.png
    lppo compare --strategies uniform lppo --learners grpo --seeds 0 1 2 --out runs/cmp
    lppo saidpo --iterations 2            # iterative SAI-DPO: probe -> select -> DPO

Every `TrainConfig` field is a flag (`--group-size 8`); mappings take JSON
(`--strategy-kwargs '{"kappa": 4}'`). Configuration errors exit with status 2 and one
message before any work starts.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Any

from agents.config import ConfigError, TrainConfig, load_config

__all__ = ["main", "build_parser"]


def _field_docs(cls: type) -> dict[str, str]:
    """Field docstrings (the string literal under each field) for --help."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for a, b in zip(body, body[1:], strict=False):  # pairwise: one shorter
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(
            getattr(b, "value", None), ast.Constant
        ):
            text = str(b.value.value)
            docs[a.target.id] = text.split(":", 1)[1].strip() if ":" in text else text  # type: ignore[attr-defined]
    return docs


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected JSON, got {text!r} ({e})") from e


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    docs = _field_docs(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f"{docs.get(f.name, '')} (default: {default!r})"
        kind = str(f.type)
        if kind == "bool":
            p.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_
            )
        elif kind.startswith("dict"):
            p.add_argument(
                flag, dest=f.name, type=_json_arg, default=None, help=help_, metavar="JSON"
            )
        elif kind == "int":
            p.add_argument(flag, dest=f.name, type=int, default=None, help=help_)
        elif kind == "float":
            p.add_argument(flag, dest=f.name, type=float, default=None, help=help_)
        else:
            p.add_argument(flag, dest=f.name, type=str, default=None, help=help_)


def build_parser() -> argparse.ArgumentParser:
    """The `lppo` argument parser."""
    ap = argparse.ArgumentParser(prog="lppo", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train a policy (defaults: the embedded default job)")
    tr.add_argument(
        "--config", type=Path, default=None, help="YAML/JSON file of TrainConfig fields"
    )
    _add_config_flags(tr)

    ev = sub.add_parser("eval", help="pass@1 / pass@k of a model or checkpoint on a dataset")
    ev.add_argument("--model", default="default", help="model name, HF dir or checkpoint model dir")
    ev.add_argument("--data", default="default", help="dataset name or file")
    ev.add_argument("--data-kwargs", type=_json_arg, default={}, metavar="JSON")
    ev.add_argument(
        "--split",
        choices=["heldout", "all"],
        default="heldout",
        help="heldout: the fixed held-out split a run with this --split-seed/--eval-size uses",
    )
    ev.add_argument("--split-seed", type=int, default=0, help="the run's split_seed")
    ev.add_argument("--eval-size", type=int, default=48)
    ev.add_argument("--limit", type=int, default=None, help="evaluate only the first N problems")
    ev.add_argument("--n-samples", type=int, default=1, help="samples per problem (1 = greedy)")
    ev.add_argument("--k", type=int, nargs="+", default=[1], help="report pass@k for these k")
    ev.add_argument("--temperature", type=float, default=None, help="default 0 if n=1 else 1.0")
    ev.add_argument("--max-new-tokens", type=int, default=96)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")

    pl = sub.add_parser("plot", help="curves of one or several runs on one figure")
    pl.add_argument("runs", nargs="+", type=Path, help="run directories (or metrics.jsonl files)")
    pl.add_argument("-o", "--out", type=Path, default=Path("curves.png"))
    pl.add_argument("--labels", nargs="*", default=None)
    pl.add_argument("--x", default="step", help="x axis: step or rollout/tokens_total")

    from agents.compare import add_compare_parser
    from agents.saidpo import add_saidpo_parser

    add_compare_parser(sub)
    add_saidpo_parser(sub)
    return ap


def _train(args: argparse.Namespace) -> int:
    from agents.trainer import Trainer

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    cfg = load_config(args.config, overrides)
    summary = Trainer(cfg).run()
    print(json.dumps(summary, indent=2))
    return 130 if summary["interrupted"] else 0


def _eval(args: argparse.Namespace) -> int:
    from agents.evaluation import evaluate
    from agents.policy import load_policy
    from agents.rollout.hf import HFBackend
    from lppo_env import MathReasoningEnv, default_verifier, load_problems, split_problems

    problems = load_problems(args.data, **args.data_kwargs)
    if args.split == "heldout":
        _, problems = split_problems(problems, args.eval_size, seed=args.split_seed)
    if args.limit:
        problems = problems[: args.limit]
    policy = load_policy(args.model)
    env = MathReasoningEnv(list(problems), tokenizer=policy.tokenizer)
    temperature = (
        args.temperature if args.temperature is not None else (0.0 if args.n_samples == 1 else 1.0)
    )
    out = evaluate(
        HFBackend(policy, batch_size=64), problems, env.messages, default_verifier(),
        n_samples=args.n_samples, ks=args.k, temperature=temperature,
        max_new_tokens=args.max_new_tokens, seed=args.seed,
    )
    out = {"model": args.model, "data": args.data, "split": args.split, **out}
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from agents.metrics import plot_runs

    out = plot_runs(args.runs, args.out, labels=args.labels, x=args.x)
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lppo` console script."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "transformers", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "plot":
            return _plot(args)
        if args.command == "compare":
            from agents.compare import run_compare

            return run_compare(args)
        if args.command == "saidpo":
            from agents.saidpo import run_saidpo

            return run_saidpo(args)
    except ConfigError as e:
        print(f"lppo {args.command}: configuration error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        print(f"lppo {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
