"""Sampler overhead per training step on a large pool.

One step = select + plan + observe + keep + weights for a batch of prompts × G rollouts,
on a pool of 1,000,000 samples (the size of a large RLVR corpus). Goals: median ≤ 2 ms
per step for `lppo`; within 5× of a bare numpy pass over the batch's rows; state save +
load ≤ 1 s; ≤ 100 bytes of state per sample; every registered strategy ≤ 5 ms per step.
One more row runs `lppo` on string keys (`problem-0000000` ...; datasets name samples by
id strings): ≤ 2 ms per step and ≤ 40 bytes per sample on disk for the keys (the state
file's size minus that of the same state with int keys).

Curricula that need a model signal (PCL's predictor, ADCL's estimator, GAIN-RL's score,
CLPO's restructurer) run here on array look-ups standing in for it (`bench_signals`): the
rows time the sampler alone; what the model costs to compute a signal is measured apart.

Each row times the hand-written numpy step alongside it, step by step (`x_bare` is against
that), and the string-key row times the int-key `lppo` step alongside it: a change of
machine speed during the run then hits both sides of each comparison alike.

Every row records the load average before and after it; a row that starts at a 1-minute
load above 1.5 is marked invalid (the machine was busy), and so is the whole result.

Usage:
    python benchmarks/sampler_throughput.py [--pool 1000000] [--batch 1024] [--group 8]
    python benchmarks/sampler_throughput.py --quick     # check it runs: 100k pool, 2 rows
Writes benchmarks/results/sampler_throughput.json (--quick: runs/sampler_throughput_quick.json)
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from lppo_sampling import GroupResults, available_strategies, make_strategy

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.sampler_throughput
    from _load import LoadGate, all_valid
except ImportError:  # pragma: no cover
    from benchmarks._load import LoadGate, all_valid

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "sampler_throughput.json"
QUICK_RESULTS = HERE.parent / "runs" / "sampler_throughput_quick.json"
STR_ROW = "lppo (str keys)"


def string_keys(n: int) -> np.ndarray:
    """`problem-0000000`, ...: 15-character dataset-style ids, as an object array."""
    return np.array([f"problem-{i:07d}" for i in range(n)], dtype=object)


def floor_step(ema: np.ndarray, rows: np.ndarray, rewards: np.ndarray) -> None:
    """The absolute floor: gather the batch's rows, reduce rewards, EMA, scatter back."""
    p = rewards.mean(axis=1)
    ema[rows] = 0.8 * ema[rows] + 0.2 * p


def bare_lppo_step(cols: dict, rng: np.random.Generator, rewards: np.ndarray) -> np.ndarray:
    """The same step as the library's `lppo`, hand-written inline with no abstraction.

    Draw the batch, reduce rewards, update counts / EMA / Δ / last pass rate, then
    LP weights. This is the reference for the "within 5× of bare numpy" goal: it
    measures what the library's structure (roles, validation, key index) costs.
    """
    rows = rng.choice(cols["ema"].shape[0], rewards.shape[0], replace=False)
    p = rewards.mean(axis=1)
    seen = cols["n"][rows] > 0
    old = cols["ema"][rows]
    new = np.where(seen, 0.8 * old + 0.2 * p, p)
    cols["delta"][rows] = np.where(seen, new - old, 0.0)
    cols["ema"][rows] = new
    cols["last"][rows] = p
    cols["n"][rows] += 1
    cols["sum"][rows] += rewards.sum(axis=1)
    return 1.0 / (1.0 + np.exp(-8.0 * cols["delta"][rows])) + 0.5


def time_steps(fn, n_steps: int) -> np.ndarray:
    """Per-call wall times in ms."""
    out = np.empty(n_steps)
    for i in range(n_steps):
        t0 = time.perf_counter()
        fn(i)
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


class _ArrayPredictor:
    """Stand-in value model: a per-sample array read and written with fancy indexing."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def predict(self, keys: np.ndarray) -> np.ndarray:
        return self.values[np.asarray(keys, np.int64)]

    def update(self, keys: np.ndarray, targets: np.ndarray) -> None:
        self.values[np.asarray(keys, np.int64)] = targets


def bench_signals(name: str, pool: int, seed: int) -> dict:
    """Array stand-ins for the model-side callables `name` requires (int keys only)."""
    from lppo_sampling.strategies.catalog import strategy_info

    rng = np.random.default_rng(seed + 1)
    out: dict = {}
    for arg in strategy_info(name).signals:
        if arg in ("predictor", "estimate_fn"):
            out[arg] = _ArrayPredictor(rng.random(pool))
        elif arg == "score_fn":
            score = rng.random(pool)
            out[arg] = lambda keys, score=score: score[np.asarray(keys, np.int64)]
        elif arg == "restructure_fn":
            out[arg] = lambda keys, modes: [f"rewritten {m}" for m in modes]
    return out


def bench_categories(name: str, pool: int) -> list[str] | None:
    """Chain-depth labels for h1 (depth 1-4); None for the others."""
    return [f"depth:{1 + i % 4}" for i in range(pool)] if name == "h1" else None


def make_stepper(name: str, pool: int, batch: int, group: int, seed: int,
                 str_keys: bool = False) -> tuple[object, object, float]:
    """A warmed-up strategy on a `pool`-sample pool and its timed step: `step(i)` runs one
    training step's sampler calls and returns their seconds (the simulated environment,
    drawing rewards, is excluded). Also returns `add_samples`'s seconds.

    With `str_keys` the pool is keyed by `string_keys(pool)` instead of `0..pool-1`.
    """
    s = make_strategy(name, group_size=group, seed=seed, **bench_signals(name, pool, seed))
    rng = np.random.default_rng(seed)
    keys = string_keys(pool) if str_keys else np.arange(pool)
    t_add = time.perf_counter()
    s.add_samples(keys, has_solution=np.ones(pool, bool), category=bench_categories(name, pool))
    add_s = time.perf_counter() - t_add
    row_of = {k: i for i, k in enumerate(keys.tolist())} if str_keys else None
    true_p = rng.beta(0.5, 1.5, size=pool)
    # warm the pool so guides/filters see history (one pass over part of it)
    for _ in range(3):
        k = s.select(batch)
        plan = s.plan(k)
        p = true_p[_rows(k, row_of)]
        r = (rng.random((batch, plan.group_size)) < p[:, None]).astype(np.float64)
        s.observe(GroupResults.from_plan(plan, r))
    rewards_bank = [rng.random((batch, group)) for _ in range(8)]

    def step(i: int) -> float:
        t0 = time.perf_counter()
        k = s.select(batch)
        plan = s.plan(k)
        t1 = time.perf_counter()
        p = true_p[_rows(k, row_of)]
        r = (rewards_bank[i % 8][:, : plan.group_size] < p[:, None]).astype(np.float64)
        t2 = time.perf_counter()
        s.observe(GroupResults.from_plan(plan, r))
        s.keep(k)
        s.weights(k)
        return (t1 - t0) + (time.perf_counter() - t2)

    return s, step, add_s


def bench_strategy(
    name: str, pool: int, batch: int, group: int, steps: int, seed: int, str_keys: bool = False,
    controls: dict | None = None,
) -> dict:
    """Median/p90 step time, memory and file size per sample, save/load time for one strategy.

    `controls` ({name: step(i) -> seconds}) are timed interleaved with the strategy, one
    step each after every strategy step, so a change of machine speed hits all alike; their
    medians are recorded as `<name>_median_ms` (e.g. the hand-written numpy step that
    `x_bare` compares against).
    """
    s, step, add_s = make_stepper(name, pool, batch, group, seed, str_keys)
    controls = controls or {}
    ctl_times: dict[str, list[float]] = {c: [] for c in controls}
    times = np.empty(steps)
    with LoadGate() as gate:
        for i in range(steps):
            times[i] = step(i) * 1e3
            for c, fn in controls.items():
                ctl_times[c].append(fn(i) * 1e3)
    nbytes = s.stats.nbytes  # in memory, the hot record's padding included
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "state.npz"
        t0 = time.perf_counter()
        s.save(path)
        t1 = time.perf_counter()
        s2 = make_strategy(name, group_size=group, seed=seed, **bench_signals(name, pool, seed))
        s2.load(path)
        t2 = time.perf_counter()
        assert s2.state_checksum() == s.state_checksum()
        file_bytes = path.stat().st_size
    return {
        "strategy": STR_ROW if str_keys else name,
        "keys": "str" if str_keys else "int",
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        **{f"{c}_median_ms": float(np.median(t)) for c, t in ctl_times.items()},
        "bytes_per_sample": nbytes / pool,
        "file_bytes_per_sample": file_bytes / pool,
        "add_samples_s": add_s,
        "save_s": t1 - t0,
        "load_s": t2 - t1,
        **gate.record(),
    }


def _rows(keys: np.ndarray, row_of: dict | None) -> np.ndarray:
    """Rows of the simulated problems behind `keys` (the environment's side, not timed)."""
    if row_of is None:
        return np.asarray(keys, dtype=np.int64)
    return np.fromiter((row_of[k] for k in keys.tolist()), np.int64, len(keys))


def main() -> None:
    """Run the benchmark, print a table, write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", nargs="*", default=None, help="default: all registered")
    ap.add_argument("--no-str-keys", action="store_true", help="skip the string-key row")
    ap.add_argument("--quick", action="store_true",
                    help="check it runs: pool 100,000, 30 steps, uniform + lppo + str keys")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.pool, args.steps = min(args.pool, 100_000), min(args.steps, 30)
        args.strategies = args.strategies or ["uniform", "lppo"]
    args.out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    run_gate = LoadGate().__enter__()

    rng = np.random.default_rng(args.seed)
    ema = np.zeros(args.pool)
    rows_bank = [rng.choice(args.pool, args.batch, replace=False) for _ in range(8)]
    rew = (rng.random((args.batch, args.group)) < 0.3).astype(np.float64)
    floor_ms = float(
        np.median(time_steps(lambda i: floor_step(ema, rows_bank[i % 8], rew), args.steps))
    )
    cols = {k: np.zeros(args.pool) for k in ("ema", "delta", "last", "sum")} | {
        "n": np.zeros(args.pool, np.int32)
    }
    def bare(i: int) -> float:
        t0 = time.perf_counter()
        bare_lppo_step(cols, rng, rew)
        return time.perf_counter() - t0

    bare_ms = float(np.median(time_steps(lambda i: bare_lppo_step(cols, rng, rew), args.steps)))

    names = args.strategies or available_strategies()
    sizes = (args.pool, args.batch, args.group, args.steps, args.seed)
    rows = [bench_strategy(n, *sizes, controls={"bare": bare}) for n in names]
    if not args.no_str_keys:
        # string keys against int keys *in the same run*, step by step, so the difference
        # is the keys' cost and not a change in machine speed between two rows
        _, int_step, _ = make_stepper("lppo", args.pool, args.batch, args.group, args.seed)
        rows.append(bench_strategy(
            "lppo", *sizes, str_keys=True, controls={"bare": bare, "int_keys": int_step}
        ))
        int_lppo = next((r for r in rows if r["strategy"] == "lppo"), None)
        if int_lppo is not None:  # what the keys cost on disk beyond int keys
            rows[-1]["key_bytes_per_sample_on_disk"] = (
                rows[-1]["file_bytes_per_sample"] - int_lppo["file_bytes_per_sample"]
            )
    for r in rows:  # against the numpy step timed alongside it
        r["x_bare"] = r["median_ms"] / r.get("bare_median_ms", bare_ms)
    run_gate.__exit__(None, None, None)
    valid = all_valid(rows) and run_gate.valid
    result = {
        "config": vars(args) | {"out": str(args.out)},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "loadavg": os.getloadavg(),
        },
        "floor_numpy_median_ms": floor_ms,
        "bare_lppo_numpy_median_ms": bare_ms,
        "goals": {"lppo_median_ms": 2.0, "x_bare": 5.0, "save_load_s": 1.0,
                  "bytes_per_sample": 100, "any_strategy_median_ms": 5.0,
                  "str_keys_median_ms": 2.0, "str_key_bytes_per_sample_on_disk": 40},
        "quick": args.quick,
        "valid": valid,
        "load": run_gate.record(),
        "strategies": rows,
    }
    if not valid:
        result["invalid_reason"] = (
            "a row started at a 1-minute load average > 1.5: timings measure other work; "
            "rerun on a quiet machine before quoting them"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"pool={args.pool:,} batch={args.batch}×G={args.group}  floor {floor_ms:.3f} ms, "
          f"same step hand-written in numpy {bare_ms:.3f} ms (× bare: against that step timed "
          f"alongside each row)")
    print(f"{'strategy':<22}{'median ms':>10}{'p90 ms':>9}{'× bare':>8}{'B/sample':>10}"
          f"{'file B/s':>10}{'save s':>8}{'load s':>8}{'load avg':>10}")
    for r in rows:
        flag = "" if r["valid"] else " INVALID"
        print(f"{r['strategy']:<22}{r['median_ms']:>10.3f}{r['p90_ms']:>9.3f}{r['x_bare']:>8.1f}"
              f"{r['bytes_per_sample']:>10.1f}{r['file_bytes_per_sample']:>10.1f}"
              f"{r['save_s']:>8.3f}{r['load_s']:>8.3f}{r['load_before'][0]:>10.2f}{flag}")
    str_row = next((r for r in rows if r["strategy"] == STR_ROW), None)
    if str_row is not None and "int_keys_median_ms" in str_row:
        print(f"string keys vs int keys, interleaved step by step: {str_row['median_ms']:.3f} "
              f"vs {str_row['int_keys_median_ms']:.3f} ms")
    if str_row is not None and "key_bytes_per_sample_on_disk" in str_row:
        print(f"string keys on disk: {str_row['key_bytes_per_sample_on_disk']:.1f} B/sample "
              f"beyond int keys (goal <= 40)")
    rb, ra = result["load"]["load_before"], result["load"]["load_after"]
    print(f"load average before {rb}, after {ra}: "
          + ("valid" if valid else "INVALID (machine busy; figures not for publication)"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
