"""verl adapter: strategy-driven sampling, prefix guidance, weights and reward feedback.

Covered: verl 0.9.1, legacy trainer (`trainer.use_v1=False`, `main_ppo_v0` /
`RayPPOTrainer`): selection, prefix guidance, weights, feedback. verl 0.9's default V1
trainer (`trainer.use_v1=True`, sync mode): selection, weights and feedback, through its
`create_rl_sampler` global, `verl_v1.LPPOAgentLoopManager` (uid → key) and the `lppo_grpo`
estimator; prefix guidance and the rest V1 cannot do are refused at start-up (`verl_v1`).
Under both, strategies whose plans carry per-rollout env options (`RolloutPlan.options`:
length_curriculum's token budget and composite reward, cog_drift's format, clpo's
restructured question) are refused when the sampler is built: verl's rollout and
scorers would not apply them, so the run would silently train something else.

Config-only wiring: `data.custom_cls` = `LPPODataset`, whose construction (in verl's
TaskRunner process, after `main` has parsed the config) installs two replacements in
`verl.trainer.main_ppo_v0`: `create_rl_sampler` builds an `LPPOSampler` and
`RayPPOTrainer` is `LPPORayPPOTrainer`. Settings live under `data.lppo`:
`strategy`, `kwargs`, `reward_range`, `prefix_fn.{path,name}`.

* `LPPOSampler` — a lazy torch `Sampler[int]` whose batches come from
  `strategy.select`; torchdata-`Stateful` (strategy state incl. RNG, epoch, in-epoch
  position, undelivered rest of the batch), so verl's `data.pt` resumes the stream.
* `LPPORayPPOTrainer` — tags each prompt's `uid` with its sample key (`tag_uids`,
  in `_get_gen_batch`, the one place where verl still has `index`): the tagged uid is
  the one key verl carries through every path (rule reward or reward model, any
  balancing); writes each (sample, slot)'s expert prefix into the generation batch
  (`lppo_prefix`, run by `LPPOPrefixAgentLoop`); observes every step's rewards and
  multiplies the advantages by `strategy.weights × strategy.keep` in `_update_actor`
  (the last driver-side method before the update that sees each response's key,
  reward and guided flag); and saves/restores the sampler next to verl's own
  checkpoint (`lppo_sampler.pt`), because verl skips `data.pt` at epoch boundaries.
* `lppo_grpo` / `lppo_rloo` — registered estimators (base advantages × weights) for the
  V1 trainer and trainers driven by hand; `LPPORayPPOTrainer` refuses them (it weights
  itself).
* `to_verl_parquet(problems, path)` — verl's RL parquet layout with a stable
  `extra_info.index` and a `data_source` verl's default scorer accepts.

Tested with verl 0.9.1 (torch 2.13 CPU, tensordict 0.10, torchdata 0.11).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lppo_sampling.batch import GroupResults
from lppo_sampling.integrations._common import (
    check_plan_options,
    check_pool,
    refuse_plan_options,
    require,
    unit_rewards,
)
from lppo_sampling.roles import NoGuide
from lppo_sampling.strategy import Strategy, make_strategy

VERL_VERSION = require("verl", "0.9", below="0.10", purpose="the verl sampler and trainer hooks")

import torch  # noqa: E402
from torch.utils.data import Sampler  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

from lppo_sampling.integrations.verl_agent_loop import AGENT_NAME, PREFIX_COLUMN  # noqa: E402

__all__ = [
    "LPPOSampler",
    "LPPORayPPOTrainer",
    "LPPODataset",
    "register_weighted_estimator",
    "tag_uids",
    "keys_from_uids",
    "batch_keys",
    "dataset_keys",
    "install",
    "to_verl_parquet",
    "VERL_VERSION",
]

_UID_SEP = "|lppo|"
VERL_OPTIONS: frozenset[str] = frozenset()  # per-rollout plan options this adapter applies
_ACTIVE: list[LPPOSampler] = []  # the sampler the estimators use (one per driver process)
PREFIX_FIELD = "prefix"  # the agent loop's extra field: the prefix a rollout really started from


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


def _key_array(keys: Sequence[Any]) -> np.ndarray:
    k = [_norm_key(x) for x in keys]
    if all(isinstance(x, int) for x in k):
        return np.asarray(k, dtype=np.int64)
    return np.asarray(k, dtype=object)


def dataset_keys(data_source: Any) -> list[int | str]:
    """Stable keys of a verl `RLHFDataset`, in row order: its rows' `extra_info.index`.

    verl keys a row by `extra_info["index"]` (0 when missing), not by the position the
    sampler yielded (rows may have been filtered), so the key → position map is built
    here, once, and a missing index is refused at start-up.

    Raises:
        ValueError: the dataset has no `dataframe`, or a row lacks `extra_info.index`.
    """
    df = getattr(data_source, "dataframe", None)
    if df is None:
        raise ValueError(
            f"{type(data_source).__name__} has no .dataframe; pass keys= explicitly or use verl's "
            "RLHFDataset"
        )
    if "extra_info" not in df.column_names:
        raise ValueError(
            "data.train_files: the dataset has no extra_info column, so its rows have no stable "
            "key; write extra_info.index per row (lppo_sampling.integrations.verl.to_verl_parquet)"
        )
    keys = []
    for pos, info in enumerate(df["extra_info"]):
        if not isinstance(info, Mapping) or info.get("index") is None:
            raise ValueError(
                f"data.train_files: row {pos} has no extra_info.index; verl would key it as 0, so "
                "write a unique extra_info.index per row (see to_verl_parquet)"
            )
        keys.append(_norm_key(info["index"]))
    return keys


def _has_solution(data_source: Any) -> np.ndarray | None:
    """Rows with a non-empty `extra_info.solution` (only those can be guided)."""
    df = getattr(data_source, "dataframe", None)
    if df is None or "extra_info" not in df.column_names:
        return None
    return np.array([isinstance(i, Mapping) and bool(str(i.get("solution") or "").strip())
                     for i in df["extra_info"]], dtype=bool)


def _cfg_get(cfg: Any, name: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if hasattr(cfg, "get"):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def _lppo_node(data_config: Any) -> Any:
    node = _cfg_get(data_config, "lppo")
    if node is None:
        raise ValueError(
            "no strategy given: set +data.lppo.strategy=<name> (+data.lppo.kwargs.<arg>=... for "
            "its arguments) or pass strategy="
        )
    return node


def _strategy_from_config(data_config: Any) -> Strategy:
    """`data.lppo`: {strategy: name, kwargs: {...}}; errors name the setting."""
    node = _lppo_node(data_config)
    name = _cfg_get(node, "strategy", "lppo")
    kwargs = _cfg_get(node, "kwargs", {}) or {}
    try:
        return make_strategy(str(name), **{str(k): v for k, v in dict(kwargs).items()})
    except ValueError as e:
        raise ValueError(f"data.lppo.strategy / data.lppo.kwargs: {e}") from None


def _reward_range_from_config(data_config: Any) -> tuple[float, float] | None:
    node = _cfg_get(data_config, "lppo")
    rr = _cfg_get(node, "reward_range")
    if rr is None:
        return None
    try:
        lo, hi = (float(x) for x in rr)
    except (TypeError, ValueError):
        raise ValueError(
            f"data.lppo.reward_range must be [low, high], got {rr!r}") from None
    if not hi > lo:
        raise ValueError(f"data.lppo.reward_range must be [low, high] with high > low, got {rr!r}")
    return lo, hi


def _prefix_fn_from_config(data_config: Any) -> Any:
    node = _cfg_get(_cfg_get(data_config, "lppo"), "prefix_fn")
    path, name = _cfg_get(node, "path"), _cfg_get(node, "name")
    if not path:
        return None
    from verl.utils.import_utils import load_extern_object

    try:
        fn = load_extern_object(str(path), str(name or "expert_prefix"))
    except (ImportError, AttributeError, FileNotFoundError) as e:
        raise ValueError(f"data.lppo.prefix_fn.path={path} name={name}: {e}") from None
    if not callable(fn):
        raise ValueError(f"data.lppo.prefix_fn: {path}:{name} is not callable")
    return fn


class LPPOSampler(Sampler[int]):
    """Lazy, stateful torch sampler whose batches come from a strategy.

    Args:
        data_source: the training dataset (verl `RLHFDataset`, or anything when `keys`
            is given); positions yielded index into it.
        data_config: verl's `config.data` (optional): batch size (`gen_batch_size` or
            `train_batch_size`), `dataloader_num_workers` (must be 0) and `data.lppo`
            (strategy, kwargs, reward_range, prefix_fn) for whatever is not passed here.
        strategy: the strategy; built from `data.lppo` when None.
        batch_size: draw granularity; defaults to the dataloader batch size so every
            training batch is one `select` call.
        keys: sample key of each dataset row (default: `extra_info.index` of each row).
        reward_range: (low, high) of verl's sequence scores, mapped onto [0, 1]
            (default `data.lppo.reward_range`, else (0, 1)).
        prefix_fn: `f(row, ratio) -> str`, the expert prefix for a planned ratio, where
            `row` holds the generation batch's columns for that prompt (`extra_info`,
            `reward_model`, ...). Required when the strategy guides.
        apply_keep: multiply advantage weights by `strategy.keep` (a Filter's decision).

    Raises:
        ValueError: no batch size, workers > 0 (they would prefetch indices before the
            strategy sees the rewards), duplicate keys, an empty dataset, a guiding
            strategy without `prefix_fn`, a strategy whose plans carry per-rollout
            options (`RolloutPlan.options`: length_curriculum, cog_drift, clpo; verl's
            rollout is not told them) or a pool a role refuses (h1 needs depth
            labels) — each naming the setting.
    """

    def __init__(
        self,
        data_source: Any,
        data_config: Any = None,
        *,
        strategy: Strategy | None = None,
        batch_size: int | None = None,
        keys: Sequence[Any] | None = None,
        reward_range: tuple[float, float] | None = None,
        prefix_fn: Any = None,
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
        if reward_range is None:
            reward_range = _reward_range_from_config(data_config) or (0.0, 1.0)
        unit_rewards([], reward_range, "reward_range")
        self.strategy = strategy if strategy is not None else _strategy_from_config(data_config)
        if not isinstance(self.strategy, Strategy):
            raise ValueError(
                "strategy must be an lppo_sampling Strategy, got "
                f"{type(self.strategy).__name__}")
        refuse_plan_options(self.strategy, "data.lppo.strategy", "verl's LPPOSampler",
                            VERL_OPTIONS)
        self.prefix_fn = prefix_fn if prefix_fn is not None else _prefix_fn_from_config(data_config)
        if self.guides and self.prefix_fn is None:
            raise ValueError(
                f"strategy {self.strategy.name!r} guides rollouts with expert prefixes: set "
                "data.lppo.prefix_fn.path/name (e.g. examples/verl/lppo_prefix.py, expert_prefix) "
                "or pick a strategy without guidance (lp_weighting, uniform, ...)"
            )
        raw = dataset_keys(data_source) if keys is None else [_norm_key(k) for k in keys]
        if not raw:
            raise ValueError("data.train_files: the dataset is empty")
        self.positions: dict[int | str, int] = {}
        for pos, k in enumerate(raw):
            if k in self.positions:
                raise ValueError(
                    f"data.train_files: duplicate sample key extra_info.index={k!r} (rows "
                    f"{self.positions[k]} and {pos}); keys must be unique")
            self.positions[k] = pos
        self.batch_size = int(batch_size)
        self.reward_range = tuple(float(x) for x in reward_range)
        self.apply_keep = bool(apply_keep)
        solution = _has_solution(data_source) if keys is None else None
        self.strategy.add_samples(_key_array(raw), has_solution=solution)
        check_pool(self.strategy, "data.lppo.strategy")
        self.epoch = 0
        self._pos = 0                      # indices yielded in this epoch
        self._pending: list[int] = []      # drawn positions not yet yielded
        self._observed_uids: set[str] = set()
        self._uid_keys: dict[str, int | str] = {}  # V1: prompt uid -> sample key (untagged uids)
        self.v1_ready: bool | None = None  # V1: None = legacy; False until the V1 checks passed
        df = getattr(data_source, "dataframe", None)
        self.data_sources = (sorted(set(map(str, df["data_source"])))
                             if df is not None and "data_source" in df.column_names else [])

    @property
    def guides(self) -> bool:
        """Whether the strategy's plans can contain guided slots."""
        return not isinstance(self.strategy.guide, NoGuide)

    # ---------------------------------------------------------------- sampling
    def __len__(self) -> int:
        return max(1, len(self.positions) // self.batch_size) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        if self.v1_ready is False:
            from lppo_sampling.integrations.verl_v1 import MANAGER_FQN

            raise ValueError(
                "trainer.use_v1=True: LPPO needs its agent loop manager to see each prompt's "
                f"sample key: set actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                f"{MANAGER_FQN} (or trainer.use_v1=False)")
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

    # -------------------------------------------------------------- guidance
    def attach_prefixes(self, gen_batch: DataProto) -> np.ndarray:
        """Write each (sample, slot)'s expert prefix into `gen_batch` (in place).

        `gen_batch` is verl's generation batch after `repeat(rollout.n, interleave=True)`:
        one row per rollout, rows of a prompt sharing its tagged `uid`. The k-th row of
        a uid is slot k of `strategy.plan(keys)`; its prefix goes to the `lppo_prefix`
        column and its `agent_name` becomes `LPPOPrefixAgentLoop`'s.

        Returns:
            (rows,) the planned prefix ratio of each row (0 = unguided).
        """
        ntb = gen_batch.non_tensor_batch
        if "uid" not in ntb:
            raise ValueError("the generation batch has no uid column")
        uids = [str(u) for u in ntb["uid"]]
        order: dict[str, int] = {}
        group = np.fromiter((order.setdefault(u, len(order)) for u in uids), np.int64, len(uids))
        counts = np.bincount(group, minlength=len(order))
        g = self.strategy.group_size
        if (counts != g).any():
            raise ValueError(
                f"actor_rollout_ref.rollout.n gives {int(counts.max())} rollouts per prompt, but "
                f"the strategy plans group_size={g}: set data.lppo.kwargs.group_size to rollout.n"
            )
        first = {}
        for i, u in enumerate(uids):
            first.setdefault(u, i)
        plan = self.strategy.plan(_key_array(keys_from_uids([uids[first[u]] for u in order])))
        check_plan_options(plan, VERL_OPTIONS, "verl's LPPOSampler")
        slot = np.zeros(len(uids), np.int64)
        seen = np.zeros(len(order), np.int64)
        for i, gi in enumerate(group):
            slot[i], seen[gi] = seen[gi], seen[gi] + 1
        ratios = plan.prefix_ratios[group, slot]
        texts = np.empty(len(uids), dtype=object)
        texts[:] = ""
        if (ratios > 0).any():
            if self.prefix_fn is None:
                raise ValueError("the strategy guided a rollout but no prefix_fn is set "
                                 "(data.lppo.prefix_fn)")
            for i in np.flatnonzero(ratios > 0):
                row = {k: v[i] for k, v in ntb.items()}
                text = self.prefix_fn(row, float(ratios[i]))
                if not isinstance(text, str):
                    raise ValueError(f"data.lppo.prefix_fn returned {type(text).__name__}, "
                                     "expected the prefix text (str)")
                texts[i] = text
        names = ntb.get("agent_name")
        if names is not None:
            other = [str(n) for n, t in zip(names, texts, strict=True) if t and n != AGENT_NAME]
            if other:
                raise ValueError(
                    f"a guided row asks for agent loop {other[0]!r}; expert prefixes need "
                    f"{AGENT_NAME!r} (drop the dataset's agent_name column or use unguided "
                    "strategies)")
        else:
            ntb["agent_name"] = np.array([AGENT_NAME] * len(uids), dtype=object)
        ntb[PREFIX_COLUMN] = texts
        return ratios

    # ---------------------------------------------------------------- feedback
    def observe(self, keys: Sequence[Any], scores: Any, *, uids: Sequence[str] | None = None,
                guided: Any = None, lengths: Any = None, record: bool = False) -> None:
        """Feed per-response scores (one row per response) to the strategy.

        Args:
            keys: sample key of each response.
            scores: sequence score of each response (in `reward_range`).
            uids: verl group uids; responses whose uid an `lppo_*` estimator already
                observed are skipped.
            guided: (rows,) bool, responses that started from an expert prefix.
            lengths: response lengths in tokens (optional).
            record: remember `uids` as observed (the estimator does; `update` does not).
        """
        k = _key_array(keys)
        s = np.asarray(scores.detach().float().cpu().numpy() if torch.is_tensor(scores) else scores,
                       dtype=np.float64).reshape(-1)
        if k.size != s.size:
            raise ValueError(f"{k.size} keys but {s.size} scores")
        gd = None if guided is None else np.asarray(guided, dtype=bool).reshape(-1)
        lens = None if lengths is None else np.asarray(
            lengths.detach().cpu().numpy() if torch.is_tensor(lengths) else lengths, np.float64)
        if uids is not None:
            u = np.asarray([str(x) for x in uids])
            fresh = np.array([x not in self._observed_uids for x in u], bool)
            k, s = k[fresh], s[fresh]
            gd = None if gd is None else gd[fresh]
            lens = None if lens is None else lens[fresh]
            if record:
                self._observed_uids = set(u.tolist())
        if k.size == 0:
            return
        try:
            r = unit_rewards(s, self.reward_range, "LPPOSampler")
        except ValueError as e:
            raise ValueError(
                f"{e}. For verl: set data.lppo.reward_range=[low,high] to your reward function's "
                "range (e.g. [-1,1] for verl's math_dapo scorer)") from None
        self.strategy.observe(GroupResults.from_flat(k, r, guided=gd, lengths=lens))

    def update(self, batch: DataProto) -> None:
        """Observe a finished step: `token_level_scores` summed per response.

        Keys come from `batch_keys` (the tagged uid first: verl keeps it on every path);
        a response is guided when the agent loop reported a non-empty `prefix`.
        Responses whose `uid` an `lppo_*` estimator already observed are skipped.
        """
        if "token_level_scores" not in batch.batch.keys():
            raise ValueError("batch has no token_level_scores; call update after the reward step")
        ntb = batch.non_tensor_batch
        mask = batch.batch["response_mask"] if "response_mask" in batch.batch.keys() else None
        self.observe(batch_keys(batch), batch.batch["token_level_scores"].sum(-1),
                     uids=ntb.get("uid"), guided=guided_rows(batch),
                     lengths=None if mask is None else mask.sum(-1))

    def advantage_factor(self, keys: Sequence[Any]) -> np.ndarray:
        """Per-response multiplier: `strategy.weights(keys)` (× `keep`, if enabled)."""
        k = _key_array(keys)
        f = self.strategy.weights(k)
        if self.apply_keep:
            f = f * self.strategy.keep(k)
        return f

    def remember_uids(self, uids: Sequence[Any], keys: Sequence[Any]) -> None:
        """Record which sample each (untagged) prompt uid stands for (V1 trainer)."""
        if len(uids) != len(keys):
            raise ValueError(f"{len(uids)} uids but {len(keys)} sample keys")
        for u, k in zip(uids, keys, strict=True):
            k = _norm_key(k)
            if k not in self.positions:
                raise ValueError(f"prompt uid {u!r} has sample key {k!r}, not in the dataset")
            self._uid_keys[str(u)] = k

    def keys_for_uids(self, uids: Sequence[Any]) -> list[int | str]:
        """Sample key per response: decoded from a tagged uid, else the recorded uid map."""
        us = [str(u) for u in uids]
        if all(_UID_SEP in u for u in us):
            return keys_from_uids(us)
        missing = [u for u in us if _UID_SEP not in u and u not in self._uid_keys]
        if missing:
            raise ValueError(
                f"uid {missing[0]!r} carries no sample key and was not recorded by LPPO's agent "
                "loop manager: under trainer.use_v1=True set actor_rollout_ref.rollout.agent."
                "agent_loop_manager_class=lppo_sampling.integrations.verl_v1.LPPOAgentLoopManager")
        return [keys_from_uids([u])[0] if _UID_SEP in u else self._uid_keys[u] for u in us]

    def padding_rows(self, uids: Sequence[Any]) -> np.ndarray:
        """(rows,) bool: V1's synthetic padding rows (`pad<hex>` uids, never drawn, no key).

        V1's `_balance_batch` appends them (zero reward, empty response mask) to make the
        batch divisible; they copy a real row's `index`, so they must not be observed.
        """
        return np.array([str(u).startswith("pad") and _UID_SEP not in str(u)
                         and str(u) not in self._uid_keys for u in uids], dtype=bool)

    def forget_uids(self, uids: Iterable[Any]) -> None:
        """Drop recorded uids once their step has been observed."""
        for u in uids:
            self._uid_keys.pop(str(u), None)

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
        """Restore `state_dict`; a fresh `iter()` then continues the saved stream exactly.

        Raises:
            ValueError: the state is not an `LPPOSampler` state, or was saved with another
                batch size or another strategy (naming the setting to change).
        """
        if not isinstance(state, Mapping) or "strategy" not in state:
            raise ValueError("the checkpoint holds no LPPOSampler state (was it written by an LPPO "
                             "run?); set trainer.resume_mode=disable to start fresh")
        try:
            if int(state["batch_size"]) != self.batch_size:
                raise ValueError(
                    f"sampler state has batch_size {state['batch_size']}, this sampler "
                    f"{self.batch_size}: resume with the same data.train_batch_size"
                )
            try:
                self.strategy.load_state_dict(state["strategy"])
            except ValueError as e:
                raise ValueError(f"the checkpoint's sampler state does not fit data.lppo.strategy/"
                                 f"kwargs: {e}") from None
            self.epoch, self._pos = int(state["epoch"]), int(state["pos"])
            self._pending = [int(p) for p in state["pending"]]
        except KeyError as e:
            raise ValueError(f"not an LPPOSampler state: missing {e}") from None


# --------------------------------------------------------------- uid tagging
def _encode_key(k: int | str) -> str:
    return f"i:{k}" if isinstance(k, int) else f"s:{k}"


def tag_uids(batch: DataProto, *, strict: bool = True) -> DataProto:
    """Append each row's sample key to its `uid`, in place (idempotent).

    verl gives each prompt a fresh uuid per step and keeps `uid` on every path (the
    generation batch, the reward step, the update), while `index` is moved into the
    generation batch and comes back only on some paths. Appending the key keeps uids
    unique per group, so GRPO grouping is unchanged, and `keys_from_uids` recovers it.
    With `strict=False` a batch whose rows carry no key (validation data) is left as is.
    """
    ntb = batch.non_tensor_batch
    if "uid" not in ntb:
        raise ValueError("tag_uids needs non_tensor_batch['uid']")
    try:
        keys = _row_index(ntb)
    except ValueError:
        if strict:
            raise
        return batch
    ntb["uid"] = np.array(
        [u if _UID_SEP in str(u) else f"{u}{_UID_SEP}{_encode_key(_norm_key(k))}"
         for u, k in zip(ntb["uid"], keys, strict=True)], dtype=object)
    return batch


def _row_index(ntb: Mapping[str, np.ndarray]) -> Sequence[Any]:
    """Per-row `extra_info.index` (or verl's `index` column, which is the same value)."""
    if "extra_info" in ntb:
        infos = ntb["extra_info"]
        if all(isinstance(i, Mapping) and i.get("index") is not None for i in infos):
            return [i["index"] for i in infos]
    if "index" in ntb:
        return list(ntb["index"])
    raise ValueError("batch rows carry no sample key: no extra_info.index and no index column "
                     "(write extra_info.index per row, see to_verl_parquet)")


def keys_from_uids(uids: Iterable[Any]) -> list[int | str]:
    """Sample keys encoded by `tag_uids`."""
    out: list[int | str] = []
    for u in uids:
        s = str(u)
        if _UID_SEP not in s:
            raise ValueError(
                f"uid {s!r} carries no sample key: lppo needs LPPORayPPOTrainer (or "
                "tag_uids(batch) right after verl assigns uids)"
            )
        code = s.rsplit(_UID_SEP, 1)[1]
        out.append(int(code[2:]) if code.startswith("i:") else code[2:])
    return out


def batch_keys(batch: DataProto) -> list[int | str]:
    """Sample key of every row: from the tagged `uid`, else `extra_info.index` / `index`."""
    ntb = batch.non_tensor_batch
    uids = ntb.get("uid")
    if uids is not None and len(uids) and all(_UID_SEP in str(u) for u in uids):
        return keys_from_uids(uids)
    return [_norm_key(k) for k in _row_index(ntb)]


def guided_rows(batch: DataProto) -> np.ndarray:
    """(rows,) bool: the agent loop reported a non-empty expert prefix for the row."""
    col = batch.non_tensor_batch.get(PREFIX_FIELD)
    if col is None:
        return np.zeros(len(batch), dtype=bool)
    return np.array([isinstance(p, str) and bool(p) for p in col], dtype=bool)


# ---------------------------------------------------------------- estimators
def _active() -> LPPOSampler:
    if not _ACTIVE:
        raise ValueError(
            "no LPPOSampler is bound in this process: lppo_* estimators need sampler.bind() in "
            "the process that computes advantages"
        )
    return _ACTIVE[0]


def register_weighted_estimator(name: str, base: str = "grpo", *, observe: bool = True) -> Any:
    """Register `name` in verl's estimator registry: `base` advantages × strategy weights.

    For trainers driven by hand (the estimator sees only uids, so rows must carry
    tagged uids and no guided rollouts: it cannot tell them apart).
    `LPPORayPPOTrainer` does not need it and refuses it.

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
        uids = np.asarray([str(u) for u in index], dtype=object)
        real = ~sampler.padding_rows(uids)
        keys = sampler.keys_for_uids(uids[real])
        _, counts = np.unique(uids[real].astype(str), return_counts=True)
        if (counts > sampler.strategy.group_size).any():  # fewer: failed sessions, observed as is
            raise ValueError(
                f"{name}: a prompt uid has {int(counts.max())} responses, the strategy plans "
                f"group_size={sampler.strategy.group_size} (rollout.n); agent loops with several "
                "outputs per session are not supported")
        if observe:
            if _cfg_get(config, "use_kl_in_reward", False):
                raise ValueError(
                    f"{name} observes token_level_rewards, which include the KL penalty when "
                    "algorithm.use_kl_in_reward=True; use actor.use_kl_loss instead"
                )
            if sampler.v1_ready and sampler.guides:  # V1: guided flags are per session, in TQ
                from lppo_sampling.integrations.verl_v1 import observe_sessions

                observe_sessions(sampler, sorted(set(uids[real].tolist())))
            else:
                real_t = torch.as_tensor(real, device=token_level_rewards.device)
                sampler.observe(keys, token_level_rewards.sum(-1)[real_t], uids=uids[real],
                                lengths=response_mask.sum(-1)[real_t], record=True)
        if base == "grpo":
            adv, ret = base_fn(
                token_level_rewards=token_level_rewards, response_mask=response_mask, index=index,
                norm_adv_by_std_in_grpo=_cfg_get(config, "norm_adv_by_std_in_grpo", True),
                config=config)
        else:
            adv, ret = base_fn(token_level_rewards=token_level_rewards, response_mask=response_mask,
                               index=index, config=config, **kwargs)
        w = np.ones(len(uids))
        w[real] = sampler.advantage_factor(keys)
        factor = torch.as_tensor(w, dtype=adv.dtype, device=adv.device)
        sampler.forget_uids(set(uids[real].tolist()))
        return adv * factor.unsqueeze(-1), ret

    estimator.__name__ = f"compute_{name}_advantage"
    estimator.__doc__ = f"verl {base!r} advantages times lppo_sampling strategy weights."
    estimator._lppo_spec = (base, observe)  # type: ignore[attr-defined]
    return core_algos.register_adv_est(name)(estimator)


compute_lppo_grpo_advantage = register_weighted_estimator("lppo_grpo", "grpo")
compute_lppo_rloo_advantage = register_weighted_estimator("lppo_rloo", "rloo")

# ------------------------------------------------------------------ trainer
from verl.trainer.ppo.ray_trainer import RayPPOTrainer  # noqa: E402

for _hook in ("_get_gen_batch", "_update_actor", "init_workers", "_save_checkpoint",
              "_load_checkpoint"):
    if not hasattr(RayPPOTrainer, _hook):
        raise ImportError(
            f"verl {VERL_VERSION}: RayPPOTrainer has no {_hook}; tested with verl 0.9.1")

SAMPLER_FILE = "lppo_sampler.pt"

# data_source values verl's default scorer (verl.utils.reward_score.default_compute_score)
# accepts, with the range of its scores; anything else needs reward.custom_reward_function.
_DEFAULT_SCORER_RANGES: dict[str, tuple[float, float]] = {
    "openai/gsm8k": (0.0, 1.0),
    "lighteval/MATH": (0.0, 1.0),
    "DigitalLearningGmbH/MATH-lighteval": (0.0, 1.0),
    "HuggingFaceH4/MATH-500": (0.0, 1.0),
    "math_dapo": (-1.0, 1.0),
    "math": (-1.0, 1.0),
    "math_dapo_reasoning": (-1.0, 1.0),
}


def _default_scorer_range(data_source: str) -> tuple[float, float] | None:
    if data_source in _DEFAULT_SCORER_RANGES:
        return _DEFAULT_SCORER_RANGES[data_source]
    if data_source.startswith("aime"):
        return (-1.0, 1.0)
    return None


def check_scorer(cfg: Any, sampler: LPPOSampler) -> None:
    """Check verl's default scorer fits the data before a step runs (errors name the setting).

    Without a custom reward function or reward model, the scorer must accept every
    `data_source` and score inside `data.lppo.reward_range`.
    """
    reward = _cfg_get(cfg, "reward")
    custom = _cfg_get(_cfg_get(reward, "custom_reward_function"), "path")
    if custom or _cfg_get(_cfg_get(reward, "reward_model"), "enable", False):
        return  # the scorer is the user's function or a reward model: range unknown here
    lo, hi = sampler.reward_range
    for src in sampler.data_sources:
        rng = _default_scorer_range(src)
        if rng is None:
            raise ValueError(
                f"data_source {src!r} has no scorer in verl's default reward function: set "
                "reward.custom_reward_function.path=pkg://lppo_env.verify "
                "reward.custom_reward_function.name=compute_score")
        if rng[0] < lo or rng[1] > hi:
            raise ValueError(
                f"data_source {src!r} is scored in [{rng[0]:g}, {rng[1]:g}] by verl's default "
                f"scorer, outside data.lppo.reward_range=[{lo:g}, {hi:g}]: set "
                f"+data.lppo.reward_range=[{rng[0]:g},{rng[1]:g}]")


class _GuidedRollout:
    """verl's rollout manager, with each training batch's prefixes planned first."""

    def __init__(self, inner: Any, sampler: LPPOSampler) -> None:
        self.inner, self.sampler = inner, sampler

    def generate_sequences(self, batch: DataProto) -> DataProto:
        if not batch.meta_info.get("validate", False):  # validation is never guided
            self.sampler.attach_prefixes(batch)
        return self.inner.generate_sequences(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class LPPORayPPOTrainer(RayPPOTrainer):
    """`RayPPOTrainer` whose batches, prefixes, advantage weights and resume follow a strategy.

    Start-up checks (each error names the setting): `rollout.n` equals the strategy's
    group size; the estimator is not an `lppo_*` one (this trainer weights itself)
    nor REMAX; without `reward.custom_reward_function`, every `data_source` is one
    verl's default scorer accepts and its score range lies in `data.lppo.reward_range`.

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
        self._check_config()

    def _check_config(self) -> None:
        cfg, sampler = self.config, self.lppo_sampler
        n = int(cfg.actor_rollout_ref.rollout.n)
        if n != sampler.strategy.group_size:
            raise ValueError(
                f"actor_rollout_ref.rollout.n={n} but the strategy plans group_size="
                f"{sampler.strategy.group_size}: set data.lppo.kwargs.group_size={n}")
        est = str(cfg.algorithm.adv_estimator)
        if est.startswith("lppo_"):
            raise ValueError(
                f"algorithm.adv_estimator={est}: LPPORayPPOTrainer weights the advantages itself; "
                "use the base estimator (e.g. grpo)")
        if est == "remax":
            raise ValueError("algorithm.adv_estimator=remax is not supported with LPPO (its greedy "
                             "baseline rollouts share the prompts' uids)")
        check_scorer(cfg, sampler)

    def init_workers(self) -> None:
        """Verl's workers; the rollout manager then plans prefixes for training batches."""
        super().init_workers()
        self.async_rollout_manager = _GuidedRollout(self.async_rollout_manager, self.lppo_sampler)

    def _get_gen_batch(self, batch: DataProto) -> DataProto:
        """Tag the fresh uids with sample keys before verl splits off the generation batch.

        Validation batches pass here too; their rows need no keys (they are never observed).
        """
        tag_uids(batch, strict=False)
        return super()._get_gen_batch(batch)

    def _update_actor(self, batch: DataProto) -> Any:
        """Observe the step's rewards, weight the advantages, then run verl's actor update."""
        self.lppo_sampler.update(batch)
        factor = self.lppo_sampler.advantage_factor(batch_keys(batch))
        adv = batch.batch["advantages"]
        batch.batch["advantages"] = adv * torch.as_tensor(
            factor, dtype=adv.dtype, device=adv.device).unsqueeze(-1)
        return super()._update_actor(batch)

    def _step_folder(self) -> str:
        import os

        return os.path.join(self.config.trainer.default_local_dir,
                            f"global_step_{self.global_steps}")

    def _save_checkpoint(self) -> None:
        """Verl's checkpoint, plus the sampler state next to it (read back by resume)."""
        import os

        super()._save_checkpoint()
        torch.save(self.lppo_sampler.state_dict(), os.path.join(self._step_folder(), SAMPLER_FILE))

    def _load_checkpoint(self) -> Any:
        """Verl's resume, then the sampler state of the same step (verl may skip `data.pt`)."""
        import os

        out = super()._load_checkpoint()
        if getattr(self, "global_steps", 0) <= 0:
            return out
        folder = self._step_folder()
        if self.config.trainer.resume_mode == "resume_path":
            folder = str(self.config.trainer.resume_from_path)
        path = os.path.join(folder, SAMPLER_FILE)
        if not os.path.exists(path):
            raise ValueError(
                f"resuming from {folder}, which has no {SAMPLER_FILE} (not an LPPO checkpoint): "
                "set trainer.resume_mode=disable or point trainer.resume_from_path at an LPPO run")
        self.lppo_sampler.load_state_dict(torch.load(path, weights_only=False))
        return out


# ---------------------------------------------------- config-only installation
def install() -> None:
    """Make verl's trainers build an `LPPOSampler` (and the legacy one `LPPORayPPOTrainer`).

    `verl.trainer.main_ppo_v0.TaskRunner.run` looks up `create_rl_sampler` and
    `RayPPOTrainer` as module globals at call time, in its own Ray process, after it
    has built the datasets; `LPPODataset` calls this from its constructor, so the
    replacement happens in exactly that process and only when a user opted in. The
    V1 trainer (`verl.trainer.ppo.v1.trainer_base`) calls its `create_rl_sampler`
    global right after building the datasets too; there the sampler waits for
    `verl_v1.LPPOAgentLoopManager` to check the config and refuses to draw without it.
    """
    import verl.trainer.main_ppo_v0 as v0

    try:
        import verl.trainer.ppo.v1.trainer_base as v1
    except ImportError:  # V1 needs transfer_queue; without it the V1 trainer cannot start
        v1 = None
    if v1 is not None and not getattr(v1.create_rl_sampler, "_lppo", False):

        def create_lppo_sampler_v1(data_config: Any, dataset: Any) -> LPPOSampler:
            strategy = _strategy_from_config(data_config)
            refuse_plan_options(strategy, "data.lppo.strategy", "verl's V1 trainer",
                                VERL_OPTIONS)
            sampler = LPPOSampler(dataset, data_config, strategy=strategy).bind()
            sampler.v1_ready = False
            return sampler

        create_lppo_sampler_v1._lppo = True  # type: ignore[attr-defined]
        v1.create_rl_sampler = create_lppo_sampler_v1
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


# ------------------------------------------------------------------- parquet
def to_verl_parquet(problems: Iterable[Any], path: str | Path, *, data_source: str = "openai/gsm8k",
                    ability: str = "math", split: str = "train",
                    instruction: str = "") -> Path:
    """Write problems in verl's RL parquet layout with a stable `extra_info.index`.

    Each problem is an `lppo_env.MathProblem` or a mapping with `id`, `question`,
    `answer` and optionally `solution`. Columns: `data_source`, `prompt` (one user
    message: question + `instruction`), `ability`, `reward_model` ({style: rule,
    ground_truth}), `extra_info` ({split, index, sample_id, question, solution}). The
    index is the row's ordinal, so keys are unique; `sample_id` keeps the original id.

    `data_source` defaults to "openai/gsm8k", which verl's default scorer accepts (it
    expects a "#### <answer>" line); lppo_env's `compute_score` accepts any value.
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
