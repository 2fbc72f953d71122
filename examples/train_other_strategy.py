"""Train with a different strategy and learner, from Python instead of the CLI.

Same as: lppo train --strategy lp_weighting --learner reinforce_plus_plus --steps 4
Run: python examples/train_other_strategy.py
"""

from agents.config import TrainConfig
from agents.trainer import Trainer

cfg = TrainConfig(
    strategy="lp_weighting",            # or uniform, prefix_guidance, lppo, dapo, sec, ...
    strategy_kwargs={"kappa": 4.0},
    learner="reinforce_plus_plus",      # or grpo, ppo
    steps=4,
    batch_size=4,
    group_size=4,
    eval_size=16,
    eval_every=2,
    run_dir="runs/example-lpw-rpp",
)
summary = Trainer(cfg).run()
print(summary)  # run_dir holds metrics.jsonl, learning_curve.png and checkpoints/
