"""Regenerate the README's results section from the JSON files in benchmarks/results/.

Numbers in the README are never typed by hand: this script rewrites the block between
`<!-- results:start -->` and `<!-- results:end -->`. A benchmark whose JSON is missing
is listed as "not run". Only valid timings are published: a timing benchmark whose result
is marked `valid: false`, or (for results recorded before the load gate existed) whose
1-minute load average at start exceeds 1.5 (benchmarks/_load.py), is listed as invalid
with its load, and its figures are withheld.

Usage: python benchmarks/readme_tables.py [--readme README.md] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import learner_speed  # noqa: E402
import viability_gate  # noqa: E402
from _load import MAX_START_LOAD  # noqa: E402

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


def start_load(d: dict) -> float | None:
    """1-minute load average at the start of a result, whichever schema recorded it."""
    m, h = d.get("machine", {}), d.get("hardware", {})
    for v in (d.get("load_before"), d.get("load", {}).get("load_before"), m.get("loadavg"),
              m.get("loadavg_1m"), h.get("load_average_1_5_15"), d.get("loadavg_start")):
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, list) and v:
            return float(v[0])
    return None


def validity(d: dict) -> tuple[bool, str]:
    """(publishable, why not): the result's own `valid` flag, else its start load."""
    load = start_load(d)
    if "valid" in d:
        ok = bool(d["valid"])
    else:  # recorded before the load gate: judge by its recorded start load
        ok = load is not None and load <= MAX_START_LOAD
    if ok:
        return True, ""
    where = "unknown load" if load is None else f"load average {load:.1f} at start"
    return False, (f"measured at {where} (> {MAX_START_LOAD} on this shared machine): invalid, "
                   "figures withheld until a rerun on a quiet machine")


def _invalid(title: str, script: str, why: str) -> str:
    return f"**{title}** (benchmarks/{script}): {why}.\n"


def _timing(name: str, title: str) -> dict | str:
    """A timing result to publish, or the line that replaces it (not run / invalid)."""
    d = _load(name)
    if d is None:
        return f"_{name.removesuffix('.json')}: not run_\n"
    ok, why = validity(d)
    return d if ok else _invalid(title, name.replace(".json", ".py"), why)


def sampler_table() -> str:
    """Sampler overhead per step for every strategy."""
    d = _timing("sampler_throughput.json", "Sampler step")
    if isinstance(d, str):
        return d
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
    sk = next((r for r in d["strategies"] if r.get("keys") == "str"), None)
    if sk is not None:
        beside = (f" (int keys timed alongside, step by step: {sk['int_keys_median_ms']:.2f} ms)"
                  if "int_keys_median_ms" in sk else "")
        disk = sk.get("key_bytes_per_sample_on_disk")
        lines.append(
            f"\nString keys (`problem-0000000` ...): {sk['median_ms']:.2f} ms per step{beside}"
            + (f"; {disk:.0f} B/sample on disk beyond int keys" if disk is not None else "")
            + f" (goals ≤ {g.get('str_keys_median_ms', 2.0)} ms, "
            f"≤ {g.get('str_key_bytes_per_sample_on_disk', 40)} B)."
        )
    return "\n".join(lines) + "\n"


def backend_table() -> str:
    """The v2 protocol's work end to end under HF vs vLLM (benchmarks/backend_speed.py)."""
    d = _timing("backend_speed.json", "Backend end to end")
    if isinstance(d, str):
        return d
    loads = [r["load"]["load_before"][0] for r in d["runs"]]
    lines = [
        f"**Backend end to end** (benchmarks/backend_speed.py): the evidence protocol v2's "
        f"training steps and held-out evaluation under each backend, "
        f"{d['setup']['rounds']} interleaved rounds (load {min(loads):.1f}-{max(loads):.1f} "
        "at start), projected to one v2 run (48 steps, 13 evaluations of 1500 problems).",
        "",
        "| backend | start-up s | step s | evaluation ms/problem | v2 run min | v2 matrix h |",
        "|---|---|---|---|---|---|",
    ]
    for b, p in d["projection_v2"].items():
        lines.append(f"| {b} | {p['start_s']:.0f} | {p['step_s']:.1f} | "
                     f"{1e3 * p['eval_s_per_problem']:.0f} | {p['v2_run_s'] / 60:.0f} | "
                     f"{p['v2_matrix_h']:.1f} |")
    lines.append(f"\nFaster end to end: **{d['faster_end_to_end']}**.")
    return "\n".join(lines) + "\n"


def matrix_jobs_line() -> str:
    """A matrix's runs one at a time vs two at once (benchmarks/matrix_jobs.py)."""
    d = _timing("matrix_jobs.json", "Matrix runs in parallel")
    if isinstance(d, str):
        return d
    su, med = d["setup"], d["median_wall_s"]
    loads = [b["load"]["load_before"][0] for b in d["blocks"]]
    head = (f"**Matrix runs in parallel** (benchmarks/matrix_jobs.py): blocks of "
            f"{su['runs_per_block']} v2 runs ({su['steps']} steps, {su['eval_size']} held-out "
            f"problems, backend {su['backend']}), {su['rounds']} interleaved rounds (load "
            f"{min(loads):.1f}-{max(loads):.1f} at start): one at a time {med['1']:.0f} s, two "
            f"at once (`--jobs 2`, each pinned to its own core) {med['2']:.0f} s per block "
            f"({d['speedup_jobs2']:.2f}×).")
    if not d.get("projected_speedup_jobs2"):  # measured before the phases were recorded
        return (head + " Each block computed its own step-0 evaluation, which the second "
                "run waits for, and start-up weighs ~10× more than in a 48-step run, so this "
                "likely understates the matrix's speed-up, which is not projected yet.\n")
    p1, p2 = (d["projection_v2"][k] for k in ("1", "2"))
    low: dict[int, float] = {}  # each mode's lowest MemAvailable over its blocks
    for b in d["blocks"]:
        if b.get("min_mem_available_gib") is not None:
            low[b["jobs"]] = min(b["min_mem_available_gib"], low.get(b["jobs"], float("inf")))
    memory = "" if set(low) != {1, 2} else (
        f" Lowest free memory (MemAvailable): one at a time {low[1]:.1f} GiB, two at once "
        f"{low[2]:.1f} GiB.")
    return (head + f" Projected from the phases to 48-step runs: "
            f"{p1['v2_runs_per_h']:.2f} vs {p2['v2_runs_per_h']:.2f} runs/h, "
            f"**{d['projected_speedup_jobs2']:.2f}×** the throughput.{memory}\n")


def verifier_table() -> str:
    """Verifier throughput and worst-case latency."""
    d = _timing("verifier_throughput.json", "Verifier throughput")
    if isinstance(d, str):
        return d
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
    bad = [validity(r)[1] for r in d.values() if not validity(r)[0]]
    if bad:
        return _invalid("Rollout throughput", "rollout_throughput.py", bad[0])
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
    d = _timing("learner_speed.json", "Learner speed vs TRL")
    if isinstance(d, str):
        return d
    starts = [m["load"]["load_before"][0] for m in d.get("measurements", [])]
    if starts:  # each measurement's own start load: what the load gate judged
        where = (f"{d.get('design', 'interleaved').split(',')[0]}, {len(starts)} measurements, "
                 f"load {min(starts):.1f}-{max(starts):.1f} at start")
        summary = learner_speed.summary_lines(
            d["results"], d["setup"], [m["load"] for m in d["measurements"]], True)
    else:  # recorded before per-measurement loads: the one load average it kept
        la = d.get("hardware", {}).get("load_average_1_5_15", [float("nan")])
        where, summary = f"load average {la[0]:.1f}", d.get("summary_lines", [])
    lines = [f"**Learner speed** (benchmarks/learner_speed.py, {where}; goal ≤ 1.0× TRL):", ""]
    lines += [f"- {x}" for x in summary]
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


def second_matrix_section() -> str:
    """The second matrix (protocol v2) as it stands: runs complete, per-arm finals, and the
    seed-level paired verdict (learning_efficiency_v2/efficiency.json, protocol.json)."""
    d = _load("learning_efficiency_v2/efficiency.json")
    proto = _load("learning_efficiency_v2/protocol.json")
    if d is None or proto is None:
        return "_second matrix (--protocol v2): not run_\n"
    planned = len(proto["seeds"])
    done = d["complete_runs"] == d["runs"]
    lines = [
        f"**Second matrix** (`benchmarks/learning_efficiency.py --protocol v2`: "
        f"{len(proto['strategies'])} arms × {planned} seeds, {', '.join(proto['learners'])}, "
        f"{d['budget_steps']} steps, {proto['config']['eval_size']} held-out problems; "
        f"{d['complete_runs']}/{d['runs']} runs complete{'' if done else ', interim'}): "
        "final held-out accuracy %, mean ± std over complete seeds, and each arm against "
        "uniform seed by seed (Δ in points, 95 % interval, Holm p; one seed is not testable; "
        "'80 % power at': the difference that comparison could detect at the variance it "
        "measured).",
        "",
        "| learner | strategy | complete seeds | final | Δ vs uniform [95 % CI] | Holm p "
        "| 80 % power at |",
        "|---|---|---|---|---|---|---|",
    ]
    paired = {(r["strategy"], r["learner"]): r for r in d.get("paired") or []}
    for a in d["arms"]:
        if not a["n_complete"]:
            continue
        final = f"{100 * a['final']:.1f}" + (
            f" ± {100 * a['final_std']:.1f}" if a.get("final_std") is not None else "")
        r = paired.get((a["strategy"], a["learner"]))
        t = r["test"] if r else None
        mde = "–"
        if a["strategy"] == "uniform" or r is None:
            delta, holm = "–", "–"
        elif t["p"] is None:
            delta, holm = f"{100 * t['diff']:+.1f} (1 seed)", "–"
        else:
            delta = (f"{100 * t['diff']:+.1f} [{100 * t['ci'][0]:+.1f}, "
                     f"{100 * t['ci'][1]:+.1f}]")
            holm = f"{r['holm_p']:.2g}" + (" (detectable)" if r["significant"] else "")
            if t.get("mde") is not None:
                mde = f"{100 * t['mde']:.1f}"
        lines.append(f"| {a['learner']} | {a['strategy']} | {a['n_complete']}/{a['n_runs']} | "
                     f"{final} | {delta} | {holm} | {mde} |")
    rel = "benchmarks/results/learning_efficiency_v2/report.md"
    lines += ["", second_matrix_verdict(d.get("paired") or [], done),
              "", "The full verdict (the LPPO goal, guided vs unguided rollouts), power analysis, "
              f"compute and per-run logs: [{rel}]({rel})."]
    return "\n".join(lines) + "\n"


def second_matrix_verdict(paired: list[dict], done: bool) -> str:
    """One sentence a README reader can quote: what survived Holm, and whether it is final.

    Why: a table of intervals invites reading a promising Δ as a result; the verdict says
    in words what the corrected test did and did not detect.
    """
    tested = [r for r in paired if r["test"]["p"] is not None]
    if not tested:
        return "Verdict: no arm has 2 seeds paired with uniform's yet: no test."
    sig = [f"{r['strategy']}/{r['learner']} ({100 * r['test']['diff']:+.1f} points)"
           for r in tested if r["significant"]]
    head = "Verdict" if done else "Interim (matrix incomplete)"
    if sig:
        return f"{head}: detectable after Holm over {len(tested)} arms: {', '.join(sig)}."
    return (f"{head}: no arm differs detectably from uniform after Holm over {len(tested)} "
            "arms; this does not show them equal (each row's '80 % power at' and interval "
            "bound what remains possible).")


def gate_section() -> str:
    """Viability gate verdict per (format, guide) from viability_gate/gate.json."""
    d = _load("viability_gate/gate.json")
    if d is None:
        return "_viability_gate: not run_\n"
    lines = ["**Viability gate** (benchmarks/viability_gate.py): do prefixes raise the pass rate "
             "of the problems they are meant for (fresh rollouts, paired exact test, Holm)?", ""]
    for fmt, f in d["formats"].items():
        for guide, g in f["guides"].items():
            lines.append(f"- {fmt} / {guide} prefixes: {viability_gate.guide_verdict(g)}")
    rel = "benchmarks/results/viability_gate/gate.md"
    return "\n".join([*lines, "", f"Details: [{rel}]({rel})."]) + "\n"


def power_section() -> str:
    """The planned design of the second matrix (benchmarks/power.py)."""
    d = _load("power.json")
    if d is None:
        return "_power analysis: not run_\n"
    p = d.get("plan")
    plan = (f"{p['seeds']} seeds x {p['n_eval']} held-out problems (MDE {100 * p['mde']:.1f} "
            "points)" if p else "no design up to 64 seeds")
    pilot = d.get("pilot")
    measured = "" if pilot is None else (
        f" A pilot of {pilot['seeds']} uniform seeds on the second matrix's own protocol "
        f"({pilot['n_eval']} problems) finished at "
        + " and ".join(f"{100 * f:.1f} %" for f in pilot["finals"])
        + f" (sd {100 * pilot['sigma_final']:.2f} points; independent per-problem flips alone "
        f"give {100 * pilot['sigma_problem_noise']:.2f}); the plan keeps the larger "
        f"estimate, {100 * d['sigma_seed']:.2f} points, as fixed before the pilot.")
    proto = _load("learning_efficiency_v2/protocol.json") or {}
    mde_t = (proto.get("power") or {}).get("design_mde_t")
    t_ref = "" if mde_t is None else (
        f" The verdict's seed-level test estimates its variance from the "
        f"{len(proto['seeds'])} seeds (t reference), so at that sd it detects at most "
        f"{100 * mde_t:.1f} points; each comparison states what it reached at the variance "
        "it measured.")
    return (f"**Power analysis** (benchmarks/power.py): the first matrix (3 seeds, 200 problems) "
            f"could detect only {100 * d['v1_design_mde']:.1f} points at 80 % power; a "
            f"3-point MDE needs {plan}.{measured}{t_ref}\n")


def render() -> str:
    """The whole generated block."""
    parts = [
        sampler_table(),
        verifier_table(),
        rollout_table(),
        backend_table(),
        matrix_jobs_line(),
        learner_table(),
        evidence_section(),
        second_matrix_section(),
        gate_section(),
        power_section(),
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
