"""`SAIDPOConfig`: every setting of one SAI-DPO run, typed and checked at construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.fields import coerce_fields

__all__ = ["REFERENCES", "RESUME_FREE_FIELDS", "SAIDPOConfig", "TAG_SOURCES"]

REFERENCES = ("initial", "previous")
TAG_SOURCES = ("data", "policy")
RESUME_FREE_FIELDS = frozenset(
    {"iterations", "resume", "keep_checkpoints", "save_model", "run_dir", "tags_cache"}
    | {"eval_before"}
)
"""Settings a resumed run may change: they do not alter what an iteration computes."""


@dataclass
class SAIDPOConfig:
    """Everything one SAI-DPO run needs; every field is a `lppo saidpo` flag."""

    # model and data
    model: str = "default"
    """model: model name ("default" = SmolLM2-135M-Instruct), HF directory or .gguf file."""
    dtype: str | None = None
    """dtype: parameter dtype (default fp32 on CPU, bf16 on GPU)."""
    data: str = "default"
    """data: dataset name or file (see lppo_env.load_problems)."""
    data_kwargs: dict = field(default_factory=dict)
    """data_kwargs: builder options of embedded datasets, e.g. {"size": 500}."""
    eval_size: int = 48
    """eval_size: held-out problems (fixed split, disjoint from the training pool)."""

    # the loop
    iterations: int = 3
    """iterations: probe -> select -> DPO rounds (the paper does not report its count)."""
    probe_fraction: float = 0.01
    """probe_fraction: share of the training pool probed per iteration (paper: ~1%)."""
    probe_size: int = 0
    """probe_size: problems probed per iteration; 0 = use probe_fraction."""
    k: int = 8
    """k: samples per probed/selected problem, K of NoP and P@K (paper: 8)."""
    pairs_per_iteration: int = 16
    """pairs_per_iteration: problems selected (and max DPO pairs) per iteration."""
    pairs_per_problem: int = 1
    """pairs_per_problem: distinct (correct, incorrect) pairs drawn per selected problem."""
    candidate_factor: float = 4.0
    """candidate_factor: in-band tournament size of the saidpo selector (1 = uniform)."""
    error_floor: float = 0.0
    """error_floor: mass added to every cluster's error rate when weighting clusters."""
    tags: str = "data"
    """tags: knowledge tags: data (MathProblem.tags) or policy (tagged by the initial policy)."""
    max_tags: int = 3
    """max_tags: knowledge tags per problem with tags=policy."""
    tag_max_new_tokens: int = 32
    """tag_max_new_tokens: reply cap of the tagger with tags=policy (a few tags need ~10-30)."""
    tags_cache: str = ""
    """tags_cache: JSONL cache of generated tags (id -> tags); "" = run_dir/tags.jsonl."""
    use_embeddings: bool = False
    """use_embeddings: cluster tag strings with MiniLM + K-Means instead of exact tags."""
    n_clusters: int = 8
    """n_clusters: K-Means clusters with use_embeddings (capped at distinct tag strings)."""

    # DPO
    beta: float = 0.1
    """beta: DPO inverse temperature (TRL default; not reported by SAI-DPO)."""
    loss_type: str = "sigmoid"
    """loss_type: sigmoid (DPO) or ipo."""
    lr: float = 1e-6
    """lr: AdamW learning rate."""
    epochs: int = 1
    """epochs: passes over each iteration's pairs."""
    num_minibatches: int = 1
    """num_minibatches: optimizer steps per epoch."""
    max_grad_norm: float = 1.0
    """max_grad_norm: global gradient-norm clip."""
    token_budget: int = 4096
    """token_budget: max padded tokens per forward/backward micro-batch."""
    reference: str = "initial"
    """reference: initial (frozen initial policy) or previous (policy before each iteration)."""

    # generation and bookkeeping
    max_new_tokens: int = 96
    """max_new_tokens: generation cap for probes, training samples and evaluation."""
    temperature: float = 1.0
    """temperature: sampling temperature of probe/training samples (eval is greedy)."""
    rollout_batch_size: int = 32
    """rollout_batch_size: sequences per HF generate call."""
    eval_before: bool = True
    """eval_before: also evaluate the initial policy (iteration 0)."""
    seed: int = 0
    """seed: data split, probes, sampling and pair choice."""
    run_dir: str = "runs/saidpo"
    """run_dir: output directory (config.json, metrics.jsonl, checkpoints/, model/)."""
    save_model: bool = False
    """save_model: save the final policy to run_dir/model."""
    resume: bool = True
    """resume: continue from run_dir's latest checkpoint; --no-resume starts over (deletes it)."""
    keep_checkpoints: int = 2
    """keep_checkpoints: newest checkpoints kept in run_dir/checkpoints (one per iteration)."""

    def __post_init__(self) -> None:
        coerce_fields(self)  # "1e-6" from YAML -> 1e-6; "false", null, 123 for a str refused
        checks = [
            ("eval_size", self.eval_size >= 0, ">= 0"),
            ("iterations", self.iterations >= 1, ">= 1"),
            ("probe_fraction", 0 < self.probe_fraction <= 1, "in (0, 1]"),
            ("probe_size", self.probe_size >= 0, ">= 0 (0 = use probe_fraction)"),
            ("k", self.k >= 2, ">= 2 (a pair needs a correct and an incorrect sample)"),
            ("pairs_per_iteration", self.pairs_per_iteration >= 1, ">= 1"),
            ("pairs_per_problem", self.pairs_per_problem >= 1, ">= 1"),
            ("tags", self.tags in TAG_SOURCES, f"one of {list(TAG_SOURCES)}"),
            ("max_tags", self.max_tags >= 1, ">= 1"),
            ("tag_max_new_tokens", self.tag_max_new_tokens >= 1, ">= 1"),
            ("n_clusters", self.n_clusters >= 1, ">= 1"),
            ("reference", self.reference in REFERENCES, f"one of {list(REFERENCES)}"),
            ("max_new_tokens", self.max_new_tokens >= 1, ">= 1"),
            ("temperature", self.temperature > 0, "> 0 (K greedy samples would be identical)"),
            ("rollout_batch_size", self.rollout_batch_size >= 1, ">= 1"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, ">= 1"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(
                    f"SAIDPOConfig expects {name} {expected}, got {getattr(self, name)!r}"
                )
        self.dpo_config()  # validates beta, loss_type, lr, ... now, before any work

    def dpo_config(self) -> Any:
        """The `DPOConfig` of the learner (validated)."""
        from agents.learners.dpo import DPOConfig

        return DPOConfig(
            beta=self.beta,
            loss_type=self.loss_type,
            lr=self.lr,
            epochs=self.epochs,
            num_minibatches=self.num_minibatches,
            max_grad_norm=self.max_grad_norm,
            token_budget=self.token_budget,
            seed=self.seed,
        )
