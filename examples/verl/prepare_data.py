"""Write GSM8K as verl parquet with stable keys: `python examples/verl/prepare_data.py GSM8K.jsonl`.

Each row gets `extra_info.index` (the sampler's key), the worked solution (for expert
prefixes) and `reward_model.ground_truth`; 1% of the problems (at least one) go to the
validation file.
"""

from __future__ import annotations

import argparse
import sys

from lppo_env import load_gsm8k
from lppo_env.errors import DataError
from lppo_sampling.integrations.verl import to_verl_parquet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("gsm8k_jsonl", help="GSM8K train JSONL (question, answer ending in '#### N')")
    p.add_argument("--out", default="data/verl", help="output directory (default data/verl)")
    args = p.parse_args(argv)
    try:
        problems = load_gsm8k(args.gsm8k_jsonl)
    except (DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_val = max(1, len(problems) // 100)
    to_verl_parquet(problems[n_val:], f"{args.out}/train.parquet")
    to_verl_parquet(problems[:n_val], f"{args.out}/val.parquet", split="test")
    print(f"wrote {len(problems) - n_val} train and {n_val} validation rows to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
