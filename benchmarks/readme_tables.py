"""Regenerate the README's results section from the JSON files in benchmarks/results/.

Numbers in the README are never typed by hand: this script rewrites the block between
`<!-- results:start -->` and `<!-- results:end -->`. A benchmark whose JSON is missing
is listed as "not run".

Usage: python benchmarks/readme_tables.py [--readme README.md] [--check]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _load(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def _load_note(d: dict) -> str:
    la = d.get("machine", {}).get("loadavg") or d.get("loadavg")
    if not la:
        return ""
    return f" (load average {la[0]:.1f} on {d.get('machine', {}).get('cpus', '?')} cores)"


def sampler_table() -> str:
    """Sampler overhead per step for every strategy."""
    d = _load("sampler_throughput.json")
    if d is None:
        return "_sampler_throughput: not run_\n"
    c, g = d["config"], d["goals"]
    lines = [
        f"**Sampler step** (select + plan + observe + keep + weights), pool {c['pool']:,}, "
        f"batch {c['batch']} × G={c['group']}{_load_note(d)}. "
        f"Goals: `lppo` ≤ {g['lppo_median_ms']} ms, "
        f"every strategy ≤ {g['any_strategy_median_ms']} ms, ≤ {g['x_bare']}× the same step "
        f"hand-written in numpy ({d['bare_lppo_numpy_median_ms']:.3f} ms), save+load ≤ "
        f"{g['save_load_s']} s, ≤ {g['bytes_per_sample']} B/sample.",
        "",
        "| strategy | median ms | p90 ms | × hand-written | bytes/sample | save+load s |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(d["strategies"], key=lambda r: r["median_ms"]):
        lines.append(
            f"| {r['strategy']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['x_bare']:.1f} | "
            f"{r['bytes_per_sample']:.0f} | {r['save_s'] + r['load_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def verifier_table() -> str:
    """Verifier throughput and worst-case latency."""
    d = _load("verifier_throughput.json")
    if d is None:
        return "_verifier_throughput: not run_\n"
    lines = [
        f"**Verifier** (math-verify in a worker pool, deadline {d['deadline_s']} s). Goals: ≥ "
        f"{d['goal_completions_per_s']}/s, worst hostile item ≤ {d['goal_worst_latency_s']} s.",
        "",
        "| workload | completions/s |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:,.0f} |" for k, v in d["throughput_per_s"].items()]
    lines.append(
        f"\nWorst hostile item: `{d['hostile_worst_case']}` "
        f"in {d['hostile_worst_latency_s']:.2f} s."
    )
    return "\n".join(lines) + "\n"


def rollout_table() -> str:
    """HF generate vs vLLM tokens/s, per device."""
    d = _load("rollout_throughput.json")
    if d is None:
        return "_rollout_throughput: not run_\n"
    lines = [
        "**Rollout throughput**, default model, temperature 1 (goal: vLLM ≥ 5× HF).",
        "",
        "| device | backend | prompts × samples × max tokens | tokens/s | load avg | vLLM / HF |",
        "|---|---|---|---|---|---|",
    ]
    for device, r in d.items():
        w = r["workload"]
        for name in ("hf", "vllm"):
            if name not in r:
                continue
            b = r[name]
            la = b.get("loadavg_before", [float("nan")])[0]
            lines.append(
                f"| {device} | {name} | {b['prompts']} × {w['samples_per_prompt']} × "
                f"{w['max_new_tokens']} | {b['tokens_per_s']:.1f} | {la:.1f} | "
                f"{r.get('speedup_vllm_over_hf', float('nan')):.1f}× |"
            )
    return "\n".join(lines) + "\n"


def learner_table() -> str:
    """Our GRPO step vs TRL's GRPOTrainer (benchmarks/learner_speed.py)."""
    d = _load("learner_speed.json")
    if d is None:
        return "_learner_speed: not run_\n"
    la = d.get("hardware", {}).get("load_average_1_5_15", [float("nan")])
    lines = [
        f"**Learner speed** (benchmarks/learner_speed.py, load average {la[0]:.1f} at start; "
        "goal ≤ 1.0× TRL):",
        "",
    ]
    lines += [f"- {x}" for x in d.get("summary_lines", [])]
    return "\n".join(lines) + "\n"


def evidence_section() -> str:
    """Learning efficiency: verdict and per-arm table from efficiency.json (its report.md)."""
    d = _load("learning_efficiency/efficiency.json")
    report = RESULTS / "learning_efficiency" / "report.md"
    if d is None:
        return "_learning_efficiency: no report yet_\n"

    def pct(x: float | None, sd: float | None = None) -> str:
        if x is None:
            return "–"
        return f"{100 * x:.1f}" + (f" ± {100 * sd:.1f}" if sd is not None else "")

    lines = [
        f"**Learning efficiency** (benchmarks/learning_efficiency.py, {d['budget_steps']}-step "
        f"budget, {d['complete_runs']}/{d['runs']} runs complete; held-out accuracy %, mean ± "
        "std over complete seeds):",
        "",
        *d["verdict"],
        *d.get("notes", []),
        "",
        "| learner | strategy | complete seeds | initial | final | best | steps to uniform final |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in d["arms"]:
        stt = r.get("steps_to_target")
        lines.append(
            f"| {r['learner']} | {r['strategy']} | {r['n_complete']}/{r['n_runs']} "
            f"| {pct(r['initial'])} | {pct(r['final'], r['final_std'])} "
            f"| {pct(r['best'], r['best_std'])} | {'–' if stt is None else stt} |"
        )
    rel = report.relative_to(ROOT)
    lines += ["", f"Curves, per-run numbers and the protocol: [{rel}]({rel})."]
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole generated block."""
    parts = [
        sampler_table(),
        verifier_table(),
        rollout_table(),
        learner_table(),
        evidence_section(),
    ]
    note = "<!-- generated by benchmarks/readme_tables.py; do not edit -->"
    return "\n".join([START, note, *parts, END])


def main() -> None:
    """Rewrite (or, with --check, verify) the README block."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    args = ap.parse_args()
    text = args.readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{args.readme}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + render() + tail
    if args.check:
        raise SystemExit(0 if new == text else 1)
    args.readme.write_text(new)
    print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
