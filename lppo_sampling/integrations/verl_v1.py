"""verl's default V1 trainer (`trainer.use_v1=True`): selection, weights and reward feedback.

The V1 trainer (`verl.trainer.ppo.v1`, TransferQueue) gives each prompt a fresh uuid
in `_fetch_one_gen_batch` and never calls a trainer method we could override from
config (its class comes from a registry that is read before our code loads). Its
public extension points that LPPO uses instead:

* `create_rl_sampler` — the trainer's data loader takes its sampler from this module
  global, called right after `data.custom_cls` (`LPPODataset`) is built, so the
  strategy chooses every training batch (as in the legacy trainer).
* `actor_rollout_ref.rollout.agent.agent_loop_manager_class` — `LPPOAgentLoopManager`
  sees every training batch with both its `uid` and verl's `index` column
  (`extra_info.index`) before generation, and records uid → sample key. It also checks
  the config at start-up (before the first step).
* `algorithm.adv_estimator=lppo_grpo` (or `lppo_rloo`) — verl's registered-estimator
  hook: it receives each response's prompt uid (the key is looked up in that record)
  and its rewards, feeds the rewards to the strategy and multiplies verl's advantages
  by `strategy.weights × keep`.

Prefix guidance: V1 repeats each prompt `rollout.n` times inside the agent-loop worker
and hands every session its `session_id` (the slot) with the prompt's columns. So the
manager writes, per prompt, the plan's prefix for each slot (`lppo_prefixes`, a JSON list)
and `agent_name=lppo_prefix_agent`; `LPPOPrefixAgentLoop` picks `lppo_prefixes[session_id]`
and puts it on the prompt side. The estimator sees only uids, not sessions, so for a
guiding strategy it observes each session from TransferQueue (`{uid}_{session}_{i}`
entries: `rm_scores` and the prefix the loop reported), then weights the rows as before.

Not supported under V1 (refused at start-up): the async trainer modes, DAPO group
filtering and `use_kl_in_reward`. Agent loops with several outputs per session are
refused by the estimator.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ  # needs transfer_queue

from lppo_sampling.integrations import verl as lv

__all__ = ["LPPOAgentLoopManager", "MANAGER_FQN", "PREFIXES_COLUMN", "attach_slot_prefixes",
           "check_v1_config", "observe_sessions", "record_prompt_keys"]

MANAGER_FQN = "lppo_sampling.integrations.verl_v1.LPPOAgentLoopManager"
PREFIXES_COLUMN = "lppo_prefixes"  # per prompt: JSON list, the prefix of each slot ("" = none)


def check_v1_config(config: Any, sampler: lv.LPPOSampler) -> None:
    """Refuse V1 settings LPPO cannot follow, naming each setting (runs before step 1)."""
    cfg_get = lv._cfg_get
    mode = str(config.trainer.v1.trainer_mode)
    if mode != "sync":
        raise ValueError(
            f"trainer.v1.trainer_mode={mode}: LPPO supports the sync V1 trainer only (async modes "
            "draw prompts before the strategy has seen the previous step's rewards)")
    est = str(config.algorithm.adv_estimator)
    fn = lv.core_algos.ADV_ESTIMATOR_REGISTRY.get(est)
    if getattr(fn, "_lppo_spec", None) is None:
        raise ValueError(
            f"algorithm.adv_estimator={est}: under trainer.use_v1=True the LPPO weights and "
            "reward feedback come from the estimator: set algorithm.adv_estimator=lppo_grpo "
            "(or lppo_rloo)")
    if not fn._lppo_spec[1]:
        raise ValueError(f"algorithm.adv_estimator={est} does not observe rewards; use lppo_grpo")
    if cfg_get(config.algorithm, "use_kl_in_reward", False):
        raise ValueError("algorithm.use_kl_in_reward=True: the LPPO estimator would observe "
                         "KL-penalised rewards; use actor_rollout_ref.actor.use_kl_loss instead")
    filt = cfg_get(config.algorithm, "filter_groups")
    if cfg_get(filt, "enable", False):
        raise ValueError("algorithm.filter_groups.enable=True (DAPO refill) is not supported with "
                         "LPPO under trainer.use_v1=True; use a strategy's filter instead")
    n = int(config.actor_rollout_ref.rollout.n)
    if n != sampler.strategy.group_size:
        raise ValueError(
            f"actor_rollout_ref.rollout.n={n} but the strategy plans group_size="
            f"{sampler.strategy.group_size}: set data.lppo.kwargs.group_size={n}")
    lv.check_scorer(config, sampler)


def record_prompt_keys(prompts: Any, sampler: lv.LPPOSampler) -> None:
    """Record uid → sample key for a training batch (validation batches are skipped)."""
    from verl.utils import tensordict_utils as tu

    if "validate" in prompts.keys() and bool(tu.get(prompts, "validate")):
        return
    uids = [str(u) for u in tu.get(prompts, "uid")]
    index = tu.get(prompts, "index")
    if index is None:
        raise ValueError("the training batch has no index column (extra_info.index); write one "
                         "per row (see to_verl_parquet)")
    sampler.remember_uids(uids, list(np.asarray(index).tolist()))
    if sampler.guides:
        attach_slot_prefixes(prompts, sampler)


def attach_slot_prefixes(prompts: Any, sampler: lv.LPPOSampler) -> np.ndarray:
    """Write the plan's prefix of every (prompt, slot) into the batch, in place.

    Each prompt gets `lppo_prefixes` (a JSON list of `group_size` strings, "" for an
    unguided slot) and `agent_name=lppo_prefix_agent`; the agent-loop worker runs slot s
    as session s, and the loop takes `lppo_prefixes[s]`.

    Returns:
        (prompts, group_size) the planned prefix ratios (0 = unguided).
    """
    from verl.utils import tensordict_utils as tu

    from lppo_sampling.integrations.verl_agent_loop import AGENT_NAME

    keys = [lv._norm_key(k) for k in np.asarray(tu.get(prompts, "index")).tolist()]
    plan = sampler.strategy.plan(lv._key_array(keys))
    lv.check_plan_options(plan, lv.VERL_OPTIONS, "verl's LPPOSampler")
    ratios = np.asarray(plan.prefix_ratios, dtype=np.float64)
    names = tu.get(prompts, "agent_name")
    columns = [k for k in prompts.keys() if not isinstance(prompts.get(k), torch.Tensor)]
    texts = []
    for b in range(len(keys)):
        row_texts = [""] * ratios.shape[1]
        guided = np.flatnonzero(ratios[b] > 0)
        if guided.size:
            if isinstance(names, list) and str(names[b]) != AGENT_NAME:
                raise ValueError(
                    f"a guided prompt asks for agent loop {names[b]!r}; expert prefixes need "
                    f"{AGENT_NAME!r} (drop the dataset's agent_name column or use unguided "
                    "strategies)")
            row = {k: _row_value(tu.get(prompts, k), b) for k in columns}
            for s in guided:
                text = sampler.prefix_fn(row, float(ratios[b, s]))
                if not isinstance(text, str):
                    raise ValueError(f"data.lppo.prefix_fn returned {type(text).__name__}, "
                                     "expected the prefix text (str)")
                row_texts[s] = text
        texts.append(json.dumps(row_texts))
    tu.assign_non_tensor_stack(prompts, PREFIXES_COLUMN, texts)
    if not isinstance(names, list):
        tu.assign_non_tensor_stack(prompts, "agent_name", [AGENT_NAME] * len(keys))
    return ratios


def _row_value(column: Any, b: int) -> Any:
    return column[b] if isinstance(column, list) else column


def observe_sessions(sampler: lv.LPPOSampler, uids: Sequence[str]) -> None:
    """Observe every session of these prompt uids from TransferQueue, guided flags included.

    V1's estimator gets one row per response with only its prompt uid; which session
    (slot) a row was, and so whether it was guided, is in TransferQueue: each response is
    stored under `{uid}_{session}_{i}` with its `rm_scores` and the agent loop's
    `extra_fields["prefix"]`.
    """
    import transfer_queue as tq

    want = {str(u) for u in uids}
    listing = (tq.kv_list("train") or {}).get("train", {})
    keys = []
    for key, tag in listing.items():
        parts = key.rsplit("_", 2)
        if len(parts) == 3 and parts[0] in want and not (tag or {}).get("is_prompt", False):
            keys.append(key)
    if not keys:
        raise ValueError("no response of this batch was found in TransferQueue's train partition")
    keys.sort()
    data = tq.kv_batch_get(keys=keys, partition_id="train",
                           select_fields=["rm_scores", "response_mask", "extra_fields"])
    scores = [float(r.sum()) for r in data["rm_scores"].unbind()]
    lengths = [int(r.sum()) for r in data["response_mask"].unbind()]
    extra = data["extra_fields"]
    extra = extra.tolist() if hasattr(extra, "tolist") else list(extra)
    guided = [bool((e or {}).get("prefix")) for e in extra]
    session_uids = [k.rsplit("_", 2)[0] for k in keys]
    sampler.observe(sampler.keys_for_uids(session_uids), scores, uids=session_uids,
                    guided=guided, lengths=lengths, record=True)


class LPPOAgentLoopManager(AgentLoopManagerTQ):
    """verl's V1 agent loop manager that records each prompt's sample key first.

    Set `actor_rollout_ref.rollout.agent.agent_loop_manager_class` to `MANAGER_FQN`.
    It is built in the trainer's process after the data loader, so the bound
    `LPPOSampler` is there; the config is checked on construction.
    """

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        if not lv._ACTIVE:
            raise ValueError(
                "actor_rollout_ref.rollout.agent.agent_loop_manager_class is LPPO's, but no "
                "LPPOSampler was built: set data.custom_cls.path=pkg://lppo_sampling.integrations."
                "verl data.custom_cls.name=LPPODataset")
        self.lppo_sampler = lv._active()
        check_v1_config(config, self.lppo_sampler)
        super().__init__(config, *args, **kwargs)
        self.lppo_sampler.v1_ready = True

    def generate_sequences(self, prompts: Any) -> None:
        """Record the batch's uid → key map, then verl's dispatch to the agent-loop workers."""
        record_prompt_keys(prompts, self.lppo_sampler)
        return super().generate_sequences(prompts)
