"""verl adapter: a stateful strategy-driven sampler, reward feedback and weighted estimators.

verl 0.8 removed `AbstractCurriculumSampler` and `data.sampler.class_path`; the
current release (0.9.1) takes a sampler only through `RayPPOTrainer(train_sampler=...)`
and never calls back into it. This module therefore ships the pieces separately and
one config-only way to wire them:

* `LPPOSampler` — a lazy torch `Sampler[int]` that draws each batch from
  `strategy.select` and is torchdata-`Stateful` (strategy state incl. RNG, epoch,
  in-epoch position and the undelivered rest of the current batch), so verl's
  `StatefulDataLoader` checkpoint (`data.pt`) resumes the exact stream.
  `update(batch: DataProto)` feeds a step's rewards back (`token_level_scores`
  summed per response, keyed by `non_tensor_batch["index"]` = `extra_info.index`).
* `lppo_grpo` — a verl advantage estimator registered in `ADV_ESTIMATOR_REGISTRY`:
  verl's GRPO advantages times `strategy.weights × strategy.keep`. verl passes
  registered estimators only `token_level_rewards`, `response_mask`, `config` and
  `index` (= the per-prompt `uid`), never dataset ids; so `LPPORayPPOTrainer` tags
  each `uid` with its sample key (`tag_uids`) right after verl creates it, and the
  estimator reads the keys back from the uids. The estimator also observes the
  rewards (it is the one driver-side call between reward and update that sees every
  group), which is what LPPO's weights need: Δ of *this* batch.
* `LPPORayPPOTrainer` — `RayPPOTrainer` subclass: binds the sampler for the
  estimator, tags uids in `_get_gen_batch`, and calls `sampler.update(batch)` before
  each actor update (for estimators other than `lppo_*`; uids the estimator already
  observed are skipped, so nothing is counted twice).
* `LPPODataset` — an `RLHFDataset` for `data.custom_cls` whose construction installs
  the two hooks into `verl.trainer.main_ppo_v0` (the legacy `TaskRunner`, in its own
  Ray process), so `main_ppo` with `trainer.use_v1=False` needs only config lines.
* `LPPOCurriculumSampler` — on verl <= 0.7 only, the `AbstractCurriculumSampler`
  subclass for `data.sampler.class_path`; verl calls its `update` after each step.
* `to_verl_parquet(problems, path)` — verl's RL parquet layout with a stable
  `extra_info.index`.

Prefix guidance is not wired for verl (it needs a custom agent loop): samples are
registered without solutions, so guided strategies behave as unguided ones here.
The V1 trainer (`trainer.use_v1=True`) builds its own sampler and is not supported.

Tested with verl 0.9.1 (torch 2.13 CPU, tensordict 0.10, torchdata 0.11).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lppo_sampling.batch import GroupResults
from lppo_sampling.integrations._common import require, unit_rewards
from lppo_sampling.strategy import Strategy, make_strategy

VERL_VERSION = require("verl", "0.5", purpose="the verl sampler and estimators")

import torch  # noqa: E402
from torch.utils.data import Sampler  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

try:  # verl <= 0.7.1
    from verl.experimental.dataset.sampler import AbstractCurriculumSampler
except ImportError:  # verl >= 0.8 removed the curriculum hook
    AbstractCurriculumSampler = None

__all__ = [
    "LPPOSampler",
    "LPPORayPPOTrainer",
    "LPPODataset",
    "LPPOCurriculumSampler",
    "register_weighted_estimator",
    "tag_uids",
    "keys_from_uids",
    "install",
    "to_verl_parquet",
    "HAS_CURRICULUM_SAMPLER",
    "VERL_VERSION",
]

HAS_CURRICULUM_SAMPLER = AbstractCurriculumSampler is not None
_UID_SEP = "|lppo|"
_ACTIVE: list[LPPOSampler] = []  # the sampler the estimators use (one per driver process)


def _norm_key(k: Any) -> int | str:
    if isinstance(k, (bool, np.bool_)):
        raise ValueError(f"sample keys must be int or str, got bool {k!r}")
    if isinstance(k, (int, np.integer)):
        return int(k)
    if isinstance(k, (float, np.floating)) and float(k).is_integer():
        return int(k)  # parquet may widen an int column to float when it has nulls
    if isinstance(k, (str, np.str_)):
        return str(k)
    raise ValueError(f"sample keys must be int or str, got {type(k).__name__} {k!r}")


def dataset_keys(data_source: Any) -> list[int | str]:
    """Stable keys of a verl `RLHFDataset`, in row order: its rows' `extra_info.index`.

    verl hands batches back keyed by `non_tensor_batch["index"]`, which is
    `extra_info["index"]` (0 when missing), not the position the sampler yielded —
    rows may have been filtered — so the key → position map is built here, once.

    Raises:
        ValueError: the dataset has no `dataframe`, or a row lacks `extra_info.index`.
    """
    df = getattr(data_source, "dataframe", None)
    if df is None:
        raise ValueError(
            f"{type(data_source).__name__} has no .dataframe; pass keys= explicitly or use verl's "
            "RLHFDataset"
        )
    keys = []
    for pos, info in enumerate(df["extra_info"]):
        if not isinstance(info, Mapping) or info.get("index") is None:
            raise ValueError(
                f"dataset row {pos} has no extra_info.index; verl would key it as 0, so write a "
                "unique extra_info.index per row (see to_verl_parquet)"
            )
        keys.append(_norm_key(info["index"]))
    return keys


def _cfg_get(cfg: Any, name: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if hasattr(cfg, "get"):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def _strategy_from_config(data_config: Any) -> Strategy:
    """`data.lppo` (or `data.sampler.lppo` on verl <= 0.7): {strategy: name, kwargs: {...}}."""
    node = _cfg_get(data_config, "lppo")
    if node is None:
        node = _cfg_get(_cfg_get(data_config, "sampler"), "lppo")
    if node is None:
        raise ValueError(
            "no strategy given: pass strategy= or set +data.lppo.strategy=<name> "
            "(+data.lppo.kwargs.<arg>=... for its arguments)"
        )
    name = _cfg_get(node, "strategy", "lppo")
    kwargs = _cfg_get(node, "kwargs", {}) or {}
    return make_strategy(str(name), **{str(k): v for k, v in dict(kwargs).items()})


class LPPOSampler(Sampler[int]):
    """Lazy, stateful torch sampler whose batches come from a strategy.

    Args:
        data_source: the training dataset (verl `RLHFDataset`, or anything when `keys`
            is given); positions yielded index into it.
        data_config: verl's `config.data` (optional): gives the batch size
            (`gen_batch_size` or `train_batch_size`), `dataloader_num_workers` (must be 0)
            and, without `strategy`, the strategy from `data.lppo`.
        strategy: the strategy; built from `data_config` when None.
        batch_size: draw granularity; defaults to the dataloader batch size so every
            training batch is one `select` call.
        keys: sample key of each dataset row (default: `extra_info.index` of each row).
        reward_range: (low, high) of verl's sequence scores, mapped onto [0, 1].
        apply_keep: multiply estimator weights by `strategy.keep` (a Filter's decision).

    Raises:
        ValueError: no batch size, workers > 0 (they would prefetch indices before the
            strategy sees the rewards), duplicate keys, or an empty dataset.
    """

    def __init__(
        self,
        data_source: Any,
        data_config: Any = None,
        *,
        strategy: Strategy | None = None,
        batch_size: int | None = None,
        keys: Sequence[Any] | None = None,
        reward_range: tuple[float, float] = (0.0, 1.0),
        apply_keep: bool = True,
    ) -> None:
        workers = _cfg_get(data_config, "dataloader_num_workers", 0)
        if workers:
            raise ValueError(
                f"data.dataloader_num_workers={workers}: an adaptive sampler needs 0 workers "
                "(workers prefetch indices before the strategy has seen the last rewards)"
            )
        if batch_size is None:
            batch_size = _cfg_get(data_config, "gen_batch_size") or _cfg_get(
                data_config, "train_batch_size")
        if batch_size is None or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(
                f"batch_size must be an int >= 1 (or come from data.train_batch_size), "
                f"got {batch_size!r}"
            )
        unit_rewards([], reward_range, "reward_range")
        self.strategy = strategy if strategy is not None else _strategy_from_config(data_config)
        if not isinstance(self.strategy, Strategy):
            raise ValueError(
                "strategy must be an lppo_sampling Strategy, got "
                f"{type(self.strategy).__name__}")
        raw = dataset_keys(data_source) if keys is None else [_norm_key(k) for k in keys]
        if not raw:
            raise ValueError("the dataset is empty")
        self.positions: dict[int | str, int] = {}
        for pos, k in enumerate(raw):
            if k in self.positions:
                raise ValueError(f"duplicate sample key {k!r} (rows {self.positions[k]} and {pos})")
            self.positions[k] = pos
        self.batch_size = int(batch_size)
        self.reward_range = tuple(reward_range)
        self.apply_keep = bool(apply_keep)
        self.strategy.add_samples(np.asarray(raw, dtype=object) if isinstance(raw[0], str)
                                  else np.asarray(raw))
        self.epoch = 0
        self._pos = 0                      # indices yielded in this epoch
        self._pending: list[int] = []      # drawn positions not yet yielded
        self._observed_uids: set[str] = set()

    # ---------------------------------------------------------------- sampling
    def __len__(self) -> int:
        return max(1, len(self.positions) // self.batch_size) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        n = len(self)
        if self._pos >= n:  # the previous epoch was fully delivered (e.g. saved at its end)
            self._pos, self._pending = 0, []
            self.epoch += 1
        while self._pos < n:
            if not self._pending:
                keys = self.strategy.select(min(self.batch_size, n - self._pos))
                try:
                    self._pending = [self.positions[k] for k in keys.tolist()]
                except KeyError as e:
                    raise ValueError(
                        f"strategy selected key {e.args[0]!r}, which is not in the dataset"
                    ) from None
            p = self._pending.pop(0)
            self._pos += 1
            yield p
        self._pos = 0
        self.epoch += 1

    # ---------------------------------------------------------------- feedback
    def observe(self, keys: Sequence[Any], scores: Any, *, uids: Sequence[str] | None = None,
                lengths: Any = None, record: bool = False) -> None:
        """Feed per-response scores (one row per response) to the strategy.

        Args:
            keys: sample key of each response.
            scores: sequence score of each response (in `reward_range`).
            uids: verl group uids; responses whose uid an `lppo_*` estimator already
                observed are skipped.
            lengths: response lengths in tokens (optional).
            record: remember `uids` as observed (the estimator does; `update` does not).
        """
        k = np.asarray([_norm_key(x) for x in keys], dtype=object)
        s = np.asarray(scores.detach().float().cpu().numpy() if torch.is_tensor(scores) else scores,
                       dtype=np.float64).reshape(-1)
        if k.size != s.size:
            raise ValueError(f"{k.size} keys but {s.size} scores")
        if uids is not None:
            u = np.asarray([str(x) for x in uids])
            fresh = np.array([x not in self._observed_uids for x in u], bool)
            k, s = k[fresh], s[fresh]
            lengths = None if lengths is None else np.asarray(lengths)[fresh]
            if record:
                self._observed_uids = set(u.tolist())
        if k.size == 0:
            return
        if all(isinstance(x, int) for x in k):
            k = k.astype(np.int64)
        r = unit_rewards(s, self.reward_range, "LPPOSampler")
        lens = None if lengths is None else np.asarray(
            lengths.detach().cpu().numpy() if torch.is_tensor(lengths) else lengths, np.float64)
        self.strategy.observe(GroupResults.from_flat(k, r, lengths=lens))

    def update(self, batch: DataProto) -> None:
        """Observe a finished step: `token_level_scores` summed per response, keyed by index.

        Responses whose `uid` the `lppo_*` estimator already observed this step are
        skipped, so calling both never double counts.
        """
        if "token_level_scores" not in batch.batch.keys():
            raise ValueError("batch has no token_level_scores; call update after the reward step")
        ntb = batch.non_tensor_batch
        if "index" not in ntb:
            raise ValueError("batch has no non_tensor_batch['index'] (extra_info.index)")
        mask = batch.batch["response_mask"] if "response_mask" in batch.batch.keys() else None
        self.observe(ntb["index"], batch.batch["token_level_scores"].sum(-1),
                     uids=ntb.get("uid"), lengths=None if mask is None else mask.sum(-1))

    def advantage_factor(self, keys: Sequence[Any]) -> np.ndarray:
        """Per-response multiplier: `strategy.weights(keys)` (× `keep`, if enabled)."""
        k = np.asarray([_norm_key(x) for x in keys], dtype=object)
        if all(isinstance(x, int) for x in k):
            k = k.astype(np.int64)
        f = self.strategy.weights(k)
        if self.apply_keep:
            f = f * self.strategy.keep(k)
        return f

    def bind(self) -> LPPOSampler:
        """Make this the sampler that `lppo_*` estimators read (one per driver process)."""
        _ACTIVE[:] = [self]
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Strategy state (incl. RNG), epoch, in-epoch position and undelivered draws."""
        return {"strategy": self.strategy.state_dict(), "epoch": self.epoch, "pos": self._pos,
                "pending": list(self._pending), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`; a fresh `iter()` then continues the saved stream exactly."""
        try:
            if int(state["batch_size"]) != self.batch_size:
                raise ValueError(
                    f"sampler state has batch_size {state['batch_size']}, this sampler "
                    f"{self.batch_size}: resume with the same data.train_batch_size"
                )
            self.strategy.load_state_dict(state["strategy"])
            self.epoch, self._pos = int(state["epoch"]), int(state["pos"])
            self._pending = [int(p) for p in state["pending"]]
        except KeyError as e:
            raise ValueError(f"not an LPPOSampler state: missing {e}") from e


# --------------------------------------------------------------- uid tagging
def _encode_key(k: int | str) -> str:
    return f"i:{k}" if isinstance(k, int) else f"s:{k}"


def tag_uids(batch: DataProto) -> DataProto:
    """Append each row's sample key to its `uid`, in place (idempotent).

    verl's estimators see only `uid` (a fresh uuid per prompt and step), not the
    dataset id; appending the key keeps uids unique per group, so GRPO grouping is
    unchanged, while `keys_from_uids` can recover the key.
    """
    ntb = batch.non_tensor_batch
    if "uid" not in ntb or "index" not in ntb:
        raise ValueError("tag_uids needs non_tensor_batch['uid'] and ['index']")
    ntb["uid"] = np.array(
        [u if _UID_SEP in str(u) else f"{u}{_UID_SEP}{_encode_key(_norm_key(k))}"
         for u, k in zip(ntb["uid"], ntb["index"], strict=True)], dtype=object)
    return batch


def keys_from_uids(uids: Iterable[Any]) -> list[int | str]:
    """Sample keys encoded by `tag_uids`."""
    out: list[int | str] = []
    for u in uids:
        s = str(u)
        if _UID_SEP not in s:
            raise ValueError(
                f"uid {s!r} carries no sample key: lppo_* estimators need LPPORayPPOTrainer (or "
                "tag_uids(batch) right after verl assigns uids)"
            )
        code = s.rsplit(_UID_SEP, 1)[1]
        out.append(int(code[2:]) if code.startswith("i:") else code[2:])
    return out


# ---------------------------------------------------------------- estimators
def _active() -> LPPOSampler:
    if not _ACTIVE:
        raise ValueError(
            "no LPPOSampler is bound in this process: lppo_* estimators need LPPORayPPOTrainer "
            "(or sampler.bind()) in the process that runs fit()"
        )
    return _ACTIVE[0]


def register_weighted_estimator(name: str, base: str = "grpo", *, observe: bool = True) -> Any:
    """Register `name` in verl's estimator registry: `base` advantages × strategy weights.

    Args:
        name: registry name (use it as `algorithm.adv_estimator`).
        base: a registered verl estimator whose advantages are weighted.
        observe: also feed the step's rewards to the strategy first (so the weights
            use this batch's learning progress). Requires `use_kl_in_reward=False`,
            because the estimator sees `token_level_rewards`, not the raw scores.

    Returns:
        The registered function (registering the same name and base again returns it).
    """
    existing = core_algos.ADV_ESTIMATOR_REGISTRY.get(name)
    if existing is not None:
        if getattr(existing, "_lppo_spec", None) == (base, observe):
            return existing
        raise ValueError(f"estimator {name!r} is already registered to {existing}")
    base_fn = core_algos.get_adv_estimator_fn(base)

    def estimator(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                  index: np.ndarray | None = None, config: Any = None, **kwargs: Any
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        if index is None:
            raise ValueError(f"{name} needs per-response uids (verl passes them as index)")
        sampler = _active()
        keys = keys_from_uids(index)
        if observe:
            if _cfg_get(config, "use_kl_in_reward", False):
                raise ValueError(
                    f"{name} observes token_level_rewards, which include the KL penalty when "
                    "algorithm.use_kl_in_reward=True; use actor.use_kl_loss instead"
                )
            sampler.observe(keys, token_level_rewards.sum(-1), uids=index,
                            lengths=response_mask.sum(-1), record=True)
        if base == "grpo":
            adv, ret = base_fn(
                token_level_rewards=token_level_rewards, response_mask=response_mask, index=index,
                norm_adv_by_std_in_grpo=_cfg_get(config, "norm_adv_by_std_in_grpo", True),
                config=config)
        else:
            adv, ret = base_fn(token_level_rewards=token_level_rewards, response_mask=response_mask,
                               index=index, config=config, **kwargs)
        factor = torch.as_tensor(sampler.advantage_factor(keys), dtype=adv.dtype, device=adv.device)
        return adv * factor.unsqueeze(-1), ret

    estimator.__name__ = f"compute_{name}_advantage"
    estimator.__doc__ = f"verl {base!r} advantages times lppo_sampling strategy weights."
    estimator._lppo_spec = (base, observe)  # type: ignore[attr-defined]
    return core_algos.register_adv_est(name)(estimator)


compute_lppo_grpo_advantage = register_weighted_estimator("lppo_grpo", "grpo")
compute_lppo_rloo_advantage = register_weighted_estimator("lppo_rloo", "rloo")

# ------------------------------------------------------------------ trainer
from verl.trainer.ppo.ray_trainer import RayPPOTrainer  # noqa: E402

for _hook in ("_get_gen_batch", "_update_actor"):
    if not hasattr(RayPPOTrainer, _hook):
        raise ImportError(
            f"verl {VERL_VERSION}: RayPPOTrainer has no {_hook}; tested with verl 0.9.1")


class LPPORayPPOTrainer(RayPPOTrainer):
    """`RayPPOTrainer` that samples from an `LPPOSampler` and feeds its rewards back.

    Args:
        *args: passed to `RayPPOTrainer`.
        train_sampler: an `LPPOSampler` (required).
        **kwargs: passed to `RayPPOTrainer`.
    """

    def __init__(self, *args: Any, train_sampler: LPPOSampler | None = None, **kwargs: Any) -> None:
        if not isinstance(train_sampler, LPPOSampler):
            raise ValueError(
                "LPPORayPPOTrainer needs train_sampler=LPPOSampler(...), got "
                f"{type(train_sampler).__name__}"
            )
        self.lppo_sampler = train_sampler.bind()
        super().__init__(*args, train_sampler=train_sampler, **kwargs)

    def _get_gen_batch(self, batch: DataProto) -> DataProto:
        """Tag the fresh uids with sample keys before verl splits off the generation batch."""
        tag_uids(batch)
        return super()._get_gen_batch(batch)

    def _update_actor(self, batch: DataProto) -> Any:
        """Observe the step (unless an lppo_* estimator already did) before the actor update."""
        self.lppo_sampler.update(batch)
        return super()._update_actor(batch)


# ---------------------------------------------------- config-only installation
def install() -> None:
    """Make verl's legacy `TaskRunner` build `LPPOSampler` and `LPPORayPPOTrainer`.

    `verl.trainer.main_ppo_v0.TaskRunner.run` looks up `create_rl_sampler` and
    `RayPPOTrainer` as module globals at call time, in its own Ray process, after it
    has built the datasets; `LPPODataset` calls this from its constructor, so the
    replacement happens in exactly that process and only when a user opted in.
    """
    import verl.trainer.main_ppo_v0 as v0

    if getattr(v0.create_rl_sampler, "_lppo", False):
        return

    def create_lppo_sampler(data_config: Any, dataset: Any) -> LPPOSampler:
        return LPPOSampler(dataset, data_config)

    create_lppo_sampler._lppo = True  # type: ignore[attr-defined]
    v0.create_rl_sampler = create_lppo_sampler
    v0.RayPPOTrainer = LPPORayPPOTrainer


from verl.utils.dataset.rl_dataset import RLHFDataset  # noqa: E402


class LPPODataset(RLHFDataset):
    """verl's `RLHFDataset`; constructing it installs the LPPO sampler and trainer hooks.

    Use with `data.custom_cls.path=pkg://lppo_sampling.integrations.verl
    data.custom_cls.name=LPPODataset` (see docs/integrations.md).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        install()


if HAS_CURRICULUM_SAMPLER:

    class LPPOCurriculumSampler(AbstractCurriculumSampler, LPPOSampler):  # type: ignore[misc,valid-type]
        """verl <= 0.7 curriculum hook around `LPPOSampler`.

        Config: `data.sampler.class_path=pkg://lppo_sampling.integrations.verl`,
        `data.sampler.class_name=LPPOCurriculumSampler`; verl calls `update` each step.
        """

        def __init__(self, data_source: Any, data_config: Any) -> None:
            LPPOSampler.__init__(self, data_source, data_config)

        def __iter__(self) -> Iterator[int]:
            return LPPOSampler.__iter__(self)

        def __len__(self) -> int:
            return LPPOSampler.__len__(self)

        def update(self, batch: DataProto) -> None:
            """Called by verl's trainer at the end of every step."""
            LPPOSampler.update(self, batch)
else:
    LPPOCurriculumSampler = None  # verl >= 0.8: use LPPODataset / LPPORayPPOTrainer


# ------------------------------------------------------------------- parquet
def to_verl_parquet(problems: Iterable[Any], path: str | Path, *, data_source: str = "lppo",
                    ability: str = "math", split: str = "train",
                    instruction: str = "") -> Path:
    """Write problems in verl's RL parquet layout with a stable `extra_info.index`.

    Each problem is an `lppo_env.MathProblem` or a mapping with `id`, `question`,
    `answer` and optionally `solution`. Columns: `data_source`, `prompt` (one user
    message: question + `instruction`), `ability`, `reward_model` ({style: rule,
    ground_truth}), `extra_info` ({split, index, sample_id, question, solution}). The
    index is the row's ordinal, so keys are unique; `sample_id` keeps the original id.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i, p in enumerate(problems):
        get = p.get if isinstance(p, Mapping) else lambda n, d=None, _p=p: getattr(_p, n, d)
        pid, question, answer = get("id"), get("question"), get("answer")
        for field, v in (("id", pid), ("question", question), ("answer", answer)):
            if v is None or not str(v).strip():
                raise ValueError(f"problem {i} has no {field}")
        rows.append({
            "data_source": data_source,
            "prompt": [{"role": "user", "content": str(question) + instruction}],
            "ability": ability,
            "reward_model": {"style": "rule", "ground_truth": str(answer)},
            "extra_info": {"split": split, "index": i, "sample_id": str(pid),
                           "question": str(question), "solution": get("solution") or ""},
        })
    if not rows:
        raise ValueError("no problems to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
