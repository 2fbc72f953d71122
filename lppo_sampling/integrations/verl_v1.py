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

Not supported under V1 (refused at start-up): prefix guidance (V1 repeats each prompt
`rollout.n` times inside the agent-loop worker, so no per-slot column reaches the
rollout), the async trainer modes, DAPO group filtering and `use_kl_in_reward`.
Agent loops with several outputs per session are refused by the estimator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ  # needs transfer_queue

from lppo_sampling.integrations import verl as lv

__all__ = ["LPPOAgentLoopManager", "MANAGER_FQN", "check_v1_config", "record_prompt_keys"]

MANAGER_FQN = "lppo_sampling.integrations.verl_v1.LPPOAgentLoopManager"


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
