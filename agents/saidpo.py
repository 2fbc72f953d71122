"""SAI-DPO (Rao et al., arXiv 2505.16176): probe -> self-aware selection -> DPO, iterated.

Each iteration (papers_lppo_saidpo.md §2.6; [A] = this project's assumption):

1. **probe** ~1% of the training pool (`probe_keys` of the `saidpo` strategy), K = 8
   samples per problem from the current policy, scored by the verifier;
2. **measure**: the strategy observes rewards, lengths and step counts, so each probed
   problem gets its self-aware difficulty (NoP, steps, length) and each knowledge cluster
   its error rate;
3. **select** training problems through the strategy: solvable band 0 < NoP < K [A],
   clusters drawn with mass proportional to their error rate [A], harder first in band;
   selected problems not probed this iteration are sampled K times (and observed);
4. **pairs**: for each selected problem with both outcomes, a random correct sample
   (chosen) and a random incorrect one (rejected) [A, the paper's "natural" recipe];
5. **DPO** update(s) on the pairs; reference = the initial policy (default) or the
   policy of the previous iteration (`reference="previous"`, iterative DPO);
6. **evaluate** greedy pass@1 on a fixed held-out split; one JSONL line per iteration.

Clusters are the problems' knowledge tags joined with "; ", used as the strategy's
`category`. The tags come from the data (`tags="data"`: `MathProblem.tags`) or, as in
the paper, from an LLM (`tags="policy"`: the initial policy tags every training problem
once, greedily, cached in JSONL; see `agents.knowledge_tags`). With `use_embeddings` the
tag strings are embedded with all-MiniLM-L6-v2 and grouped by K-Means
(`lppo_sampling.clustering.cluster_tags`), as in the paper; generated tags rarely repeat
exactly, so they are meant to be used with it.

After every iteration the loop writes an atomic checkpoint to `run_dir/checkpoints/`
(`agents.checkpoint`: policy, optimizer and DPO shuffling RNG, the reference weights
unless they equal the policy's, strategy state, RNG states, iteration counter); a new
`SAIDPOLoop` on the same run_dir resumes from the latest one (`resume=True`) and drops
the metrics lines of iterations it will redo, so a killed run continued to the end logs
exactly what an uninterrupted run logs.

CLI: `lppo saidpo --iterations 3 --pairs-per-iteration 16` (see `add_saidpo_parser`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SAIDPOConfig",
    "SAIDPOLoop",
    "RewardFn",
    "add_saidpo_parser",
    "build_pairs",
    "problem_categories",
    "run_saidpo",
]

RewardFn = Callable[[Sequence[Any], Sequence[Any]], np.ndarray]
"""`reward_fn(rollouts, problems) -> (n,) rewards in [0, 1]`, one problem per rollout."""

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------- pure helpers


def build_pairs(
    rewards: np.ndarray,
    pairs_per_problem: int,
    rng: np.random.Generator,
    *,
    correct_threshold: float = 0.5,
) -> list[tuple[int, int, int]]:
    """Draw DPO pairs (problem, chosen sample, rejected sample) from K samples per problem.

    Why random: SAI-DPO pairs "a random correct answer" with "a random incorrect answer"
    of the same problem; problems with only one outcome (NoP = 0 or K) give no pair.

    Args:
        rewards: (n, K) rewards of K samples for each of n problems.
        pairs_per_problem: distinct (correct, incorrect) combinations to draw per problem,
            capped at #correct x #incorrect.
        rng: the generator (seeded by the caller, so pairs are reproducible).
        correct_threshold: reward at or above which a sample is correct (the strategy's).

    Returns:
        `(i, j_chosen, j_rejected)` triples, problems in order.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"expected rewards of shape (n, K), got {r.shape}")
    if pairs_per_problem < 1:
        raise ValueError(f"expected pairs_per_problem >= 1, got {pairs_per_problem}")
    out: list[tuple[int, int, int]] = []
    for i, row in enumerate(r):
        good = np.flatnonzero(row >= correct_threshold)
        bad = np.flatnonzero(row < correct_threshold)
        if good.size == 0 or bad.size == 0:
            continue
        m = min(pairs_per_problem, good.size * bad.size)
        for combo in rng.choice(good.size * bad.size, size=m, replace=False).tolist():
            out.append((i, int(good[combo // bad.size]), int(bad[combo % bad.size])))
    return out


def problem_categories(
    problems: Sequence[Any],
    *,
    tags: Mapping[str, Sequence[str]] | None = None,
    use_embeddings: bool = False,
    n_clusters: int = 8,
    seed: int = 0,
) -> list[str]:
    """Knowledge cluster of each problem, for the strategy's `category`.

    Without embeddings a problem's cluster is its tag string ("; ".join(tags), or its
    source when untagged): problems sharing exactly the same knowledge points cluster
    together. With embeddings the distinct tag strings are embedded with MiniLM and
    grouped by K-Means into min(n_clusters, #distinct) clusters (SAI-DPO's recipe).

    Args:
        problems: the pool.
        tags: `{problem.id: tags}` replacing `MathProblem.tags` (e.g. from
            `agents.knowledge_tags.tag_problems`); must cover every problem.
        use_embeddings: cluster the tag strings with MiniLM + K-Means.
        n_clusters: K-Means clusters (capped at the distinct tag strings).
        seed: K-Means seed.

    Returns:
        One label per problem (`"cluster:<id>"` with embeddings).
    """
    if tags is not None:
        missing = [p.id for p in problems if p.id not in tags]
        if missing:
            raise ValueError(
                f"expected tags for every problem, got none for {len(missing)} "
                f"(first: {missing[0]!r})"
            )
    texts = []
    for p in problems:
        ts = p.tags if tags is None else tags[p.id]
        texts.append("; ".join(ts) if ts else (p.source or "untagged"))
    if not use_embeddings:
        return texts
    from lppo_sampling.clustering import cluster_tags

    distinct = list(dict.fromkeys(texts))
    labels = cluster_tags(distinct, min(n_clusters, len(distinct)), seed)
    of = dict(zip(distinct, labels.tolist(), strict=True))
    return [f"cluster:{of[t]}" for t in texts]


# --------------------------------------------------------------------------- the loop


class SAIDPOLoop:
    """Runs `SAIDPOConfig`: build, then `run()`; or call `iteration()` yourself.

    With `cfg.resume` and a checkpoint in `run_dir/checkpoints`, the loop continues after
    the checkpoint's iteration (its settings must match, see `RESUME_FREE_FIELDS`);
    otherwise it starts over, deleting old checkpoints and metrics of run_dir.

    Args:
        cfg: the configuration.
        policy: a ready `Policy` (tests pass the tiny model); default `load_policy(cfg.model)`.
            When resuming, the checkpoint's weights are loaded into it.
        reward_fn: `reward_fn(rollouts, problems) -> (n,)` rewards in [0, 1]; default the
            math verifier on `rollout.full_text` vs `problem.answer`. Evaluation always
            uses the verifier.
    """

    def __init__(
        self, cfg: SAIDPOConfig, *, policy: Any = None, reward_fn: RewardFn | None = None
    ) -> None:
        import torch

        from agents.checkpoint import latest_checkpoint
        from agents.learners.dpo import DPOLearner
        from agents.metrics import MetricsWriter
        from agents.policy import load_policy
        from agents.rollout.hf import HFBackend
        from lppo_env import MathReasoningEnv, default_verifier, load_problems, split_problems
        from lppo_sampling import make_strategy

        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.run_dir = Path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_root = self.run_dir / "checkpoints"
        resume_from = latest_checkpoint(self.ckpt_root) if cfg.resume else None
        if resume_from is not None:
            self._check_resumable(resume_from)
        problems = load_problems(cfg.data, **cfg.data_kwargs)
        if cfg.eval_size >= len(problems):
            raise ValueError(
                f"expected eval_size < dataset size ({len(problems)}), got {cfg.eval_size}"
            )
        self.train_problems, self.eval_problems = split_problems(
            problems, cfg.eval_size, seed=cfg.seed
        )
        self.by_id = {p.id: p for p in self.train_problems}
        if resume_from is None:
            self.policy = policy if policy is not None else load_policy(cfg.model, dtype=cfg.dtype)
        elif policy is None:
            self.policy = load_policy(str(resume_from / "model"), dtype=cfg.dtype)
            self.policy.name = cfg.model
        else:
            self.policy = policy
            _load_weights(policy, resume_from / "model")
        self.verifier = default_verifier()
        self.reward_fn = reward_fn if reward_fn is not None else self._verify
        self.env = MathReasoningEnv(self.train_problems, tokenizer=self.policy.tokenizer)
        self.backend = HFBackend(self.policy, batch_size=cfg.rollout_batch_size)
        # knowledge tags -> clusters, generated before any update (by the initial policy);
        # a resumed run reads them from the cache, and its clusters from the checkpoint
        self.tags = self.knowledge_tags() if cfg.tags == "policy" else None
        self.strategy = make_strategy(
            "saidpo",
            group_size=cfg.k,
            probe_fraction=cfg.probe_fraction,
            candidate_factor=cfg.candidate_factor,
            error_floor=cfg.error_floor,
            seed=cfg.seed,
        )
        self.strategy.add_samples(
            [p.id for p in self.train_problems],
            category=problem_categories(
                self.train_problems,
                tags=self.tags,
                use_embeddings=cfg.use_embeddings,
                n_clusters=cfg.n_clusters,
                seed=cfg.seed,
            ),
        )
        # the reference is a frozen copy of the policy now; a checkpoint's replaces it below
        self.learner = DPOLearner(self.policy, cfg.dpo_config())
        self.metrics = MetricsWriter(self.run_dir / "metrics.jsonl")
        self.iteration_count = 0
        if resume_from is not None:
            self._resume(resume_from)
        else:
            self.metrics.truncate_after(-1)
            shutil.rmtree(self.ckpt_root, ignore_errors=True)  # a fresh run's, not another's
        (self.run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    # ------------------------------------------------------------------ checkpoints
    def _check_resumable(self, ckpt: Path) -> None:
        """Refuse a checkpoint written with other settings: the run would silently change."""
        state = json.loads((ckpt / "trainer_state.json").read_text())
        saved = state.get("config", {})
        now = json.loads(json.dumps(dataclasses.asdict(self.cfg)))
        diff = sorted(
            k
            for k in set(saved) | set(now)
            if k not in RESUME_FREE_FIELDS and saved.get(k) != now.get(k)
        )
        if diff:
            was = ", ".join(f"{k}={saved.get(k)!r}" for k in diff)
            got = ", ".join(f"{k}={now.get(k)!r}" for k in diff)
            raise ValueError(
                f"expected the settings of the checkpoint {ckpt} to resume from ({was}), got "
                f"{got}; use the same settings, another run_dir, or --no-resume (starts over)"
            )

    def _resume(self, ckpt: Path) -> None:
        """Restore learner, strategy, RNGs and counter; drop metrics lines to be redone."""
        import torch

        from agents.checkpoint import load_rng_state

        state = json.loads((ckpt / "trainer_state.json").read_text())
        self.learner.load_state_dict(torch.load(ckpt / "learner.pt", weights_only=False))
        self.strategy.load(ckpt / "sampler.npz")
        load_rng_state(torch.load(ckpt / "rng.pt", weights_only=False))
        self.iteration_count = int(state["step"])
        self.metrics.truncate_after(self.iteration_count, key="iteration")
        log.info("resumed from %s at iteration %d", ckpt, self.iteration_count)

    def save_checkpoint(self) -> Path:
        """Write an atomic checkpoint of the current iteration (`run()` does, after each)."""
        from agents.checkpoint import save_checkpoint

        return save_checkpoint(
            self.ckpt_root,
            self.iteration_count,
            policy=self.policy,
            learner=_LearnerState(self.learner),
            strategy=self.strategy,
            trainer_state={"config": dataclasses.asdict(self.cfg)},
            keep=self.cfg.keep_checkpoints,
        )

    # ------------------------------------------------------------------ pieces
    @property
    def tags_cache(self) -> Path:
        """Where generated tags are cached (`cfg.tags_cache`, default run_dir/tags.jsonl)."""
        return Path(self.cfg.tags_cache) if self.cfg.tags_cache else self.run_dir / "tags.jsonl"

    def knowledge_tags(self) -> dict[str, tuple[str, ...]]:
        """Tags of every training problem by the policy (greedy), through the JSONL cache.

        Only problems missing from the cache are tagged, so this runs once per pool.
        """
        from agents.knowledge_tags import tag_problems

        return tag_problems(
            self.backend,
            self.train_problems,
            cache=self.tags_cache,
            chunk_size=self.cfg.rollout_batch_size,
            max_tags=self.cfg.max_tags,
            max_new_tokens=self.cfg.tag_max_new_tokens,
            seed=self.cfg.seed,
        )

    def _verify(self, rollouts: Sequence[Any], problems: Sequence[Any]) -> np.ndarray:
        verdicts = self.verifier.verify_batch(
            [r.full_text for r in rollouts], [p.answer for p in problems]
        )
        return np.array([v.reward for v in verdicts], dtype=np.float64)

    def sample(self, keys: Sequence[str], seed: int) -> dict[str, Any]:
        """K samples of each problem, scored and observed by the strategy.

        Returns:
            `{"rollouts": (n, K) nested list, "rewards": (n, K), "lengths", "steps"}`.
        """
        from agents.rollout.base import RolloutRequest, SamplingConfig
        from lppo_env import split_steps
        from lppo_sampling import GroupResults

        K = self.cfg.k
        problems = [self.by_id[k] for k in keys]
        requests = [
            RolloutRequest(self.env.messages(p), n=K, tag=k)
            for p, k in zip(problems, keys, strict=True)
        ]
        sampling = SamplingConfig(
            temperature=self.cfg.temperature, max_new_tokens=self.cfg.max_new_tokens, seed=seed
        )
        flat = self.backend.generate(requests, sampling)
        rewards = np.asarray(
            self.reward_fn(flat, [problems[r.request_index] for r in flat]), np.float64
        )
        if rewards.shape != (len(flat),):
            raise ValueError(
                f"expected reward_fn to return shape ({len(flat)},), got {rewards.shape}"
            )
        n = len(keys)
        lengths = np.array([len(r.response_ids) for r in flat], np.float64).reshape(n, K)
        steps = np.array([len(split_steps(r.full_text)) for r in flat], np.float64).reshape(n, K)
        rewards = rewards.reshape(n, K)
        self.strategy.observe(GroupResults.build(list(keys), rewards, lengths=lengths, steps=steps))
        grouped = [flat[i * K : (i + 1) * K] for i in range(n)]
        return {"rollouts": grouped, "rewards": rewards, "lengths": lengths, "steps": steps}

    def evaluate(self) -> dict[str, float]:
        """Greedy pass@1 on the held-out split."""
        from agents.evaluation import heldout_accuracy

        return heldout_accuracy(
            self.backend, self.eval_problems, self.env.messages, self.verifier,
            max_new_tokens=self.cfg.max_new_tokens, seed=self.cfg.seed,
        )

    # ------------------------------------------------------------------ one iteration
    def iteration(self) -> dict[str, Any]:
        """Probe, measure, select, pair, DPO, evaluate; returns (and logs) the metrics."""
        from agents.learners.dpo import PreferenceBatch
        from lppo_sampling.strategies.saidpo import probe_keys

        cfg = self.cfg
        it = self.iteration_count + 1
        record: dict[str, Any] = {"iteration": it}
        start = time.perf_counter()

        # 1-2. probe ~1% with K samples each; the strategy measures NoP, steps, length
        t0 = time.perf_counter()
        probe = [str(k) for k in probe_keys(self.strategy, cfg.probe_size or None)]
        fresh = {}
        got = self.sample(probe, seed=cfg.seed * 1_000_003 + 2 * it)
        for i, key in enumerate(probe):
            fresh[key] = (got["rollouts"][i], got["rewards"][i])
        nop = (got["rewards"] >= 0.5).sum(axis=1)
        record.update(
            {
                "probe/n_problems": float(len(probe)),
                "probe/pass_rate": float(got["rewards"].mean()),
                "probe/frac_solvable": float(((nop > 0) & (nop < cfg.k)).mean()),
                "probe/frac_zero_pass": float((nop == 0).mean()),
                "probe/frac_all_pass": float((nop == cfg.k).mean()),
                "probe/length_mean": float(got["lengths"].mean()),
                "probe/steps_mean": float(got["steps"].mean()),
                "time/probe": time.perf_counter() - t0,
            }
        )

        # 3. select through the strategy: band, weak clusters, harder first
        t0 = time.perf_counter()
        n_select = math.ceil(cfg.pairs_per_iteration / cfg.pairs_per_problem)
        selected = [str(k) for k in self.strategy.select(n_select)]
        missing = [k for k in selected if k not in fresh]
        if missing:
            got = self.sample(missing, seed=cfg.seed * 1_000_003 + 2 * it + 1)
            for i, key in enumerate(missing):
                fresh[key] = (got["rollouts"][i], got["rewards"][i])
        record["select/n_problems"] = float(len(selected))
        record["select/n_sampled"] = float(len(missing))
        record["time/select"] = time.perf_counter() - t0

        # 4. pairs: a random correct vs a random incorrect sample of the same problem
        rng = np.random.default_rng([cfg.seed, it])
        rewards = np.stack([fresh[k][1] for k in selected])
        triples = build_pairs(rewards, cfg.pairs_per_problem, rng)
        if len(triples) > cfg.pairs_per_iteration:
            keep = np.sort(rng.choice(len(triples), cfg.pairs_per_iteration, replace=False))
            triples = [triples[i] for i in keep.tolist()]
        record["dpo/frac_selected_with_pair"] = float(
            len({i for i, _, _ in triples}) / max(len(selected), 1)
        )

        # 5. DPO
        t0 = time.perf_counter()
        if cfg.reference == "previous":
            self.learner.sync_reference()
        if triples:
            keys = [selected[i] for i, _, _ in triples]
            weights = self.strategy.weights(keys)
            # an iteration may yield fewer pairs than minibatches: one pair per step then
            self.learner.config.num_minibatches = min(cfg.num_minibatches, len(triples))
            pairs = PreferenceBatch.from_rollouts(
                [fresh[selected[i]][0][c] for i, c, _ in triples],
                [fresh[selected[i]][0][r] for i, _, r in triples],
                weights=weights,
                pad_token_id=self.backend.pad_token_id,
            )
            record.update(self.learner.update(pairs))
        else:
            record["dpo/num_pairs"] = 0.0
        record["time/dpo"] = time.perf_counter() - t0
        # sampler metrics after `weights`, so they describe this iteration's pairs; without
        # pairs the weight stats would be an earlier iteration's (and gone after a resume)
        sampler = self.strategy.metrics()
        if not triples:
            sampler = {k: v for k, v in sampler.items() if not k.startswith("sampler/weight_")}
        record.update(sampler)

        # 6. evaluate and log
        record.update(self.evaluate())
        record["time/iteration"] = time.perf_counter() - start
        self.iteration_count = it
        self.metrics.write(record)
        return record

    def run(self) -> dict[str, Any]:
        """The remaining iterations, each followed by a checkpoint; returns a summary.

        The iteration-0 evaluation runs only on a fresh start. The summary is read back
        from metrics.jsonl, so a resumed run reports the whole run, not its last part.
        """
        from agents.metrics import read_metrics

        started = time.perf_counter()
        if self.iteration_count == 0 and self.cfg.eval_before and self.eval_problems:
            self.metrics.write({"iteration": 0, **self.evaluate()})
        while self.iteration_count < self.cfg.iterations:
            self.iteration()  # logs first: a crash before the checkpoint redoes the line
            self.save_checkpoint()
        if self.cfg.save_model:
            out = self.run_dir / "model"
            self.policy.model.save_pretrained(out)
            self.policy.tokenizer.save_pretrained(out)
        records = read_metrics(self.run_dir / "metrics.jsonl") if self.metrics.path.exists() else []
        first = next((r for r in records if r.get("iteration") == 0), {})
        done = [r for r in records if r.get("iteration", 0) >= 1]
        return {
            "iterations": self.iteration_count,
            "pairs_total": float(sum(r.get("dpo/num_pairs") or 0.0 for r in done)),
            "eval_before": first.get("eval/accuracy"),
            "eval_after": done[-1].get("eval/accuracy") if done else None,
            "seconds": time.perf_counter() - started,
            "run_dir": str(self.run_dir),
            "metrics": str(self.run_dir / "metrics.jsonl"),
        }


def _load_weights(policy: Any, model_dir: Path) -> None:
    """Load a checkpoint's weights into `policy.model` in place (callers keep the object)."""
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(model_dir, dtype=policy.model.dtype)
    policy.model.load_state_dict(saved.state_dict())


class _LearnerState:
    """The DPO learner as `save_checkpoint` stores it, minus a reference equal to the policy.

    They are equal before any update, or after `sync_reference` with no update since; the
    resumed learner's frozen copy of the loaded policy is then exact, and a model's worth
    of disk is saved.
    """

    def __init__(self, learner: Any) -> None:
        self.learner = learner

    def state_dict(self) -> dict[str, Any]:
        import torch

        state = self.learner.state_dict()
        ref = state.get("ref_model")
        if ref is not None:
            policy = self.learner.model.state_dict()
            if ref.keys() == policy.keys() and all(torch.equal(ref[k], policy[k]) for k in ref):
                del state["ref_model"]
        return state


# --------------------------------------------------------------------------- CLI


def _field_docs() -> dict[str, str]:
    """The string literal under each `SAIDPOConfig` field (its --help)."""
    body = ast.parse(inspect.getsource(SAIDPOConfig)).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for a, b in zip(body, body[1:], strict=False):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr):
            text = str(getattr(b.value, "value", ""))
            docs[a.target.id] = text.split(":", 1)[1].strip() if ":" in text else text  # type: ignore[attr-defined]
    return docs


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected JSON, got {text!r} ({e})") from e


def add_saidpo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `lppo saidpo`: one flag per `SAIDPOConfig` field (`--pairs-per-iteration 16`)."""
    p = subparsers.add_parser(
        "saidpo", help="SAI-DPO: iterative probe -> self-aware selection -> DPO"
    )
    docs = _field_docs()
    for f in dataclasses.fields(SAIDPOConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kw: dict[str, Any] = {
            "dest": f.name,
            "default": default,
            "help": f"{docs.get(f.name, '')} (default: {default!r})".replace("%", "%%"),
        }
        kind = str(f.type)
        if kind == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif kind == "dict":
            p.add_argument(flag, type=_json, metavar="JSON", **kw)
        elif kind in ("int", "float"):
            p.add_argument(flag, type=int if kind == "int" else float, **kw)
        else:
            p.add_argument(flag, type=str, **kw)
    return p


def run_saidpo(args: argparse.Namespace) -> int:
    """Run `lppo saidpo`; prints the summary as JSON. Bad settings raise ValueError (exit 2)."""
    cfg = SAIDPOConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SAIDPOConfig)})
    summary = SAIDPOLoop(cfg).run()
    print(json.dumps(summary, indent=2))
    return 0
