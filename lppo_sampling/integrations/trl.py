"""TRL adapter: `LPPOGRPOTrainer`, a `trl.GRPOTrainer` driven by an lppo_sampling strategy.

What it changes in GRPO, and why each hook is the one TRL leaves open:

* **Which prompts** — `_get_train_sampler` returns `StrategyRepeatSampler`, which
  reproduces the index layout of TRL's `RepeatSampler` (each generation batch of
  `generation_batch_size // num_generations` prompts, every index repeated
  `num_generations` times in a row, the whole chunk repeated
  `num_iterations * steps_per_generation` times) but draws each chunk lazily from
  `strategy.select`, so rewards observed at step t steer the draw at step t+1 (the
  dataloader prefetches one batch, so the steer shows one generation later at worst).
* **Which rollouts are guided** — each chunk also gets `strategy.plan(keys)`; slot j of
  a guided sample starts from an expert prefix rendered on the *prompt* side, so the
  prefix is never trained and the importance ratios stay on-policy:
  plain-text prompts get the prefix appended; conversational prompts get it as a
  final, partial assistant message rendered with `continue_final_message=True`
  (`_tokenize_prompts` override). The prefix text is also put in the `prefix` column
  that reward functions receive (so a verifier can score prefix + completion).
* **Feedback** — `_calculate_rewards` returns TRL's gathered rewards; the adapter
  gathers the sample keys in the same process order and calls `strategy.observe` with
  identical data on every rank, so replicas stay bit-identical.
* **Weights** — after TRL computes advantages, they are multiplied by
  `strategy.weights(keys)` (and by `strategy.keep(keys)`, so a Filter zeroes dropped
  groups).
* **Checkpoint** — the strategy state is written to `checkpoint-N/lppo_sampler.npz`
  and read back on resume (a file from another strategy is refused before step 1).
  `ignore_data_skip=True` is required: the sampler restores its own RNG, and HF's
  batch skipping would re-draw (and re-plan) instead.

Generation backends with guidance: HF `generate`, continuous batching and vLLM colocate
render one prompt per row, so every slot gets its own prompt. vLLM **server** mode sends
only `prompts[::num_generations]` (one prompt per group) and asks for `n=G` samples, which
would drop the guided slots' prefixes; for a chunk with any guided slot the adapter calls
TRL's generation with `num_generations=1` (one request per row, server-side prefix
caching shares the prompt), so each slot is generated from its own prompt.

Supported: map-style `datasets.Dataset` with a stable key column; text prompts or
conversational text-only prompts; any `loss_type`. Refused at construction with
guidance: VLM processors and `environment_factory`. A custom `rollout_func` receives
the prefixed prompts and must continue them itself.

The adapter imports nothing from lppo_env or agents: env pieces (the prefix maker, the
verifier behind a reward function) are passed in by the caller (`prefix_fn=`,
`reward_funcs=`).

Tested with trl 1.16.0, transformers 5.19.0, accelerate 1.15 (CPU).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lppo_sampling.batch import GroupResults, RolloutPlan
from lppo_sampling.integrations._common import (
    build_strategy,
    check_plan_options,
    check_pool,
    check_sample_keys,
    check_strategy_name,
    declared_reward_bounds,
    refuse_plan_options,
    require,
    unit_rewards,
)
from lppo_sampling.strategy import Strategy

TRL_VERSION = require("trl", "1.16", below="1.17", purpose="LPPOGRPOTrainer")

import torch  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402
from datasets import Dataset  # noqa: E402
from torch.utils.data import Sampler  # noqa: E402
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR  # noqa: E402
from trl import GRPOTrainer  # noqa: E402
from trl.data_utils import is_conversational  # noqa: E402

__all__ = [
    "LPPOGRPOTrainer",
    "StrategyRepeatSampler",
    "SAMPLER_FILE",
    "with_prefix",
]

SAMPLER_FILE = "lppo_sampler.npz"
TRL_OPTIONS: frozenset[str] = frozenset()  # per-rollout plan options this adapter applies
_NAME = "TRL's LPPOGRPOTrainer"

for _hook in ("_get_train_sampler", "_calculate_rewards", "_generate_and_score_completions",
              "_generate_single_turn", "_tokenize_prompts", "_save_checkpoint",
              "_load_optimizer_and_scheduler"):
    if not hasattr(GRPOTrainer, _hook):  # fail at import, not mid-run
        raise ImportError(
            f"trl {TRL_VERSION}: GRPOTrainer has no {_hook}; LPPOGRPOTrainer is tested with "
            f"trl>=1.16,<1.17"
        )


class StrategyRepeatSampler(Sampler[int]):
    """TRL's `RepeatSampler` index layout, each chunk drawn lazily from a strategy.

    TRL groups completions positionally (every `num_generations` consecutive rows are a
    group) and shards the index stream across processes, so the layout must match
    RepeatSampler exactly; only the choice of prompts changes. Each chunk's
    `RolloutPlan` is queued so the trainer can render prefixes for the same chunk.

    Args:
        strategy: the strategy that selects and plans.
        positions: key -> dataset row position.
        mini_repeat_count: `num_generations` (G).
        batch_size: unique prompts per generation batch.
        repeat_count: `num_iterations * steps_per_generation`.
    """

    def __init__(self, strategy: Strategy, positions: dict[Any, int], mini_repeat_count: int,
                 batch_size: int, repeat_count: int) -> None:
        for name, v in (("mini_repeat_count", mini_repeat_count), ("batch_size", batch_size),
                        ("repeat_count", repeat_count)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not positions:
            raise ValueError("positions is empty: the training dataset has no rows")
        self.strategy = strategy
        self.positions = positions
        self.mini_repeat_count = int(mini_repeat_count)
        self.batch_size = int(batch_size)
        self.repeat_count = int(repeat_count)
        self.plans: deque[RolloutPlan] = deque()

    @property
    def num_chunks(self) -> int:
        """Generation batches per epoch (at least one, even for a pool smaller than a batch)."""
        return max(1, len(self.positions) // self.batch_size)

    def __len__(self) -> int:
        return self.num_chunks * self.batch_size * self.mini_repeat_count * self.repeat_count

    def __iter__(self) -> Iterator[int]:
        self.plans.clear()  # plans of an abandoned iterator can never be consumed
        for _ in range(self.num_chunks):
            keys = self.strategy.select(self.batch_size)
            plan = self.strategy.plan(keys)
            check_plan_options(plan, TRL_OPTIONS, _NAME)
            self.plans.append(plan)
            try:
                rows = [self.positions[k] for k in keys.tolist()]
            except KeyError as e:
                raise ValueError(
                    f"strategy selected key {e.args[0]!r}, which is not in the training dataset; "
                    "the strategy's pool must hold only the dataset's keys"
                ) from None
            for _ in range(self.repeat_count):
                for row in rows:
                    for _ in range(self.mini_repeat_count):
                        yield row

    def pop_plan(self) -> RolloutPlan:
        """The plan of the oldest chunk not yet generated (FIFO, like the dataloader)."""
        if not self.plans:
            raise RuntimeError(
                "StrategyRepeatSampler has no pending plan: the trainer generated a batch the "
                "sampler did not draw (was the train dataloader replaced?)"
            )
        return self.plans.popleft()


def with_prefix(prompt: Any, prefix: str) -> Any:
    """Return `prompt` continued by `prefix` on the prompt side.

    Text prompts get the prefix appended. Conversational prompts get it as a final,
    partial assistant message (appended to an existing final assistant message), which
    `LPPOGRPOTrainer` renders with `continue_final_message=True`.
    """
    if not prefix:
        return prompt
    if isinstance(prompt, str):
        return prompt + prefix
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        last = prompt[-1]
        if last.get("role") == "assistant":
            if not isinstance(last.get("content"), str):
                raise ValueError(
                    "a final assistant message must have string content to be continued")
            return prompt[:-1] + [{**last, "content": last["content"] + prefix}]
        return list(prompt) + [{"role": "assistant", "content": prefix}]
    raise ValueError(
        f"prompt must be a string or a list of chat messages, got {type(prompt).__name__}"
    )


class LPPOGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` whose prompts, prefixes, advantage weights and sampler state follow a strategy.

    Args:
        *args: passed to `GRPOTrainer`.
        strategy: an `lppo_sampling` strategy, or the registered name of one (built with
            `group_size=num_generations`, `seed=args.seed` and `strategy_kwargs`, so every
            rank builds the same replica). A `Strategy` object must have
            `group_size == num_generations` and be built with the same seed on every rank.
        strategy_kwargs: extra arguments of `make_strategy` when `strategy` is a name.
        key_column: dataset column with a stable, unique sample key (int or str).
        weight_advantages: multiply advantages by `strategy.weights(keys)`.
        apply_keep: multiply advantages by `strategy.keep(keys)` (a Filter's decision).
        prefix_fn: `f(row, ratio) -> str`, the expert prefix of a dataset row for a plan
            ratio in (0, 1]; None disables guidance (no sample is marked as having a
            solution, so guided strategies never guide). The caller supplies it, e.g.
            from `lppo_env.make_prefix` (see examples/trl/train_lppo_grpo.py).
        prefix_column: column added to every row with its prefix text ("" if unguided);
            reward functions receive it.
        solution_column: if set, only rows whose column is a non-empty string are marked
            as having a solution; otherwise every row is, when `prefix_fn` is given.
        category_column: column of per-sample category labels for strategies that read
            them (h1: "depth:N"; sec, dump, saidpo: topic or source); None passes none.
        reward_range: (low, high) of the weighted sum of reward functions; mapped onto
            [0, 1] for `observe` (strategies track pass rates). Reward functions that
            declare their own range (an attribute `reward_range = (low, high)`) are
            checked against it at construction; others on the first scored batch.
        check_replicas: gather `strategy.state_checksum()` after each update and raise
            if ranks disagree (a debug aid; costs one small gather per generation).
        **kwargs: passed to `GRPOTrainer`.

    Raises:
        ValueError: at construction, naming the setting: an unknown strategy name,
            `args.ignore_data_skip` False, a dataset that is not a map-style
            `datasets.Dataset`, a key column that is missing, has duplicates or keys
            that are not int/str, a strategy group size other than `num_generations`,
            declared reward ranges outside `reward_range`, guidance with a VLM or
            `environment_factory`, a strategy whose plans carry per-rollout options
            (`RolloutPlan.options`: length_curriculum, cog_drift, clpo), which TRL's
            generation cannot apply, or a pool a role refuses (h1 without depth labels
            in `category_column`).
    """

    def __init__(
        self,
        *args: Any,
        strategy: Strategy | str,
        strategy_kwargs: dict[str, Any] | None = None,
        key_column: str = "sample_id",
        weight_advantages: bool = True,
        apply_keep: bool = True,
        prefix_fn: Callable[[dict, float], str] | None = None,
        prefix_column: str = "prefix",
        solution_column: str | None = None,
        category_column: str | None = None,
        reward_range: tuple[float, float] = (0.0, 1.0),
        check_replicas: bool = False,
        **kwargs: Any,
    ) -> None:
        if isinstance(strategy, str):
            check_strategy_name(strategy, "LPPOGRPOTrainer(strategy=...)")
        elif not isinstance(strategy, Strategy):
            raise ValueError(
                "LPPOGRPOTrainer(strategy=...) expects an lppo_sampling Strategy or a registered "
                f"strategy name, got {type(strategy).__name__}")
        elif strategy_kwargs:
            raise ValueError("strategy_kwargs applies only when strategy is a name")
        else:  # before TRL loads the model; a name is checked once built
            refuse_plan_options(strategy, "LPPOGRPOTrainer(strategy=...)", _NAME, TRL_OPTIONS)
        unit_rewards([], reward_range, "reward_range")  # validate early
        self.lppo_key_column = key_column
        self.lppo_weight_advantages = bool(weight_advantages)
        self.lppo_apply_keep = bool(apply_keep)
        self.lppo_prefix_fn = prefix_fn
        self.lppo_prefix_column = prefix_column
        self.lppo_solution_column = solution_column
        self.lppo_category_column = category_column
        self.lppo_reward_range = tuple(float(x) for x in reward_range)
        self.lppo_check_replicas = bool(check_replicas)
        self.lppo_sampler: StrategyRepeatSampler | None = None
        self._lppo_rows_differ = False
        super().__init__(*args, **kwargs)
        if isinstance(strategy, str):
            strategy = build_strategy(
                strategy, "LPPOGRPOTrainer(strategy=...)",
                **{"group_size": self.num_generations, "seed": self.args.seed,
                   **(strategy_kwargs or {})})
        self.lppo_strategy = strategy
        self._lppo_check_settings()
        ds = self.train_dataset
        keys = check_sample_keys(ds[key_column], f"train_dataset[{key_column!r}]")
        self.lppo_positions = {k: pos for pos, k in enumerate(keys)}
        if prefix_fn is None:
            has_solution = np.zeros(len(keys), bool)
        elif solution_column is not None:
            has_solution = np.array(
                [isinstance(s, str) and bool(s.strip()) for s in ds[solution_column]], bool
            )
        else:
            has_solution = np.ones(len(keys), bool)
        category = None if category_column is None else list(ds[category_column])
        strategy.add_samples(np.asarray(keys), has_solution=has_solution, category=category)
        check_pool(strategy, "LPPOGRPOTrainer(strategy=..., category_column=...)")

    def _lppo_check_settings(self) -> None:
        """Every start-up check that needs TRL's parsed state; each error names its setting."""
        refuse_plan_options(self.lppo_strategy, "LPPOGRPOTrainer(strategy=...)", _NAME,
                            TRL_OPTIONS)
        if not self.args.ignore_data_skip:
            raise ValueError(
                "GRPOConfig(ignore_data_skip=False): LPPOGRPOTrainer needs ignore_data_skip=True; "
                "the strategy restores its own RNG on resume, and HF's batch skipping would "
                "re-draw batches instead"
            )
        ds = self.train_dataset
        if not isinstance(ds, Dataset):
            raise ValueError(
                "train_dataset: LPPOGRPOTrainer needs a map-style datasets.Dataset (TRL attaches "
                f"no sampler to an IterableDataset), got {type(ds).__name__}"
            )
        if self.lppo_key_column not in ds.column_names:
            raise ValueError(
                f"key_column={self.lppo_key_column!r}: train_dataset has no such column "
                f"(columns: {ds.column_names}); add a stable sample id column (e.g. "
                "ds.add_column('sample_id', ids)) or pass key_column="
            )
        if self.lppo_solution_column not in (None, *ds.column_names):
            raise ValueError(
                f"solution_column={self.lppo_solution_column!r}: train_dataset has no such "
                f"column (columns: {ds.column_names})")
        if self.lppo_category_column not in (None, *ds.column_names):
            raise ValueError(
                f"category_column={self.lppo_category_column!r}: train_dataset has no such "
                f"column (columns: {ds.column_names})")
        if self.lppo_prefix_column in ds.column_names:
            raise ValueError(
                f"prefix_column={self.lppo_prefix_column!r}: train_dataset already has that "
                "column; the trainer writes each rollout's prefix there, pass another name"
            )
        if self.lppo_strategy.group_size != self.num_generations:
            raise ValueError(
                f"strategy.group_size={self.lppo_strategy.group_size} but GRPOConfig("
                f"num_generations={self.num_generations}); build the strategy with "
                "group_size=num_generations (or pass its name)"
            )
        if self.lppo_prefix_fn is not None and (
                self._is_vlm or self.environment_factories is not None):
            raise ValueError(
                "prefix_fn: prefix guidance supports text-only models without "
                "environment_factory; pass prefix_fn=None for this set-up"
            )
        lo, hi = declared_reward_bounds(self.reward_funcs, self.reward_weights.tolist())
        want_lo, want_hi = self.lppo_reward_range
        if lo is not None and not (want_lo - 1e-9 <= lo and hi <= want_hi + 1e-9):
            raise ValueError(
                f"reward_range={self.lppo_reward_range}: the reward functions declare a weighted "
                f"sum in [{lo}, {hi}]; strategies observe pass rates in [0, 1], so pass "
                f"reward_range=({lo}, {hi})"
            )

    # ------------------------------------------------------------ sampling
    def _get_train_sampler(self, dataset: Any = None) -> StrategyRepeatSampler:
        """RepeatSampler layout, prompts drawn from the strategy (see `StrategyRepeatSampler`)."""
        if dataset is not None and len(dataset) != len(self.lppo_positions):
            raise ValueError(
                f"LPPOGRPOTrainer samples only its own train_dataset ({len(self.lppo_positions)} "
                f"rows), got a dataset of {len(dataset)} rows"
            )
        self.lppo_sampler = StrategyRepeatSampler(
            self.lppo_strategy,
            self.lppo_positions,
            mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
        )
        return self.lppo_sampler

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Render the chunk's prefixes, run TRL's generation and scoring, weight the advantages."""
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        if self.lppo_sampler is None:
            raise RuntimeError(
                "LPPOGRPOTrainer: train dataloader was not built by _get_train_sampler")
        plan = self.lppo_sampler.pop_plan()
        g = self.num_generations
        start = self.accelerator.process_index * len(inputs)
        flat_keys = np.repeat(plan.keys, g)
        flat_ratio = plan.prefix_ratios.reshape(-1)
        local = [x[self.lppo_key_column] for x in inputs]
        end = start + len(inputs)
        if end > flat_keys.size or flat_keys[start:end].tolist() != local:
            raise RuntimeError(
                "LPPOGRPOTrainer: the generation batch does not match the sampler's plan "
                f"(process {self.accelerator.process_index}, rows {start}..{start + len(inputs)}); "
                "the RepeatSampler layout was changed by another component"
            )
        rows = []
        for i, x in enumerate(inputs):
            ratio = float(flat_ratio[start + i])
            prefix = self.lppo_prefix_fn(x, ratio) if (ratio > 0 and self.lppo_prefix_fn) else ""
            row = dict(x)
            row[self.lppo_prefix_column] = prefix
            if prefix:
                row["prompt"] = with_prefix(row["prompt"], prefix)
            rows.append(row)
        # decided from the plan, identical on every rank (TRL's server path is collective)
        self._lppo_rows_differ = self.lppo_prefix_fn is not None and bool(
            (plan.prefix_ratios > 0).any())
        try:
            out = super()._generate_and_score_completions(rows)
        finally:
            self._lppo_rows_differ = False
        keys = np.asarray(local)
        factor = np.ones(len(local))
        if self.lppo_weight_advantages:
            factor = factor * self.lppo_strategy.weights(keys)
        if self.lppo_apply_keep:
            factor = factor * self.lppo_strategy.keep(keys)
        adv = out["advantages"]
        out["advantages"] = adv * torch.as_tensor(factor, dtype=adv.dtype, device=adv.device)
        metrics = self._metrics["train"]
        for k, v in self.lppo_strategy.metrics().items():
            if np.isfinite(v):
                metrics[k].append(float(v))
        metrics["sampler/advantage_factor_mean"].append(float(factor.mean()))
        return out

    def _generate_single_turn(self, prompt_ids: list, images: Any, multimodal_fields: dict,
                              num_generations: int, *args: Any, **kwargs: Any) -> tuple:
        """TRL's generation, one request per row when a group's rows carry different prompts.

        vLLM server mode generates `n=num_generations` samples of `prompts[::num_generations]`
        only, which would answer a guided slot from the group's first (unguided) prompt;
        `num_generations=1` there makes TRL send every row's own prompt. Other backends
        already generate one sample per row and ignore the argument.
        """
        if self._lppo_rows_differ and self.use_vllm and self.vllm_mode == "server":
            num_generations = 1
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields,
                                             num_generations, *args, **kwargs)

    def _calculate_rewards(self, inputs: list[dict[str, Any]], prompts: list, completions: list,
                           completion_ids_list: list) -> torch.Tensor:
        """TRL's gathered rewards, also fed to the strategy (same data, same order, every rank)."""
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list)
        if not self.model.training:
            return rewards_per_func
        keys = np.asarray(gather_object([x[self.lppo_key_column] for x in inputs]))
        guided = np.asarray(gather_object([bool(x.get(self.lppo_prefix_column)) for x in inputs]))
        lengths = np.asarray(gather_object([len(c) for c in completion_ids_list]), dtype=np.float64)
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        total = (rewards_per_func * weights).nansum(dim=1)
        valid = (~torch.isnan(rewards_per_func).all(dim=1)).cpu().numpy()
        if valid.any():
            r = unit_rewards(total.double().cpu().numpy()[valid], self.lppo_reward_range,
                             "LPPOGRPOTrainer")
            self.lppo_strategy.observe(GroupResults.from_flat(
                keys[valid], r, guided=guided[valid], lengths=lengths[valid]))
        if self.lppo_check_replicas and self.accelerator.num_processes > 1:
            sums = gather_object([self.lppo_strategy.state_checksum()])
            if len(set(sums)) != 1:
                raise RuntimeError(f"strategy replicas diverged across ranks: {sums}")
        return rewards_per_func

    def _tokenize_prompts(self, prompts: list) -> tuple[list, Any, dict]:
        """Render prompts ending in an assistant prefix with `continue_final_message=True`."""
        conv = is_conversational({"prompt": prompts[0]})
        cont = [i for i, p in enumerate(prompts) if conv and p and p[-1].get("role") == "assistant"]
        if not cont:
            return super()._tokenize_prompts(prompts)
        if self._is_vlm or self.environment_factories is not None:
            raise ValueError(
                "prefix guidance with conversational prompts supports text-only models without "
                "environment_factory; disable guidance (prefix_fn=None) for this setup"
            )
        ids: list[list[int] | None] = [None] * len(prompts)
        plain = [i for i in range(len(prompts)) if i not in set(cont)]
        if plain:
            plain_ids, images, mm = super()._tokenize_prompts([prompts[i] for i in plain])
            if images is not None or mm:
                raise ValueError("prefix guidance does not support multimodal prompts")
            for i, p in zip(plain, plain_ids, strict=True):
                ids[i] = list(p)
        for i in cont:
            tok = self.processing_class.apply_chat_template(
                conversation=prompts[i],
                tools=self.tools or None,
                chat_template=self.chat_template,
                add_generation_prompt=False,
                continue_final_message=True,
                tokenize=True,
                return_dict=True,
                **self.chat_template_kwargs,
            )
            seq = tok["input_ids"]
            ids[i] = list(seq[0] if seq and isinstance(seq[0], list) else seq)
        return ids, None, {}

    # ---------------------------------------------------------- checkpoint
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write the strategy state next to the model and optimizer (`lppo_sampler.npz`)."""
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial=trial),
                                  f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            self.lppo_strategy.save(os.path.join(folder, SAMPLER_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """Restore the strategy state saved by `_save_checkpoint` (every rank reads the file)."""
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, SAMPLER_FILE)
        if not os.path.exists(path):
            raise ValueError(
                f"resuming from {checkpoint}, which has no {SAMPLER_FILE}: it was not written by "
                "LPPOGRPOTrainer, so the sampler state cannot be restored"
            )
        try:
            self.lppo_strategy.load(path)
        except ValueError as e:
            raise ValueError(f"resume_from_checkpoint={checkpoint}: {e}") from e
