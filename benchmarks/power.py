"""Power analysis and paired tests for the learning-efficiency matrix (planned before the runs).

Why: a matrix that cannot detect the effect it looks for says nothing, whichever way it comes
out. Before any run we fix the number of seeds S and the held-out size n so that the minimum
detectable difference (MDE) between two arms' final accuracy, at 80% power and two-sided
alpha = 0.05, is at most 3 points; after the runs, arms are compared seed by seed on the same
held-out problems with a test whose variance has the same two terms, both measured
(`seed_paired_test`), and the verdict is Holm-corrected.

Model of one arm-vs-arm difference (accuracy points, mean over S seeds per arm, every run
evaluated on the same n problems):

    Var(diff) = 2 * sigma_seed^2 / S  +  q / n

- sigma_seed: standard deviation of one run's final accuracy over seeds *on a fixed held-out
  set* (training randomness; greedy evaluation). Measured in a pilot.
- q: per-problem variance of the arms' *systematic* difference (problems one arm solves and
  the other does not, beyond run-to-run noise): the price of generalising from n problems to
  the task. Measured in a pilot from per-problem logs (`eval_problems.jsonl`) as the variance
  over problems of the seed-averaged per-problem difference minus its run-noise share; before
  a pilot with per-problem logs exists, a stated assumption.
- MDE = (z_{1-alpha/2} + z_{power}) * sqrt(Var(diff)).

    python benchmarks/power.py            # writes benchmarks/results/power.{json,md}
    python benchmarks/power.py --pilot runs/learning_efficiency_v2/uniform__grpo__s{0,1,2}

With `--pilot`, sigma_seed comes from complete runs of one arm under the matrix's own
protocol (their last evaluation, which covers the whole held-out set), kept no lower than
the first matrix's estimate: 2-3 seeds give 1-2 degrees of freedom, too few to shrink the
design on. The pilot also splits that sd into the share independent per-problem flips
explain and a shift of the whole model, which the per-problem logs measure precisely.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results"
Z_975 = 1.959964
Z_80 = 0.841621
TARGET_MDE = 0.03


# ------------------------------------------------------------------ planning
def mde(sigma_seed: float, seeds: int, n_eval: int, q: float) -> float:
    """Minimum detectable difference (proportion) at 80% power, two-sided 5%."""
    if seeds < 1 or n_eval < 1:
        raise ValueError(f"mde expects seeds >= 1 and n_eval >= 1, got {seeds}, {n_eval}")
    return (Z_975 + Z_80) * math.sqrt(2 * sigma_seed**2 / seeds + q / n_eval)


def plan_size(
    sigma_seed: float, q: float, target: float = TARGET_MDE, max_seeds: int = 64,
    n_options: Sequence[int] = (200, 300, 400, 500, 800, 1000, 1500, 2000),
) -> dict | None:
    """Cheapest (seeds x eval problems) design with MDE <= target, or None if none reaches it.

    Cost counts training runs first (a seed is a whole run per arm), then eval size.
    """
    for s in range(1, max_seeds + 1):
        for n in n_options:
            m = mde(sigma_seed, s, n, q)
            if m <= target:
                return {"seeds": s, "n_eval": n, "mde": m}
    return None


def mde_t(sigma_seed: float, seeds: int, n_eval: int, q: float) -> float:
    """MDE of the seed-level test, which estimates its variance from the seeds.

    t quantiles at S - 1 degrees of freedom: the fewest its Satterthwaite degrees of freedom
    can be, so this bounds the MDE from above (z quantiles, `mde`, assume the variance known).
    """
    if seeds < 2:
        raise ValueError(f"mde_t expects seeds >= 2 (a variance over seeds), got {seeds}")
    return _t_quantiles(seeds - 1)[2] * math.sqrt(2 * sigma_seed**2 / seeds + q / n_eval)


def seeds_for_target(sd_diff: float, v_problem: float, n: int, target: float = TARGET_MDE,
                     max_seeds: int = 64) -> int | None:
    """Fewest paired seeds whose seed-level test has MDE <= `target`, at a measured variance.

    Why: a finished design that missed its target says how many seeds to append, not just
    that it missed. `sd_diff` is the sd over seeds of one seed's accuracy difference,
    `v_problem` the systematic per-problem term q / n; the MDE at S seeds uses the test's
    own variance sd_diff^2 / S + v_problem and its Satterthwaite degrees of freedom. None
    when the per-problem term alone keeps it above `target` (more problems, not seeds).
    """
    if sd_diff < 0 or v_problem < 0 or n < 2:
        raise ValueError(f"seeds_for_target expects sd_diff, v_problem >= 0 and n >= 2, got "
                         f"{sd_diff}, {v_problem}, {n}")
    for s in range(2, max_seeds + 1):
        if seed_level_mde(sd_diff, v_problem, n, s) <= target:
            return s
    return None


def seed_level_mde(sd_diff: float, v_problem: float, n: int, seeds: int) -> float:
    """MDE of the seed-level test at `seeds` paired seeds and a measured variance (`sd_diff`,
    `v_problem` as in `seeds_for_target`): what an extension to that many seeds can detect."""
    if seeds < 2:
        raise ValueError(f"seed_level_mde expects seeds >= 2, got {seeds}")
    var, df = _seed_level_variance(sd_diff**2 / seeds, v_problem, seeds, n)
    return 0.0 if var == 0 else _t_quantiles(df)[2] * math.sqrt(var)


def _seed_level_variance(v_seed: float, v_problem: float, s: int, n: int) -> tuple[float, float]:
    """Variance of the seed-level test's difference and its Satterthwaite degrees of freedom
    (seed term on s - 1, per-problem term on n - 1)."""
    var = v_seed + v_problem
    den = v_seed**2 / (s - 1) + v_problem**2 / (n - 1)
    return var, (var**2 / den if den > 0 else math.inf)


def _t_quantiles(df: float) -> tuple[float, float, float]:
    """(t_0.975, t_0.80, their sum = the MDE in standard errors) at `df` degrees of freedom."""
    from scipy import stats

    hi, pw = float(stats.t.ppf(0.975, df)), float(stats.t.ppf(0.80, df))
    return hi, pw, hi + pw


# ------------------------------------------------------------------ paired tests
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: b = problems only arm A solved, c = only arm B solved."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_table(a: dict[str, int], b: dict[str, int]) -> tuple[int, int, int]:
    """(common problems, solved by A only, solved by B only) over the problems both logged."""
    common = sorted(set(a) & set(b))
    only_a = sum(1 for k in common if a[k] and not b[k])
    only_b = sum(1 for k in common if b[k] and not a[k])
    return len(common), only_a, only_b


def mean_diff_test(diffs: Sequence[float]) -> dict:
    """Two-sided one-sample t test that the mean of per-unit paired differences is 0.

    Why: a within-seed comparison (e.g. guided rollouts vs their unguided controls) pools
    thousands of rollouts that share a policy and a sample; the seed is the independent
    unit, so each seed gives one difference and the test has S - 1 degrees of freedom.
    With fewer than 2 units only the mean is given (p and interval None).
    """
    from scipy import stats

    s = len(diffs)
    if s < 1:
        raise ValueError("mean_diff_test needs at least one difference")
    mean = sum(diffs) / s
    if s < 2:
        return {"units": s, "diff": mean, "se": None, "df": None, "p": None, "ci": None}
    se = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (s - 1) / s)
    if se == 0:
        return {"units": s, "diff": mean, "se": 0.0, "df": s - 1,
                "p": 1.0 if mean == 0 else 0.0, "ci": [mean, mean]}
    half = _t_quantiles(s - 1)[0] * se
    p = float(2 * stats.t.sf(abs(mean) / se, s - 1))
    return {"units": s, "diff": mean, "se": se, "df": s - 1, "p": p,
            "ci": [mean - half, mean + half]}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the given order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def pooled_correct(runs: Sequence[dict[str, int]]) -> dict[str, float]:
    """Per problem, the fraction of runs (seeds) that solved it, over problems all runs logged."""
    if not runs:
        return {}
    common = set(runs[0]).intersection(*runs[1:])
    return {k: sum(r[k] for r in runs) / len(runs) for k in sorted(common)}


def estimate_q(arm_a: Sequence[dict[str, int]], arm_b: Sequence[dict[str, int]]) -> float:
    """Systematic per-problem difference variance from per-problem logs of two arms.

    Var over problems of (mean_s a - mean_s b), minus the run-noise share (the average
    within-arm per-problem variance over seeds divided by S), floored at 0.
    """
    pa, pb = pooled_correct(arm_a), pooled_correct(arm_b)
    keys = sorted(set(pa) & set(pb))
    if len(keys) < 2:
        return math.nan
    d = [pa[k] - pb[k] for k in keys]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)

    def noise(arm: Sequence[dict[str, int]], p: dict[str, float]) -> float:
        s = len(arm)
        if s < 2:
            return 0.0
        return sum(p[k] * (1 - p[k]) * s / (s - 1) for k in keys) / len(keys) / s

    return max(0.0, var - noise(arm_a, pa) - noise(arm_b, pb))


def seed_paired_test(arm: Sequence[dict[str, int]], base: Sequence[dict[str, int]]) -> dict:
    """Arm vs base over S paired seeds (run s of each), `{problem_id: correct}` at their
    final evaluation, over the problems every run evaluated. With one seed only the
    difference is given (p, interval and MDE are None): one run cannot tell an arm's effect
    from its seed's.

    Why not McNemar over (problem, seed) pairs: a seed changes the whole trained model, so
    problems of one run are not independent draws, and a test that counts them as such
    calls two seeds of the same arm different. This test uses the power model's two
    variance terms, both measured: Var(diff) = var_s(d_s) / S + q / n, where d_s is seed
    s's accuracy difference (its spread holds whole-model shifts and per-problem flips, S - 1
    degrees of freedom) and q / n the systematic per-problem term (`estimate_q`: from these
    n problems to the task); t reference with Satterthwaite degrees of freedom.
    `mde`: the difference this comparison had 80 % power for, at the variance it measured
    (`seeds_for_target` turns that variance into the seeds a target needs).
    """
    from scipy import stats

    if len(arm) != len(base):
        raise ValueError(f"seed_paired_test pairs runs seed by seed: {len(arm)} vs {len(base)}")
    s = len(arm)
    if s < 1:
        raise ValueError("seed_paired_test needs at least one seed per arm")
    runs = [*arm, *base]
    keys = sorted(set(runs[0]).intersection(*runs[1:]))
    n = len(keys)
    if n < 2:
        raise ValueError("seed_paired_test: the runs share fewer than 2 evaluated problems")
    d = [sum(a[k] - b[k] for k in keys) / n for a, b in zip(arm, base, strict=True)]
    diff = sum(d) / s
    if s < 2:
        return {"seeds": s, "problems": n, "diff": diff, "per_seed": d, "se": None,
                "se_seed": None, "se_problem": None, "df": None, "p": None, "ci": None,
                "mde": None}
    v_seed = sum((x - diff) ** 2 for x in d) / (s - 1) / s
    q = estimate_q([{k: a[k] for k in keys} for a in arm], [{k: b[k] for k in keys} for b in base])
    v_problem = q / n
    var, df = _seed_level_variance(v_seed, v_problem, s, n)
    se = math.sqrt(var)
    if se == 0:
        p, half, mde_ = (1.0 if diff == 0 else 0.0), 0.0, 0.0
    else:
        hi, _, k = _t_quantiles(df)
        p = float(2 * stats.t.sf(abs(diff) / se, df))
        half, mde_ = hi * se, k * se
    return {"seeds": s, "problems": n, "diff": diff, "per_seed": d, "se": se,
            "se_seed": math.sqrt(v_seed), "se_problem": math.sqrt(v_problem), "df": df,
            "p": p, "ci": [diff - half, diff + half], "mde": mde_}


# ------------------------------------------------------------------ pilot
def pilot_sigma(runs: Sequence[dict[str, int]]) -> dict:
    """Seed sd of final accuracy from S >= 2 runs of one arm, each `{problem_id: correct}` at
    its final evaluation, over the problems every run evaluated.

    `sigma_final`: sample sd of the runs' accuracies (S - 1 degrees of freedom).
    `sigma_problem_noise`: the sd that independent per-problem flips alone would give,
    sqrt(mean over problems of the over-seeds variance / n); measured on n problems, so it
    is precise even with 2 seeds. `sigma_final` well above it means the whole model shifts
    from seed to seed.
    """
    if len(runs) < 2:
        raise ValueError(f"pilot_sigma needs >= 2 runs, got {len(runs)}")
    keys = sorted(set(runs[0]).intersection(*runs[1:]))
    if not keys:
        raise ValueError("pilot_sigma: the runs share no evaluated problem")
    s, n = len(runs), len(keys)
    finals = [sum(run[k] for k in keys) / n for run in runs]
    mean = sum(finals) / s
    sd = math.sqrt(sum((f - mean) ** 2 for f in finals) / (s - 1))
    per_problem_var = 0.0
    for k in keys:
        m = sum(run[k] for run in runs) / s
        per_problem_var += sum((run[k] - m) ** 2 for run in runs) / (s - 1)
    noise = math.sqrt(per_problem_var / n / n)
    return {"seeds": s, "n_eval": n, "finals": finals, "sigma_final": sd,
            "sigma_problem_noise": noise}


def read_pilot(run_dirs: Sequence[Path]) -> list[dict[str, int]]:
    """Per-problem correctness at each run's last evaluation (`eval_problems.jsonl`).

    Every run must be complete at the same last step, or the sd mixes budgets.
    """
    from agents.compare import summarize_run
    from agents.evaluation import EVAL_PROBLEMS_FILE, read_eval_problems

    runs, last_steps = [], []
    for d in run_dirs:
        s = summarize_run(Path(d))
        if not s["complete"]:
            raise ValueError(
                f"{d}: pilot run incomplete ({s['steps_done']}/{s['steps_budget']} steps); "
                "finish it (the matrix resumes) before the power analysis")
        logs = read_eval_problems(Path(d) / EVAL_PROBLEMS_FILE)
        if not logs:
            raise ValueError(f"{Path(d) / EVAL_PROBLEMS_FILE}: no per-problem evaluation log")
        last_steps.append(max(logs))
        runs.append(logs[max(logs)])
    if len(set(last_steps)) != 1:
        raise ValueError(
            f"pilot runs evaluated last at different steps {last_steps} ({list(run_dirs)}): "
            "one protocol per pilot")
    return runs


# ------------------------------------------------------------------ report
def analysis(sigma_seed: float, q: float, source: str, target: float = TARGET_MDE) -> dict:
    grid = {f"S={s},n={n}": mde(sigma_seed, s, n, q) for s in (3, 5, 8, 10, 16)
            for n in (200, 500, 1000, 2000)}
    return {
        "sigma_seed": sigma_seed, "q": q, "source": source, "target_mde": target,
        "mde_grid": grid, "plan": plan_size(sigma_seed, q, target),
        "v1_design_mde": mde(sigma_seed, 3, 200, q),
    }


def report_md(a: dict) -> str:
    p = a["plan"]
    lines = [
        "# Power analysis (written before the runs)",
        "",
        f"Inputs ({a['source']}): seed sd of final accuracy sigma_seed = "
        f"{100 * a['sigma_seed']:.1f} points; systematic per-problem difference variance "
        f"q = {a['q']:.3f}. Model: MDE = (z_0.975 + z_0.80) * sqrt(2 sigma^2 / S + q / n), "
        "two-sided 5 %, 80 % power (benchmarks/power.py).",
        "",
        f"- The first matrix (S = 3 seeds, n = 200): MDE = {100 * a['v1_design_mde']:.1f} points.",
        (f"- Cheapest design with MDE <= {100 * a['target_mde']:.0f} points: S = {p['seeds']} "
         f"seeds per arm, n = {p['n_eval']} held-out problems (MDE {100 * p['mde']:.1f})."
         if p else f"- No design up to 64 seeds reaches {100 * a['target_mde']:.0f} points."),
        "",
        "| seeds | n = 200 | n = 500 | n = 1000 | n = 2000 |",
        "|---|---|---|---|---|",
    ]
    for s in (3, 5, 8, 10, 16):
        row = [f"{100 * a['mde_grid'][f'S={s},n={n}']:.1f}" for n in (200, 500, 1000, 2000)]
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def first_matrix_sigma() -> tuple[float, str]:
    """sigma_seed pooled over the first matrix's GRPO arms (3 seeds each), and its source."""
    eff = json.loads((OUT / "learning_efficiency" / "efficiency.json").read_text())
    sds = [r["final_std"] for r in eff["arms"] if r.get("final_std") is not None
           and r["learner"] == "grpo"]
    sigma = math.sqrt(sum(s * s for s in sds) / len(sds))
    return sigma, (f"sigma_seed pooled over the {len(sds)} GRPO arms of the first matrix "
                   "(16 steps, 200 problems); q assumed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sigma-seed", type=float, default=None,
                    help="seed sd of final accuracy (proportion); default: from the first "
                    "matrix's committed GRPO runs")
    ap.add_argument("--q", type=float, default=0.02,
                    help="systematic per-problem difference variance (assumed until a pilot "
                    "with per-problem logs measures it)")
    ap.add_argument("--pilot", type=Path, nargs="+", default=None,
                    help="run directories of one arm's complete pilot seeds (same protocol as "
                    "the matrix); sigma_seed = max(their sd, the first matrix's)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    source = "given"
    sigma = a.sigma_seed
    pilot = None
    if sigma is None:
        sigma, source = first_matrix_sigma()
    if a.pilot:
        pilot = pilot_sigma(read_pilot(a.pilot))
        pilot["runs"] = [p.name for p in a.pilot]
        prior = sigma
        sigma = max(pilot["sigma_final"], prior)
        source = (
            f"pilot of {pilot['seeds']} seeds on the matrix's protocol "
            f"({', '.join(pilot['runs'])}; {pilot['n_eval']} held-out problems): sd "
            f"{100 * pilot['sigma_final']:.2f} points, of which independent per-problem flips "
            f"explain {100 * pilot['sigma_problem_noise']:.2f}; planned on max(pilot, "
            f"{100 * prior:.2f} from {source.split(' (')[0]}) = {100 * sigma:.2f}; q assumed")
    res = analysis(sigma, a.q, source)
    if pilot is not None:
        res["pilot"] = pilot
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "power.json").write_text(json.dumps(res, indent=1) + "\n")
    (a.out / "power.md").write_text(report_md(res))
    print(report_md(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
