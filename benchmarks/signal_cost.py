"""What the curricula's model signals cost on the policy, apart from the sampler.

The sampler benchmark (sampler_throughput.py) times the curricula with array stand-ins;
this one times the signals themselves on a real model, per prompt:

- `HiddenStates` prefill (PCL's and ADCL's features), batch of `--batch` prompts;
- `ValueHead.update` + `predict` on those features (PCL's on-policy fit);
- `AngleScorer` (GAIN-RL's one-time score: one prefill with the `mlp.up_proj` hook);
- `BatchAngle` (GAIN-RL's online angle term, per step: the batch's `--batch` prompts);
- `PolicyRestructurer` (CLPO: one greedy rewrite of `--rewrite-tokens` tokens).

Every measurement records the load average before and after; one that starts at a
1-minute load above 1.5 is marked invalid and so is the result. Before each measurement
the script waits (up to `--settle` seconds) for the 1-minute load to fall to 1.0, so a
measurement does not count the previous one's own load as "the machine was busy".

Usage:
    python benchmarks/signal_cost.py [--model default|PATH] [--prompts 64]
    python benchmarks/signal_cost.py --quick --model PATH   # check it runs: 8 prompts
Writes benchmarks/results/signal_cost.json (--quick: runs/signal_cost_quick.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.signal_cost
    from _load import LoadGate, all_valid, wait_until_quiet
except ImportError:  # pragma: no cover
    from benchmarks._load import LoadGate, all_valid, wait_until_quiet

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "signal_cost.json"
QUICK_RESULTS = HERE.parent / "runs" / "signal_cost_quick.json"


def main() -> None:
    """Time each signal, print a table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rewrite-tokens", type=int, default=64)
    ap.add_argument("--quick", action="store_true",
                    help="8 prompts, 16 rewrite tokens, no settling")
    ap.add_argument("--settle", type=float, default=120.0,
                    help="max seconds to wait before each measurement for load <= 1.0")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.rewrite_tokens = min(args.prompts, 8), min(args.rewrite_tokens, 16)
        args.settle = 0.0  # a check that it runs, not a figure
    args.out = args.out or (QUICK_RESULTS if args.quick else RESULTS)

    from agents.policy import load_policy
    from agents.signals import (
        AngleScorer,
        BatchAngle,
        HiddenStates,
        PolicyRestructurer,
        ValueHead,
    )
    from lppo_env import load_problems

    policy = load_policy(args.model)
    problems = {p.id: p for p in load_problems("default", size=max(args.prompts, 50))}
    keys = np.array(list(problems)[: args.prompts])
    rows = []

    def measure(name: str, n: int, fn) -> None:
        wait_until_quiet(args.settle)
        with LoadGate() as gate:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        rows.append({"signal": name, "items": n, "ms_per_item": dt * 1e3 / n, **gate.record()})

    feats = HiddenStates(lambda: policy, problems, cache=False, batch_size=args.batch)
    measure("hidden_states prefill (PCL/ADCL)", len(keys), lambda: feats(keys))
    head = ValueHead(HiddenStates(lambda: policy, problems, cache=True, batch_size=args.batch))
    head.predict(keys)  # features cached: the head's own cost below
    target = np.random.default_rng(0).random(len(keys))
    measure("value_head update+predict (PCL)", len(keys),
            lambda: (head.update(keys, target), head.predict(keys)))
    scorer = AngleScorer(lambda: policy, problems)
    measure("angle score, mlp.up_proj hook (GAIN-RL)", len(keys), lambda: scorer(keys))
    online = BatchAngle(lambda: policy, problems)
    measure(f"online angle, one step of {args.batch} prompts (GAIN-RL)", 1,
            lambda: online(keys[: args.batch]))
    rewriter = PolicyRestructurer(lambda: policy, problems, max_new_tokens=args.rewrite_tokens)
    n_rw = min(2, len(keys))
    measure(f"restructure, {args.rewrite_tokens} tokens (CLPO)", n_rw,
            lambda: rewriter(keys[:n_rw], ["simplify"] * n_rw))

    valid = all_valid(rows)
    result = {"config": vars(args) | {"out": str(args.out)}, "quick": args.quick,
              "valid": valid, "signals": rows}
    if not valid:
        result["invalid_reason"] = ("a measurement started at a 1-minute load average > 1.5; "
                                    "rerun on a quiet machine before quoting it")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"model {args.model}, {len(keys)} prompts")
    print(f"{'signal':<44}{'ms/item':>10}{'load before':>13}")
    for r in rows:
        flag = "" if r["valid"] else " INVALID"
        print(f"{r['signal']:<44}{r['ms_per_item']:>10.2f}{r['load_before'][0]:>13.2f}{flag}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
