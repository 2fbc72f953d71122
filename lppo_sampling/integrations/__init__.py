"""Adapters that drive an `lppo_sampling` strategy from an RL library.

Each adapter lives in its own module and imports its library only when that module is
imported, so `import lppo_sampling` never pulls in torch, trl, verl or openrlhf:

* `lppo_sampling.integrations.trl` — `LPPOGRPOTrainer`, a TRL `GRPOTrainer` whose
  prompts, prefixes, advantage weights and checkpoint come from a strategy.
* `lppo_sampling.integrations.verl` — `LPPOSampler` (a stateful torch `Sampler`),
  `LPPORayPPOTrainer`, the `lppo_grpo` advantage estimator and `to_verl_parquet`.
* `lppo_sampling.integrations.openrlhf` — labels, prompt files (and their start-up
  check) and the observation logs shared by `openrlhf_reward` (`--reward.remote_url`)
  and `openrlhf_agent` (`--train.agent_func_path`).

None of them imports `lppo_env` or `agents` (tested): the caller hands in the env pieces
(a prefix maker, a scorer). See docs/integrations.md for install lines, tested versions
and caveats; examples/trl/ has a runnable script.
"""
