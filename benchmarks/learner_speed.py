"""Learner speed (issue 8, item 4): our GRPO step vs TRL's GRPOTrainer, same work per step.

Both sides do one full GRPO step: generate G completions for each of B prompts (temperature 1,
at most L new tokens), score them with the same math-verify reward, and take one optimizer step
(AdamW, lr 5e-6, no KL term / no reference model: TRL's default `beta=0.0` and our default
`kl_coef=0`). Same model directory, same prompts (our env's chat messages), same B, G and L.
Gradient checkpointing is off on both sides (TRL's default and our CPU default both turn it
on: one extra forward) and both run the minibatch in one pass (our CPU default splits it
into micro-batches of <= 1024 tokens), so neither side saves memory at the cost of time.

Timing that holds (issue 15): the frameworks are measured *interleaved*, A B A B ...,
`--rounds` times (>= 5), each round one subprocess per framework (own venv for TRL:
`--trl-python`) doing `--warmup` untimed and `--steps` timed steps, so a change of machine load
hits both alike. Both generate exactly `max_new_tokens` tokens per completion (EOS ignored:
ours by a stop id outside the vocabulary, TRL by `min_new_tokens`), so both do the same work.
The load average is recorded before and after every measurement (benchmarks/_load.py); a
measurement that starts above 1.5 is invalid and the result is then not published as a
figure (`valid: false`, no ratio in the summary).

    python benchmarks/learner_speed.py                      # CPU defaults, 5 rounds ABAB
    python benchmarks/learner_speed.py --quick              # pipeline check, tiny, 1 round
    python benchmarks/learner_speed.py --batch-size 8 --group-size 8 --max-new-tokens 256  # GPU

Writes benchmarks/results/learner_speed.json (with the hardware it ran on). If TRL cannot run,
the JSON says so (with the error) instead of a number.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
DEFAULT_TRL_PYTHON = "/tmp/lppo-integ-venv/bin/python"

from _load import all_valid, hardware, load_now, load_record, wait_until_quiet  # noqa: E402


def _peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process (CPU) and peak CUDA allocation (GPU)."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return out


def write_prompts(path: Path, n: int, seed: int = 0) -> None:
    """Chat messages and answers of `n` default problems, as JSON for the workers.

    Built here, in the orchestrator's venv, because the TRL venv may lack the data package
    (reasoning-gym); the TRL worker only needs the messages, the answers and math-verify.
    """
    import random

    from lppo_env import MathReasoningEnv, load_problems

    problems = list(load_problems("default"))
    random.Random(seed).shuffle(problems)
    env = MathReasoningEnv(problems[:n])
    rows = [{"prompt": env.messages(p), "answer": p.answer} for p in problems[:n]]
    path.write_text(json.dumps(rows))


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(xs),
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
    }


def worker_lppo(a: argparse.Namespace) -> dict[str, Any]:
    """Our Trainer.step() with the uniform sampler (no sampler effect) and the GRPO learner."""
    import torch

    from agents.config import TrainConfig
    from agents.trainer import Trainer

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            model=a.model,
            strategy="uniform",
            learner="grpo",
            batch_size=a.batch_size,
            group_size=a.group_size,
            max_new_tokens=a.max_new_tokens,
            eval_size=0,
            steps=a.warmup + a.steps,
            run_dir=tmp,
            resume=False,
            progress=False,
            lr=5e-6,
            save_every=10**6,
            seed=0,
            # same work as TRL: rows whose advantage is 0 run through the model too, no
            # activation recomputation, the minibatch in one pass (module docstring)
            learner_kwargs={"skip_rows_without_gradient": False,
                            "gradient_checkpointing": False, "token_budget": None},
        )
        trainer = Trainer(cfg)
        # same work as TRL's min_new_tokens: never stop early (an id no tokenizer produces)
        trainer.backend.stop_token_ids = [len(trainer.policy.tokenizer) + 10**6]
        steps = []
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            m = trainer.step().metrics
            wall = time.perf_counter() - t0
            if i >= a.warmup:
                steps.append(
                    {
                        "step_s": wall,
                        "generate_s": m["time/generate"],
                        "update_s": m["time/update"],
                        "completion_tokens": m["rollout/tokens"],
                    }
                )
    return {"framework": "lppo", "steps": steps, **_peak_memory_mb()}


def worker_trl(a: argparse.Namespace) -> dict[str, Any]:
    """TRL GRPOTrainer on the same model, prompts, reward, B, G and L; per-step wall time."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lppo_env import default_verifier

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    ds = Dataset.from_list(json.loads(Path(a.prompts).read_text()))
    verifier = default_verifier()

    def reward(completions: list, answer: list, **_: Any) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [v.reward for v in verifier.verify_batch(texts, answer)]

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.t0, self.steps, self.logs = 0.0, [], []

        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, D102
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, D102
            self.steps.append(time.perf_counter() - self.t0)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001, D102
            if logs:
                self.logs.append(dict(logs))

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=a.batch_size * a.group_size,
            num_generations=a.group_size,
            max_completion_length=a.max_new_tokens,
            max_steps=a.warmup + a.steps,
            learning_rate=5e-6,
            temperature=1.0,
            beta=0.0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=not cuda,
            bf16=cuda and torch.cuda.is_bf16_supported(),
            gradient_checkpointing=False,
            generation_kwargs={"min_new_tokens": a.max_new_tokens},  # same tokens as ours
            disable_tqdm=True,
            seed=0,
            dataloader_num_workers=0,
            shuffle_dataset=False,
        )
        timer = Timer()
        trainer = GRPOTrainer(
            model=a.model,
            reward_funcs=reward,
            args=cfg,
            train_dataset=ds,
            processing_class=tok,
            callbacks=[timer],
        )
        trainer.train()
    logs = [x for x in timer.logs if "completions/mean_length" in x]
    steps = []
    for i, s in enumerate(timer.steps):
        if i < a.warmup:
            continue
        mean_len = logs[i]["completions/mean_length"] if i < len(logs) else None
        steps.append(
            {
                "step_s": s,
                "completion_tokens": None
                if mean_len is None
                else mean_len * a.batch_size * a.group_size,
            }
        )
    return {"framework": "trl", "trl_version": trl.__version__, "steps": steps, **_peak_memory_mb()}


def _summarise(res: dict[str, Any]) -> dict[str, Any]:
    steps = res.get("steps") or []
    if not steps:
        return res
    out = dict(res)
    out["step_s"] = _stats([s["step_s"] for s in steps])
    toks = [s["completion_tokens"] for s in steps if s.get("completion_tokens")]
    if toks:
        out["completion_tokens_per_step"] = statistics.fmean(toks)
        out["ms_per_completion_token"] = (
            1000 * sum(s["step_s"] for s in steps if s.get("completion_tokens")) / sum(toks)
        )
    return out


def run_worker(a: argparse.Namespace, fw: str, common: list[str], env: dict) -> dict[str, Any]:
    """One framework's subprocess: its summary, or `ran: False` with the error."""
    python = a.trl_python if fw == "trl" else sys.executable
    cmd = [python, str(Path(__file__).resolve()), "--worker", fw, *common]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return {"framework": fw, "python": python, "ran": False,
                "error": f"timed out after {a.timeout:.0f} s"}
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    if p.returncode != 0 or line is None:
        return {"framework": fw, "python": python, "ran": False,
                "error": f"exit {p.returncode}: {p.stderr.strip()[-1500:]}"}
    return {"python": python, "ran": True, **json.loads(line[7:])}


def interleaved(a: argparse.Namespace, common: list[str], env: dict) -> list[dict[str, Any]]:
    """A B A B ...: every round runs each framework once, alternating which goes first."""
    out = []
    for rnd in range(a.rounds):
        order = a.frameworks if rnd % 2 == 0 else a.frameworks[::-1]
        for fw in order:
            wait_until_quiet(a.settle)  # the previous round's own load decays first
            before = load_now()
            print(f"[learner_speed] round {rnd + 1}/{a.rounds} {fw} (load {before[0]})",
                  file=sys.stderr, flush=True)
            res = run_worker(a, fw, common, env)
            res.update(round=rnd, framework=fw, load=load_record(before),
                       step_s=[s["step_s"] for s in res.get("steps", [])])
            out.append(res)
    return out


def merge_rounds(fw: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """All timed steps of a framework's rounds, summarised (median over steps)."""
    ok = [r for r in rounds if r.get("ran")]
    if not ok:
        err = rounds[0].get("error", "?") if rounds else "not run"
        return {"framework": fw, "ran": False, "error": err}
    merged = {k: v for k, v in ok[0].items() if k not in ("steps", "step_s", "load", "round")}
    merged["steps"] = [s for r in ok for s in r["steps"]]
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    merged["rounds_failed"] = len(rounds) - len(ok)
    return _summarise(merged)


def speed_ratio(results: dict[str, Any]) -> float | None:
    """Our median GRPO step time over TRL's, when both frameworks ran."""
    ours, trl_ = results.get("lppo", {}), results.get("trl", {})
    if not (ours.get("ran") and trl_.get("ran")):
        return None
    return ours["step_s"]["median"] / trl_["step_s"]["median"]


def summary_lines(results: dict[str, Any], setup: dict[str, Any],
                  measurements: list[dict[str, Any]], valid: bool) -> list[str]:
    """The published lines, from the recorded results alone (so a table can regenerate them).

    An invalid comparison (a measurement started at high load) publishes no figure.
    """
    ours, trl_ = results.get("lppo", {}), results.get("trl", {})
    lines = []
    if not valid:
        bad = [m["load_before"][0] for m in measurements if not m["valid"]]
        lines.append(
            f"INVALID: {len(bad)}/{len(measurements)} measurements started at 1-minute load > "
            f"1.5 ({', '.join(f'{x:.1f}' for x in bad)}): no figure is published; rerun on a "
            "quiet machine")
        lines += [f"{fw}: {'ran' if r.get('ran') else 'failed: ' + str(r.get('error'))[-200:]}"
                  for fw, r in results.items()]
    if valid and ours.get("ran") and trl_.get("ran"):
        ratio = speed_ratio(results)
        lines.append(
            f"GRPO step, B={setup['batch_size']} G={setup['group_size']} "
            f"L={setup['max_new_tokens']}: lppo "
            f"{ours['step_s']['median']:.1f} s vs TRL {trl_['trl_version']} "
            f"{trl_['step_s']['median']:.1f} s (median of {ours['step_s']['n']} steps): "
            f"{ratio:.2f}x TRL's time (goal <= 1.0x): {'met' if ratio <= 1.0 else 'not met'}"
        )
        if ours.get("ms_per_completion_token") and trl_.get("ms_per_completion_token"):
            same = ours.get("completion_tokens_per_step") == trl_.get("completion_tokens_per_step")
            lines.append(
                f"per generated token: lppo {ours['ms_per_completion_token']:.0f} ms vs TRL "
                f"{trl_['ms_per_completion_token']:.0f} ms ("
                + (f"both generate {ours['completion_tokens_per_step']:.0f} tokens per step)"
                   if same else "completion lengths differ)")
            )
        lines.append(
            f"peak RSS: lppo {ours['peak_rss_mb']:.0f} MB vs TRL {trl_['peak_rss_mb']:.0f} MB"
        )
    elif valid:
        for fw, r in results.items():
            if not r.get("ran"):
                lines.append(
                    f"{fw} did not run: {r['error'].splitlines()[-1] if r['error'] else '?'}"
                )
        if ours.get("ran"):
            lines.append(
                f"lppo GRPO step median {ours['step_s']['median']:.1f} s, peak RSS "
                f"{ours['peak_rss_mb']:.0f} MB; no TRL comparison"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Orchestrate: one subprocess per framework, then compare and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=["lppo", "trl"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--steps", type=int, default=1, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps per round")
    ap.add_argument("--rounds", type=int, default=5, help="ABAB rounds (>= 5 for a figure)")
    ap.add_argument("--quick", action="store_true", help="tiny pipeline check, 1 round")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument(
        "--trl-python",
        default=DEFAULT_TRL_PYTHON if Path(DEFAULT_TRL_PYTHON).exists() else sys.executable,
    )
    ap.add_argument("--frameworks", nargs="+", default=["lppo", "trl"])
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per framework")
    ap.add_argument("--settle", type=float, default=180.0,
                    help="max seconds to wait before each measurement for load <= 1.0")
    ap.add_argument("--prompts", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/learner_speed.json")
    a = ap.parse_args(argv)

    if a.worker:
        res = worker_lppo(a) if a.worker == "lppo" else worker_trl(a)
        print("RESULT " + json.dumps(res))
        return 0
    if a.quick:
        a.batch_size, a.group_size, a.max_new_tokens, a.rounds = 1, 2, 8, 1
        a.settle = 0.0  # a check that it runs, not a figure
        if a.out == REPO / "benchmarks/results/learner_speed.json":
            a.out = REPO / "runs/learner_speed_quick.json"

    if a.model == "default":  # both frameworks get the same plain HF directory
        from agents.policy import resolve_model_path

        a.model = str(resolve_model_path("default"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(a.threads),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    common = [
        "--model",
        a.model,
        "--batch-size",
        str(a.batch_size),
        "--group-size",
        str(a.group_size),
        "--max-new-tokens",
        str(a.max_new_tokens),
        "--steps",
        str(a.steps),
        "--warmup",
        str(a.warmup),
        "--threads",
        str(a.threads),
    ]
    prompts = Path(tempfile.mkdtemp()) / "prompts.json"
    write_prompts(prompts, a.batch_size * (a.warmup + a.steps) * 4)
    common += ["--prompts", str(prompts)]
    machine = hardware()  # before the runs: its load average is the one at the start
    runs = interleaved(a, common, env)
    results = {fw: merge_rounds(fw, [r for r in runs if r["framework"] == fw])
               for fw in a.frameworks}
    measurements = [r["load"] for r in runs]
    valid = all_valid(measurements)
    ratio = speed_ratio(results) if valid else None
    setup = {
        "model": a.model,
        "batch_size": a.batch_size,
        "group_size": a.group_size,
        "max_new_tokens": a.max_new_tokens,
        "timed_steps": a.steps * a.rounds,
        "rounds": a.rounds,
        "warmup": a.warmup,
        "threads": a.threads,
        "kl": "none (beta=0 / kl_coef=0)",
        "trl_gradient_checkpointing": False,
        "lppo_learner_kwargs": {"skip_rows_without_gradient": False,
                                "gradient_checkpointing": False, "token_budget": None},
    }
    lines = summary_lines(results, setup, measurements, valid)
    report = {
        "valid": valid,
        "design": f"ABAB interleaved, {a.rounds} rounds x {a.steps} timed step(s) per "
        f"framework after {a.warmup} warm-up step(s), exactly {a.max_new_tokens} generated "
        "tokens per completion on both sides",
        "measurements": [{k: r[k] for k in ("round", "framework", "load", "step_s")}
                         for r in runs],
        "setup": setup,
        "hardware": machine,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "results": results,
        "ratio_lppo_over_trl_median_step": ratio if valid else None,
        "summary_lines": lines,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
