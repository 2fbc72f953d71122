"""Time and peak memory of `lppo train` with no arguments, per phase.

Budget (CPU, 2 cores, idle machine): the whole job in at most 6 minutes and at most 3 GB
peak RSS. The job is run exactly as the CLI runs it (`agents.cli.main(["train", ...])`,
defaults untouched except the run directory) with the trainer's phases wrapped:

    imports     importing torch / transformers / agents
    load        Trainer(cfg): model (converted once and cached), data, envs, learner
    eval        held-out evaluation (step 0 and evaluation steps)
    generate    rollouts of the training steps
    reward      env step: math-verify
    update      learner update (+ weight sync)
    step_other  the rest of a step: sampler, env reset, batch building, metrics
    checkpoint  atomic checkpoints
    other       the rest of the run (plots, summary)

Peak RSS per phase is the process's high-water mark (VmHWM, reset at the start of each
phase through /proc/self/clear_refs), so it is the whole process's peak *during* that
phase. On a GPU the peak CUDA memory per phase is recorded too.

After the job, one update of the last training batch is timed both ways: with the old
log-probs taken from the update's own first forward (one epoch, one minibatch: ratio 1 by
construction; the default) and with a separate no-grad pass first (what it did before).

The load average is recorded before and after; a run that starts above 1.5 is marked
invalid (benchmarks/_load.py). Writes benchmarks/results/train_budget.json and prints a
table.

Usage:
    python benchmarks/train_budget.py            # the default job (the real measurement)
    python benchmarks/train_budget.py --quick    # tiny budgets: checks the script runs
    python benchmarks/train_budget.py --quick --model DIR   # ... on another (tiny) model
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _load import load_now, load_record  # noqa: E402

BUDGET_SECONDS = 360.0
BUDGET_RSS_MB = 3072.0
QUICK = ["--steps", "1", "--batch-size", "2", "--group-size", "2", "--max-new-tokens", "8",
         "--eval-size", "4"]


def _hwm_mb() -> float:
    """The process's peak RSS since the last reset (VmHWM), in MB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def _reset_hwm() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: per-phase peaks then include earlier phases
        pass


class PhaseMeter:
    """Seconds and peak RSS (and CUDA memory) per named phase; phases may nest."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.peak_rss: dict[str, float] = defaultdict(float)
        self.peak_cuda: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []

    def _cuda_peak(self, reset: bool) -> float:
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available():
            return 0.0
        peak = torch.cuda.max_memory_allocated() / 2**20
        if reset:
            torch.cuda.reset_peak_memory_stats()
        return peak

    def _charge_parent(self) -> None:
        if self.stack:
            top = self.stack[-1]
            self.peak_rss[top] = max(self.peak_rss[top], _hwm_mb())
            self.peak_cuda[top] = max(self.peak_cuda[top], self._cuda_peak(reset=False))

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._charge_parent()
        _reset_hwm()
        self._cuda_peak(reset=True)
        self.stack.append(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] += elapsed
            self.calls[name] += 1
            self.peak_rss[name] = max(self.peak_rss[name], _hwm_mb())
            self.peak_cuda[name] = max(self.peak_cuda[name], self._cuda_peak(reset=False))
            self.stack.pop()
            if self.stack:  # the parent's own time excludes this child
                self.seconds[self.stack[-1]] -= elapsed
            self._charge_parent()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` measured as `name`, except when called inside an evaluation."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if "eval" in self.stack:
                return fn(*args, **kwargs)
            with self(name):
                return fn(*args, **kwargs)

        return wrapped


def instrument(meter: PhaseMeter, captured: dict[str, Any]) -> None:
    """Wrap the trainer's phases (class methods, then the pieces each Trainer builds)."""
    from agents.trainer import Trainer

    init, step = Trainer.__init__, Trainer.step

    def measured_init(self: Any, *args: Any, **kwargs: Any) -> None:
        with meter("load"):
            init(self, *args, **kwargs)
        self.backend.generate = meter.wrap("generate", self.backend.generate)
        self.envs.step = meter.wrap("reward", self.envs.step)
        update = self.learner.update

        def update_and_keep(batch: Any) -> Any:
            captured["batch"], captured["trainer"] = batch, self
            return update(batch)

        self.learner.update = meter.wrap("update", update_and_keep)
        captured["trainer"] = self

    def measured_step(self: Any) -> Any:
        with meter("step_other"):
            return step(self)

    Trainer.__init__ = measured_init  # type: ignore[method-assign]
    Trainer.step = measured_step  # type: ignore[method-assign]
    Trainer.evaluate = meter.wrap("eval", Trainer.evaluate)  # type: ignore[method-assign]
    Trainer.save_checkpoint = meter.wrap(  # type: ignore[method-assign]
        "checkpoint", Trainer.save_checkpoint
    )


def time_update_both_ways(trainer: Any, batch: Any, repeats: int) -> dict[str, Any]:
    """One GRPO update of `batch` with reused old log-probs and with a separate pass."""
    import torch

    from agents.learners import GRPOLearner, make_learner
    from agents.trainer import CPU_LEARNER_DEFAULTS

    class SeparatePass(GRPOLearner):
        """The same update, with the no-grad pass for the old log-probs forced."""

        @property
        def reuses_old_logprobs(self) -> bool:
            return False

    cfg = trainer.cfg
    kwargs = {**cfg.learner_kwargs, "lr": cfg.lr, "temperature": cfg.temperature}
    out: dict[str, Any] = {"rows": len(batch), "tokens": int(batch.attention_mask.sum())}
    if trainer.policy.device.type == "cpu":
        kwargs = {**CPU_LEARNER_DEFAULTS, **kwargs}  # the job's own learner settings
    learners = {
        "reuse": make_learner("grpo", trainer.policy, **kwargs),
        "separate_pass": SeparatePass(trainer.policy, GRPOLearner.config_class(**kwargs)),
    }
    times: dict[str, list[float]] = {name: [] for name in learners}
    before = {k: v.detach().clone() for k, v in trainer.policy.model.state_dict().items()}
    for round_ in range(repeats + 1):  # round 0 warms up; the ways alternate
        for name, learner in learners.items():
            start = time.perf_counter()
            learner.update(batch)
            if round_:
                times[name].append(time.perf_counter() - start)
            trainer.policy.model.load_state_dict(before)  # same starting point each time
    for name, ts in times.items():
        out[f"{name}_seconds"] = min(ts)
    del learners, before
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    out["saving_seconds"] = out["separate_pass_seconds"] - out["reuse_seconds"]
    out["saving_frac"] = out["saving_seconds"] / out["separate_pass_seconds"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the default job, write the JSON, print the table; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (checks it runs)")
    parser.add_argument("--out", default=str(HERE / "results" / "train_budget.json"))
    parser.add_argument("--repeats", type=int, default=2, help="timings of each update way")
    parser.add_argument("--model", help="another model (a check on a tiny model; not the budget)")
    args = parser.parse_args(argv)

    load_before = load_now()
    meter = PhaseMeter()
    with meter("imports"):
        import torch

        from agents.cli import main as lppo
    imports_seconds = time.perf_counter() - T_START  # interpreter start to here
    meter.seconds["imports"] = imports_seconds
    captured: dict[str, Any] = {}
    instrument(meter, captured)
    with tempfile.TemporaryDirectory(prefix="train_budget_") as tmp:
        train_args = ["train", "--run-dir", str(Path(tmp) / "run"), "--no-progress"]
        if args.quick:
            train_args += QUICK
        if args.model:
            train_args += ["--model", args.model]
        start = time.perf_counter()
        with meter("other"):
            code = lppo(train_args)
        job_seconds = time.perf_counter() - start + imports_seconds
        if code != 0:
            raise SystemExit(f"lppo train failed with exit code {code}")
        rows = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").open()]
    # resetting VmHWM also resets what ru_maxrss reports: the job's peak is the phases' max
    peak_rss = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    *meter.peak_rss.values()])
    job_record = load_record(load_before)

    reuse = None
    if "batch" in captured:
        reuse_before = load_now()
        reuse = time_update_both_ways(captured["trainer"], captured["batch"], args.repeats)
        reuse.update(load_record(reuse_before))

    phases = {
        name: {
            "seconds": round(meter.seconds[name], 2),
            "calls": meter.calls[name],
            "peak_rss_mb": round(meter.peak_rss[name], 1),
            **({"peak_cuda_mb": round(meter.peak_cuda[name], 1)} if meter.peak_cuda[name] else {}),
        }
        for name in ("imports", "load", "eval", "generate", "reward", "update", "step_other",
                     "checkpoint", "other")
        if meter.calls[name]
    }
    result = {
        "job": "lppo train" + ("" if not args.quick else " " + " ".join(QUICK))
        + (f" --model {args.model}" if args.model else ""),
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "cuda": torch.cuda.is_available(),
                    "torch_threads": torch.get_num_threads()},
        "steps": max(r["step"] for r in rows),
        "total_seconds": round(job_seconds, 1),
        "peak_rss_mb": round(peak_rss, 1),
        "budget": {"seconds": BUDGET_SECONDS, "peak_rss_mb": BUDGET_RSS_MB},
        "within_time_budget": job_seconds <= BUDGET_SECONDS,
        "within_memory_budget": peak_rss <= BUDGET_RSS_MB,
        "phases": phases,
        "step_times": [{k: r.get(k) for k in ("step", "time/generate", "time/update",
                                               "time/reward", "time/sampler", "time/step")}
                       for r in rows if r["step"] > 0],
        "update_reuse": reuse,
        **job_record,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{result['job']}: {result['steps']} steps, {job_seconds:.0f} s "
          f"(budget {BUDGET_SECONDS:.0f}), peak RSS {peak_rss:.0f} MB (budget {BUDGET_RSS_MB:.0f})")
    print(f"{'phase':<12} {'calls':>5} {'seconds':>9} {'peak RSS MB':>12}")
    for name, p in phases.items():
        print(f"{name:<12} {p['calls']:>5} {p['seconds']:>9.1f} {p['peak_rss_mb']:>12.0f}")
    if reuse:
        print(f"one update of {reuse['rows']} rows / {reuse['tokens']} tokens: reuse "
              f"{reuse['reuse_seconds']:.2f} s, separate no-grad pass "
              f"{reuse['separate_pass_seconds']:.2f} s (saves {100 * reuse['saving_frac']:.0f}%)")
    state = "valid" if result["valid"] else f"INVALID: {result['invalid_reason']}"
    print(f"load {result['load_before']} -> {result['load_after']}: {state}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
