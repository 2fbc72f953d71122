"""Benchmark the math reward: GSM8K-style completions verified per second, and the
worst-case latency on a hostile corpus.

Goals: >= 300 completions/s on 2 cores; hostile worst case <= deadline + 0.5 s.
Run: `python benchmarks/verifier_throughput.py [--n 4000] [--deadline 2.0]`, or `--quick`
to check that it runs (400 completions; the result is marked not valid). Writes
benchmarks/results/verifier_throughput.json (quick: verifier_throughput_quick.json).
The 1-minute load average is recorded before and after; a run that starts above 1.5
is marked invalid (a busy machine says nothing about the code).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from importlib.metadata import version
from pathlib import Path

from lppo_env import MathVerifier, load_gsm8k, load_problems

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k_train.jsonl"
OUT = ROOT / "benchmarks" / "results" / "verifier_throughput.json"
MAX_START_LOAD = 1.5


def gsm8k_completions(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Half correct, half wrong; boxed, `####`, "$1,000"-style and bare-number endings."""
    problems = load_gsm8k(GSM8K) if GSM8K.exists() else load_problems("gsm_symbolic", size=1000)
    rng = random.Random(seed)
    completions, answers = [], []
    endings = ["The answer is \\boxed{{{}}}.", "#### {}", "So she pays ${}.", "Total: {} items"]
    for _ in range(n):
        p = rng.choice(problems)
        value = p.answer if rng.random() < 0.5 else rng.choice(problems).answer
        body = "\n".join(p.steps)
        completions.append(f"{body}\n{rng.choice(endings).format(value)}")
        answers.append(p.answer)
    return completions, answers


def symbolic_completions(n: int, seed: int) -> tuple[list[str], list[str]]:
    """MATH-style answers the fast path cannot decide (always go through math-verify)."""
    rng = random.Random(seed)
    pairs = [("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"), ("2\\sqrt{2}", "\\sqrt{8}"),
             ("x+1", "1+x"), ("\\{1,2\\}", "\\{2,1\\}"), ("(1,2]", "(1, 2]"),
             ("\\pi/2", "\\frac{\\pi}{2}"), ("x^2-1", "(x-1)(x+1)"), ("3\\sqrt{5}", "\\sqrt{45}")]
    completions, answers = [], []
    for _ in range(n):
        gold, pred = rng.choice(pairs)
        completions.append(f"We simplify step by step.\nSo the answer is \\boxed{{{pred}}}.")
        answers.append(gold)
    return completions, answers


def hostile_corpus() -> list[tuple[str, object, str]]:
    return [
        ("1 MB of digits", "1" * 1_000_000, "1"),
        ("1 MB then boxed", "x" * 1_000_000 + "\\boxed{5}", "5"),
        ("50k nested braces", "\\boxed{" + "{" * 50_000 + "1" + "}" * 50_000 + "}", "1"),
        ("200 nested fracs", "\\boxed{" + "\\frac{" * 200 + "1" + "}{2}" * 200 + "}", "1"),
        ("9^{9^{9^9}}", "\\boxed{9^{9^{9^{9}}}}", "5"),
        ("9^9^9^9", "\\boxed{9^9^9^9}", "5"),
        ("tower factorial", "\\boxed{10^{10^{10^{10}}}!}", "2"),
        ("NUL bytes", "\x00\\boxed{3\x00}\x00", "3"),
        ("lone surrogates", "\ud800\udfff \\boxed{4} \udc80", "4"),
        ("invalid utf-8 bytes", b"\xff\xfe \\boxed{6}", "6"),
        ("None", None, "1"),
        ("5000 boxed", "\\boxed{1}" * 5000, "1"),
        ("5000 unclosed boxed", "\\boxed{" * 5000, "1"),
        ("3000 nested sqrt", "\\sqrt{" * 3000 + "2", "2"),
        ("2000-entry matrix", "\\boxed{\\begin{pmatrix}" + "1&" * 2000 + "1\\end{pmatrix}}", "1"),
    ]


def throughput(verifier: MathVerifier, completions: list[str], answers: list[str],
               batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(completions), batch):
        verifier.verify_batch(completions[i:i + batch], answers[i:i + batch])
    return len(completions) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4000, help="completions per throughput run")
    ap.add_argument("--batch", type=int, default=256, help="completions per verify_batch call")
    ap.add_argument("--deadline", type=float, default=2.0, help="verifier per-item deadline (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="400 completions: checks it runs")
    args = ap.parse_args()
    if args.quick:
        args.n = min(args.n, 400)
    load_before = os.getloadavg()[0]

    gsm_c, gsm_a = gsm8k_completions(args.n, args.seed)
    sym_c, sym_a = symbolic_completions(args.n // 4, args.seed)
    rows: list[tuple[str, float]] = []
    with MathVerifier(deadline=args.deadline) as fast, \
            MathVerifier(deadline=args.deadline, fast_path=False) as pool:
        fast.start()
        pool.start()
        rows.append(
            ("gsm8k, fast path + pool (default)", throughput(fast, gsm_c, gsm_a, args.batch))
        )
        rows.append(("gsm8k, pool only (math-verify on every item)",
                     throughput(pool, gsm_c, gsm_a, args.batch)))
        rows.append(("symbolic (MATH-style), pool", throughput(fast, sym_c, sym_a, args.batch)))

        latencies = []
        for name, completion, gold in hostile_corpus():
            t0 = time.perf_counter()
            r = fast.verify(completion, gold)  # type: ignore[arg-type]
            latencies.append({"case": name, "seconds": round(time.perf_counter() - t0, 4),
                              "status": r.status, "reward": r.reward})
        t0 = time.perf_counter()
        batch_results = fast.verify_batch([c for _, c, _ in hostile_corpus()],  # type: ignore[misc]
                                          [g for _, _, g in hostile_corpus()])
        hostile_batch_s = time.perf_counter() - t0
        stats = dict(fast.stats)

    worst = max(latencies, key=lambda x: x["seconds"])
    load_after = os.getloadavg()[0]
    valid = not args.quick and load_before <= MAX_START_LOAD
    result = {
        "valid": valid,
        "invalid_reason": None if valid else (
            "--quick run" if args.quick
            else f"load average {load_before:.2f} > {MAX_START_LOAD} at start"),
        "quick": args.quick,
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(load_after, 2),
        "goal_completions_per_s": 300,
        "goal_worst_latency_s": args.deadline + 0.5,
        "deadline_s": args.deadline,
        "n": args.n,
        "batch": args.batch,
        "throughput_per_s": {name: round(v, 1) for name, v in rows},
        "hostile_worst_latency_s": worst["seconds"],
        "hostile_worst_case": worst["case"],
        "hostile_per_item": latencies,
        "hostile_whole_batch_s": round(hostile_batch_s, 3),
        "hostile_whole_batch_statuses": [r.status for r in batch_results],
        "verifier_stats": stats,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "math_verify": version("math-verify"),
            "note": "2 cores shared with other jobs; numbers vary with load",
        },
    }
    print(f"{'benchmark':<48} {'value':>12}")
    print("-" * 61)
    for name, v in rows:
        print(f"{name:<48} {v:>10.1f}/s")
    print(f"{'hostile worst-case latency (' + worst['case'] + ')':<48} {worst['seconds']:>10.3f} s")
    print(f"{'hostile corpus as one batch':<48} {hostile_batch_s:>10.3f} s")
    print(f"goals: >= 300/s; worst latency <= {args.deadline + 0.5:.1f} s; "
          f"load avg {load_before:.2f} before, {load_after:.2f} after")
    if not valid:
        print(f"NOT VALID as a measurement: {result['invalid_reason']}")
    out = OUT.with_name("verifier_throughput_quick.json") if args.quick else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
