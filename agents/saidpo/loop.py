"""`SAIDPOLoop`: probe -> measure -> select -> pairs -> DPO -> evaluate, once per iteration."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.saidpo.checkpoint import LearnerState, check_resumable, load_weights
from agents.saidpo.clusters import problem_categories
from agents.saidpo.config import SAIDPOConfig
from agents.saidpo.pairs import build_pairs

__all__ = ["RewardFn", "SAIDPOLoop"]

RewardFn = Callable[[Sequence[Any], Sequence[Any]], np.ndarray]
"""`reward_fn(rollouts, problems) -> (n,) rewards in [0, 1]`, one problem per rollout."""

log = logging.getLogger(__name__)


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
            check_resumable(resume_from, cfg)
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
            load_weights(policy, resume_from / "model")
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
            learner=LearnerState(self.learner),
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
            self.backend,
            self.eval_problems,
            self.env.messages,
            self.verifier,
            max_new_tokens=self.cfg.max_new_tokens,
            seed=self.cfg.seed,
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
