"""Use lppo_sampling alone, in a hand-written loop, with any policy and any reward.

The "policy" here is a simulated learner whose chance of solving each problem grows
when it trains on it (weighted by the sampler's weight); swap in your own generate +
verify. Run: python examples/sampler_alone.py
"""

import numpy as np

from lppo_sampling import GroupResults, make_strategy

rng = np.random.default_rng(0)
n_problems, batch, G = 500, 32, 8
skill = rng.beta(0.5, 2.0, n_problems)  # hidden per-problem pass probability

strategy = make_strategy("lppo", group_size=G, seed=0)
strategy.add_samples(np.arange(n_problems), has_solution=np.ones(n_problems, bool))

for step in range(1, 51):
    keys = strategy.select(batch)                       # which problems
    plan = strategy.plan(keys)                          # which rollouts get a prefix
    p = skill[keys][:, None] + 0.4 * plan.prefix_ratios  # a prefix makes it easier
    rewards = (rng.random(plan.prefix_ratios.shape) < np.clip(p, 0, 1)).astype(float)
    strategy.observe(GroupResults.from_plan(plan, rewards))
    keep, w = strategy.keep(keys), strategy.weights(keys)
    # "training": problems with a learning signal improve, in proportion to their weight
    signal = keep & (rewards.std(axis=1) > 0)
    skill[keys[signal]] = np.minimum(1.0, skill[keys[signal]] + 0.02 * w[signal])
    if step % 10 == 0:
        m = strategy.metrics()
        print(
            f"step {step:3d}  pass {m['sampler/batch_pass_rate']:.2f}  "
            f"guided {m['sampler/guided_rollout_frac']:.2f}  "
            f"weight {m['sampler/weight_mean']:.2f}"
        )

strategy.save("sampler_state.npz")  # exact resume: make_strategy("lppo").load(...)
print("mean skill", skill.mean().round(3))
