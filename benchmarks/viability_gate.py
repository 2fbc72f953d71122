"""Viability gate: does a prefix guide raise the pass rate of the problems it is meant for?

Prefix-guidance arms enter the learning-efficiency matrix only on a task/format where this
gate passes. Per format (task + cut):

1. screen: 8 unguided rollouts (temperature 1) per problem, in dataset order, until
   `--n-per-set` problems failed 0/8 (the expert set) and `--n-per-set` solved 1-2/8 (the
   self set), or `--max-screen` problems were screened;
2. expert set: 8 *fresh* unguided rollouts and 8 rollouts from the expert prefix at each
   cut depth (`make_prefix(problem, depth, cut=...)`);
3. self set: 8 fresh unguided rollouts and 8 rollouts from a cut of the problem's own
   successful screening rollout at each depth (`lppo_sampling.strategies.self_prefix`: the
   cut the self-prefix guide makes in training).

Fresh unguided rollouts matter: the sets were chosen on their screening pass rate, so
that pass rate is biased (regression to the mean); the comparison uses new draws only.

Statistics per (format, guide, depth): pooled pass rates with Wilson and Clopper-Pearson
95% intervals, Fisher's exact test on the pooled 2x2 table, and an exact paired sign test
over problems (guided passes vs unguided passes of the same problem). The gate passes for a
(format, guide) when, at some depth, guided beats unguided with a Holm-adjusted paired
sign-test p < 0.05 over all (format, guide, depth) tests of the run. Counted and reported:
planned guided slots without a usable prefix (must be 0) and prefixes that state the answer
(must be 0).

Output: `benchmarks/results/viability_gate/<format>/{screen,expert,self}.jsonl` (one line per
problem, appended as chunks finish: the run resumes where it stopped), `gate.json` and
`gate.md`. Rollouts use vLLM when it is importable (`--backend auto`), else HF `generate`.

    python benchmarks/viability_gate.py          # full gate, built-in formats (vllm extra: faster)
    python benchmarks/viability_gate.py --quick  # CI-sized
    python benchmarks/viability_gate.py --report # stats only, from the JSONL files
    python benchmarks/viability_gate.py --model Qwen/Qwen2.5-Math-1.5B --data math_train.jsonl
        # a problems file (the GPU preset's): the matrix on that file looks this verdict up

The statistics need scipy (`pip install scipy` in a vLLM-only environment).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import sys
import time
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _load import load_now, load_record  # noqa: E402
from power import holm  # noqa: E402 - one Holm correction for the gate and the matrix

OUT = REPO / "benchmarks" / "results" / "viability_gate"
# format name -> (dataset, dataset kwargs, prefix cut, generation cap)
FORMATS: dict[str, dict[str, Any]] = {
    "chain_long:mid": {"data": "chain_long", "kwargs": {"size": 2000}, "cut": "mid",
                       "max_new_tokens": 96},
    "default:mid": {"data": "default", "kwargs": {"size": 2000, "prefix_cut": "mid"}, "cut": "mid",
                    "max_new_tokens": 48},
    "default:step": {"data": "default", "kwargs": {"size": 2000}, "cut": "step",
                     "max_new_tokens": 48},
}
FILE_MAX_NEW_TOKENS = 1024  # a problems file is MATH-style: long worked solutions


def is_problems_file(data: str) -> bool:
    """A dataset given as a file (JSONL/parquet), not a built-in generator's name."""
    return Path(data).suffix in (".jsonl", ".parquet")


def format_name(data: str, cut: str) -> str:
    """The gate's key for a dataset and cut; a problems file is named by its resolved path.

    `learning_efficiency.gate_format` uses it too, so a matrix finds the verdict of the gate
    run on its own data however the path was spelled.
    """
    if is_problems_file(data):
        data = str(Path(data).resolve())
    return f"{data}:{cut}"


def file_format(path: str, max_new_tokens: int = FILE_MAX_NEW_TOKENS) -> tuple[str, dict]:
    """A problems file with worked solutions (JSONL or parquet, e.g. MATH) as a gate format.

    Cut after whole steps: file data carries no mid-cut tag, so that is what training does.
    """
    return format_name(path, "step"), {"data": str(Path(path).resolve()), "kwargs": {},
                                       "cut": "step", "max_new_tokens": max_new_tokens}


def format_dir(out: Path, fmt: str) -> Path:
    """Where a format's JSONL files live ("default:mid" -> default_mid; paths flattened)."""
    return out / re.sub(r"[^A-Za-z0-9_.-]+", "_", fmt).strip("_")


DEPTHS = (0.25, 0.5, 0.75)
ALPHA = 0.05
MIN_SET = 100  # problems per set before a gate verdict counts (issue 15)


# ------------------------------------------------------------------ statistics (pure)
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial proportion ((nan, nan) when n = 0)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (0.0 if k == 0 else max(0.0, c - h), 1.0 if k == n else min(1.0, c + h))


def clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion."""
    from scipy.stats import beta

    if n == 0:
        return (math.nan, math.nan)
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (lo, hi)


def fisher_p(k1: int, n1: int, k0: int, n0: int) -> float:
    """Two-sided Fisher exact p of the 2x2 table (k1 of n1) vs (k0 of n0)."""
    from scipy.stats import fisher_exact

    return float(fisher_exact([[k1, n1 - k1], [k0, n0 - k0]]).pvalue)


def sign_test_p(diffs: list[int]) -> tuple[int, int, float]:
    """Exact two-sided paired sign test: (#positive, #negative, p); ties are dropped."""
    from scipy.stats import binomtest

    pos = sum(d > 0 for d in diffs)
    neg = sum(d < 0 for d in diffs)
    p = float(binomtest(pos, pos + neg, 0.5).pvalue) if pos + neg else 1.0
    return pos, neg, p


# ------------------------------------------------------------------ files (resumable)
def read_jsonl(path: Path) -> list[dict]:
    """Lines of a JSONL file; a torn last line (killed mid-write) is ignored."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def append_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


# ------------------------------------------------------------------ generation
class Runner:
    """Problems of one format, a rollout backend and the verifier."""

    def __init__(self, fmt: str, spec: dict[str, Any], backend: Any, verifier: Any,
                 args: argparse.Namespace):
        from lppo_env import MathReasoningEnv, load_problems

        self.fmt, self.spec, self.backend, self.verifier, self.args = (
            fmt, spec, backend, verifier, args)
        kwargs = dict(spec["kwargs"])
        if args.quick and "size" in kwargs:
            kwargs["size"] = min(kwargs["size"], 64)
        self.problems = load_problems(spec["data"], **kwargs)
        if args.quick:
            self.problems = self.problems[:64]
        self.env = MathReasoningEnv(self.problems)
        self.by_id = {p.id: p for p in self.problems}
        self.dir = format_dir(args.out, fmt)
        self.chunk = 0

    def generate(self, jobs: list[tuple[Any, str, int, Any]]) -> list[list[tuple[float, str, int]]]:
        """jobs: (problem, prefix, n, tag) -> per job, n (reward, full text, length)."""
        from agents.rollout.base import RolloutRequest, SamplingConfig

        requests = [RolloutRequest(self.env.messages(p), prefix=pre, n=n, tag=k)
                    for k, (p, pre, n, _) in enumerate(jobs)]
        self.chunk += 1
        # crc32, not hash(): str hashes change with every process, and so would the draws
        seed = self.args.seed * 1_000_003 + zlib.crc32(self.fmt.encode()) % 10_007 * 101 \
            + self.chunk
        rollouts = self.backend.generate(
            requests, SamplingConfig(temperature=1.0, max_new_tokens=self.spec["max_new_tokens"],
                                     seed=seed % (2**31)))
        answers = [jobs[r.request_index][0].answer for r in rollouts]
        verdicts = self.verifier.verify_batch([r.full_text for r in rollouts], answers)
        out: list[list[tuple[float, str, int]]] = [[] for _ in jobs]
        for r, v in zip(rollouts, verdicts, strict=True):
            out[r.request_index].append((float(v.reward), r.full_text, len(r.response_ids)))
        return out


def _passes(res: list[tuple[float, str, int]]) -> int:
    return int(sum(r >= 1.0 for r, _, _ in res))


def screen(run: Runner, log: Any, need: tuple[str, ...] = ("expert", "self")
           ) -> tuple[list[dict], list[dict]]:
    """Screen until the `need`ed sets are full; return (expert set, self set) screening rows."""
    from lppo_env.prefix import can_guide, make_prefix
    from lppo_sampling.strategies.self_prefix import cut_points, replayable_head

    a, path = run.args, run.dir / "screen.jsonl"
    rows = read_jsonl(path)
    done = {r["id"] for r in rows}

    def sets(rs: list[dict]) -> tuple[list[dict], list[dict]]:
        exp = [r for r in rs if r["passes"] == 0 and r["usable"]][: a.n_per_set]
        slf = [r for r in rs if 1 <= r["passes"] <= 2 and r["self_usable"]][: a.n_per_set]
        return exp, slf

    todo = [p for p in run.problems[: a.max_screen] if p.id not in done]
    while todo:
        exp, slf = sets(rows)
        if ("expert" not in need or len(exp) >= a.n_per_set) and (
                "self" not in need or len(slf) >= a.n_per_set):
            break
        batch, todo = todo[: a.chunk_problems], todo[a.chunk_problems:]
        before, t0 = load_now(), time.perf_counter()
        res = run.generate([(p, "", a.rollouts, None) for p in batch])
        new = []
        for p, rs in zip(batch, res, strict=True):
            wins = [t for r, t, _ in rs if r >= 1.0]
            heads = [replayable_head(t, p.answer) for t in wins]
            new.append({
                "id": p.id, "passes": _passes(rs), "n": len(rs),
                "usable": can_guide(p) if run.spec["cut"] == "mid"
                else all(make_prefix(p, d, cut="step").guided for d in DEPTHS),
                "self_usable": any(cut_points(h) for h in heads),
                "success_texts": wins[:2],
                "mean_len": sum(n for _, _, n in rs) / len(rs),
            })
        append_jsonl(path, new)
        rows += new
        log(run.fmt, "screen", len(rows), time.perf_counter() - t0, before)
    return sets(rows)


def evaluate_set(run: Runner, guide: str, chosen: list[dict], log: Any) -> None:
    """Fresh unguided rollouts and guided rollouts at every depth for the chosen problems."""
    from lppo_env.answers import contains_answer
    from lppo_env.prefix import make_prefix
    from lppo_sampling.strategies.self_prefix import cut_self_prefix, replayable_head

    a, path = run.args, run.dir / f"{guide}.jsonl"
    done = {r["id"] for r in read_jsonl(path)}
    todo = [r for r in chosen if r["id"] not in done]
    for start in range(0, len(todo), a.chunk_problems):
        batch = todo[start: start + a.chunk_problems]
        jobs, meta = [], []
        for row in batch:
            p = run.by_id[row["id"]]
            prefixes = {}
            for d in DEPTHS:
                if guide == "expert":
                    prefixes[d] = make_prefix(p, d, cut=run.spec["cut"]).text
                else:
                    usable = [replayable_head(t, p.answer) for t in row["success_texts"]]
                    head = next(h for h in usable if cut_self_prefix(h, 1.0))
                    prefixes[d] = cut_self_prefix(head, d)
            jobs.append((p, "", a.rollouts, None))
            for d in DEPTHS:
                if prefixes[d]:  # an unusable prefix is not planned: counted instead
                    jobs.append((p, prefixes[d], a.rollouts, None))
            meta.append((p, prefixes))
        before, t0 = load_now(), time.perf_counter()
        res = iter(run.generate(jobs))
        new = []
        for p, prefixes in meta:
            unguided = next(res)
            rec = {"id": p.id, "unguided": _passes(unguided), "n": len(unguided),
                   "guided": {}, "prefix": {}, "unusable": [], "leaks": []}
            for d in DEPTHS:
                if not prefixes[d]:
                    rec["unusable"].append(d)
                    continue
                rs = next(res)
                rec["guided"][str(d)] = _passes(rs)
                rec["prefix"][str(d)] = prefixes[d]
                if contains_answer(prefixes[d], p.answer):
                    rec["leaks"].append(d)
            new.append(rec)
        append_jsonl(path, new)
        log(run.fmt, guide, len(done) + start + len(batch), time.perf_counter() - t0, before)


# ------------------------------------------------------------------ report
def analyse(out: Path, n_per_set: int, known: dict[str, dict] | None = None) -> dict:
    """Pass rates, intervals, exact tests and the Holm-corrected gate verdict.

    `known`: the formats to look for (default: the built-in ones).
    """
    tests = []
    formats: dict[str, Any] = {}
    for fmt in known or FORMATS:
        d = format_dir(out, fmt)
        screen_rows = read_jsonl(d / "screen.jsonl")
        if not screen_rows:
            continue
        f: dict[str, Any] = {
            "screened": len(screen_rows),
            "screen_pass_rate": sum(r["passes"] for r in screen_rows)
            / max(1, sum(r["n"] for r in screen_rows)),
            "never": sum(r["passes"] == 0 for r in screen_rows),
            "rare_1_2": sum(1 <= r["passes"] <= 2 for r in screen_rows),
            "guides": {},
        }
        for guide in ("expert", "self"):
            rows = read_jsonl(d / f"{guide}.jsonl")
            if not rows:
                continue
            k0 = sum(r["unguided"] for r in rows)
            n0 = sum(r["n"] for r in rows)
            g: dict[str, Any] = {
                "problems": len(rows), "target": max(n_per_set, MIN_SET),
                "unguided": {"passes": k0, "n": n0, "rate": k0 / n0,
                             "wilson": wilson(k0, n0), "clopper_pearson": clopper_pearson(k0, n0)},
                "unusable_planned": sum(len(r["unusable"]) for r in rows),
                "leaks": sum(len(r["leaks"]) for r in rows),
                "depths": {},
            }
            for dep in DEPTHS:
                pairs = [(r["guided"][str(dep)], r["unguided"]) for r in rows
                         if str(dep) in r["guided"]]
                if not pairs:
                    continue
                k1 = sum(x for x, _ in pairs)
                n1 = sum(r["n"] for r in rows if str(dep) in r["guided"])
                k0d = sum(y for _, y in pairs)
                pos, neg, p_sign = sign_test_p([x - y for x, y in pairs])
                g["depths"][str(dep)] = {
                    "problems": len(pairs), "passes": k1, "n": n1, "rate": k1 / n1,
                    "wilson": wilson(k1, n1), "clopper_pearson": clopper_pearson(k1, n1),
                    "unguided_rate_same_problems": k0d / n1,
                    "diff": k1 / n1 - k0d / n1,
                    "fisher_p": fisher_p(k1, n1, k0d, n1),
                    "sign_test": {"better": pos, "worse": neg, "p": p_sign},
                }
                tests.append((fmt, guide, str(dep)))
            f["guides"][guide] = g
        formats[fmt] = f
    adj = holm([formats[f]["guides"][g]["depths"][dp]["sign_test"]["p"] for f, g, dp in tests])
    for (f, g, dp), p in zip(tests, adj, strict=True):
        row = formats[f]["guides"][g]["depths"][dp]
        row["sign_test"]["p_holm"] = p
        row["significant_better"] = p < ALPHA and row["diff"] > 0
    for f in formats.values():
        for g in f["guides"].values():
            complete = g["problems"] >= g["target"]
            g["passes_gate"] = complete and g["unusable_planned"] == 0 and g["leaks"] == 0 and any(
                r["significant_better"] for r in g["depths"].values())
            g["complete"] = complete
    return {"alpha": ALPHA, "tests": len(tests), "depths": list(DEPTHS), "formats": formats}


def _pct(x: float) -> str:
    return "—" if x != x else f"{100 * x:.1f}"


def guide_verdict(g: dict) -> str:
    """One guide's gate outcome in a line: the README and the matrix report both quote it."""
    best = max(g["depths"].values(), key=lambda r: r["diff"], default=None)
    status = ("passes" if g["passes_gate"] else "incomplete" if not g["complete"]
              else "does not pass")
    return (f"{status} ({g['problems']}/{g['target']} problems; "
            f"unguided {100 * g['unguided']['rate']:.1f} %"
            + (f", best depth {100 * best['rate']:.1f} % (Holm p "
               f"{best['sign_test']['p_holm']:.2g})" if best else "") + ")")


def report_md(result: dict, meta: dict) -> str:
    lines = [
        "# Viability gate: do prefixes raise the pass rate where they are meant to?",
        "",
        "Generated by `benchmarks/viability_gate.py` from the JSONL files next to this report.",
        f"Expert set: problems failed 0/{meta['rollouts']} unguided in screening; self set: "
        f"solved 1-2/{meta['rollouts']}. Each gets {meta['rollouts']} *fresh* unguided rollouts "
        f"and {meta['rollouts']} guided rollouts per cut depth {list(DEPTHS)}. Intervals: 95% "
        "Wilson [Clopper-Pearson]. Tests: Fisher exact (pooled rollouts) and an exact paired "
        f"sign test over problems, Holm-corrected over all {result['tests']} "
        "(format, guide, depth) tests. A (format, guide) passes when its set is complete, no "
        "planned guided slot lacked a prefix, no prefix states the answer, and at some depth "
        f"guided beats unguided at Holm p < 0.05. A set counts as complete at >= {MIN_SET} "
        "problems; smaller runs are preliminary and gate nothing.",
        "",
        f"Backend: {meta.get('backend')}; model: {meta.get('model', 'default')}; load average "
        f"at start {meta.get('load_start')}, at the last write {meta.get('load_end')} (pass rates "
        "do not depend on load; only the wall times do).",
        "",
        "| format | guide | problems | unguided % | depth | guided % [Wilson] [C-P] | Δ pts |"
        " Fisher p | sign test +/− (p, Holm p) | unusable | leaks |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for fmt, f in result["formats"].items():
        for guide, g in f["guides"].items():
            u = g["unguided"]
            for dep, r in g["depths"].items():
                w, cp, st = r["wilson"], r["clopper_pearson"], r["sign_test"]
                lines.append(
                    f"| {fmt} | {guide} | {r['problems']}/{g['target']} | "
                    f"{_pct(r['unguided_rate_same_problems'])} | {dep} | {_pct(r['rate'])} "
                    f"[{_pct(w[0])}, {_pct(w[1])}] [{_pct(cp[0])}, {_pct(cp[1])}] | "
                    f"{100 * r['diff']:+.1f} | {r['fisher_p']:.2g} | {st['better']}/{st['worse']}"
                    f" ({st['p']:.2g}, {st['p_holm']:.2g}) | {g['unusable_planned']} | "
                    f"{g['leaks']} |")
            status = ("PASSES" if g["passes_gate"] else
                      "incomplete" if not g["complete"] else "does not pass")
            verdicts.append(f"- **{fmt} / {guide}**: {status} ({g['problems']}/{g['target']} "
                            f"problems; unguided {_pct(u['rate'])} % "
                            f"[{_pct(u['wilson'][0])}, {_pct(u['wilson'][1])}]).")
    lines += ["", "Screening:", ""]
    for fmt, f in result["formats"].items():
        lines.append(f"- {fmt}: {f['screened']} problems screened, pass rate "
                     f"{_pct(f['screen_pass_rate'])} %, {f['never']} never solved, "
                     f"{f['rare_1_2']} solved 1-2 times.")
    lines += ["", "## Verdict", "", *verdicts, ""]
    gated = [f"{fmt}/{g}" for fmt, f in result["formats"].items()
             for g, v in f["guides"].items() if v["passes_gate"]]
    lines.append("Prefix-guidance arms may run on: " + (", ".join(gated) if gated else
                 "none yet — the learning-efficiency matrix runs the LP arms only.") + "")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ main
def make_backend(kind: str, seed: int, eager: bool, model: str = "default") -> tuple[Any, str]:
    if kind == "auto":
        kind = "vllm" if importlib.util.find_spec("vllm") else "hf"
    if kind == "vllm":
        from agents.rollout.vllm import VLLMBackend

        # eager: no torch.compile warm-up, which took > 10 min on the loaded 2-core machine
        return VLLMBackend(model, seed=seed, enforce_eager=eager), "vllm"
    from agents.policy import load_policy
    from agents.rollout.hf import HFBackend

    return HFBackend(load_policy(model), batch_size=64), "hf"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--formats", default=None,
                    help=f"comma-separated, from {sorted(FORMATS)} (default: default:mid,"
                    "chain_long:mid; with --data: only the file)")
    ap.add_argument("--data", default=None,
                    help="a problems file with worked solutions (JSONL/parquet, e.g. MATH): gate "
                    "the data of `learning_efficiency.py --data` (same path)")
    ap.add_argument("--model", default="default",
                    help="the policy to roll out (the matrix's --model; e.g. the GPU preset's)")
    ap.add_argument("--max-new-tokens", type=int, default=FILE_MAX_NEW_TOKENS,
                    help="generation cap for --data (built-in formats keep their own)")
    ap.add_argument("--n-per-set", type=int, default=100)
    ap.add_argument("--max-screen", type=int, default=800)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--chunk-problems", type=int, default=16)
    ap.add_argument("--backend", choices=["auto", "vllm", "hf"], default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true",
                    help="let vLLM compile its graphs (slow start, faster decoding)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--stages", default="screen,expert,self")
    ap.add_argument("--quick", action="store_true", help="tiny sets, for CI")
    ap.add_argument("--report", action="store_true", help="only recompute gate.json/gate.md")
    a = ap.parse_args(argv)
    known = dict(FORMATS)
    formats = [f for f in (a.formats or ("" if a.data else "default:mid,chain_long:mid"))
               .split(",") if f]
    bad = [f for f in formats if f not in known]
    if bad:
        print(f"error: unknown format {bad[0]!r}; choose from {sorted(FORMATS)}", file=sys.stderr)
        return 2
    if a.data:
        if not Path(a.data).is_file():
            print(f"error: --data {a.data}: no such file", file=sys.stderr)
            return 2
        name, spec = file_format(a.data, a.max_new_tokens)
        known[name] = spec
        formats.append(name)
    if a.quick:
        a.n_per_set, a.max_screen, a.rollouts, a.chunk_problems = 2, 6, 2, 3
        if a.out == OUT:
            a.out = REPO / "runs" / "viability_gate_quick"
    meta_path = a.out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta.update(rollouts=a.rollouts, n_per_set=a.n_per_set, max_screen=a.max_screen)
    if not a.report:  # the JSONL files resume: one output folder holds one model's rollouts
        held = meta.get("model", "default" if meta else a.model)  # older records: default
        if held != a.model:
            print(f"error: {a.out} holds rollouts of model {held!r}, not {a.model!r}: "
                  "pass another --out", file=sys.stderr)
            return 2
        meta["model"] = a.model
    # a file format is remembered, so `--report` and later runs still find its results
    files = {**meta.get("file_formats", {}), **{f: known[f] for f in formats if f not in FORMATS}}
    if files:
        meta["file_formats"] = files
    if not a.report:
        from lppo_env import MathVerifier

        backend, kind = make_backend(a.backend, a.seed, eager=not a.compile, model=a.model)
        meta.setdefault("load_start", load_now())
        meta["backend"] = kind
        t_start = time.perf_counter()

        def log(fmt: str, stage: str, done: int, secs: float, before: list[float]) -> None:
            rec = load_record(before)
            print(f"[gate] {fmt} {stage}: {done} problems; chunk {secs:.0f} s; load "
                  f"{rec['load_before'][0]}→{rec['load_after'][0]}; "
                  f"total {time.perf_counter() - t_start:.0f} s", flush=True)
            meta["load_end"] = rec["load_after"]
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            meta_path.write_text(json.dumps(meta, indent=1))

        stages = a.stages.split(",")
        with MathVerifier() as verifier:
            # one format to its end before the next: a stopped run leaves whole verdicts
            for fmt in formats:
                run = Runner(fmt, known[fmt], backend, verifier, a)
                for guide in ("expert", "self"):  # the expert set fills first: test it first
                    if guide in stages:
                        exp, slf = screen(run, log, need=(guide,))
                        evaluate_set(run, guide, exp if guide == "expert" else slf, log)
                        write_outputs(a, meta)
    write_outputs(a, meta)
    print((a.out / "gate.md").read_text())
    return 0


def write_outputs(a: argparse.Namespace, meta: dict) -> None:
    """gate.json and gate.md from the JSONL files written so far."""
    result = analyse(a.out, a.n_per_set, {**FORMATS, **meta.get("file_formats", {})})
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gate.json").write_text(json.dumps({"meta": meta, **result}, indent=1))
    (a.out / "gate.md").write_text(report_md(result, meta))


if __name__ == "__main__":
    sys.exit(main())
