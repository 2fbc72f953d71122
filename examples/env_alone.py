"""Use the Gymnasium math environment alone, with a custom policy (here: a rule).

Run: python examples/env_alone.py
"""

import gymnasium as gym

import lppo_env  # noqa: F401  (registers lppo/MathReasoning-v0)
from lppo_env import extract_final_answer


def my_policy(observation: str) -> str:
    """A stand-in policy: answers 42 to everything. Replace with your model."""
    return "Let me think step by step.\nThe answer is \\boxed{42}."


env = gym.make("lppo/MathReasoning-v0", problems="default")
total = 0.0
for episode in range(5):
    obs, info = env.reset(seed=episode, options={"prefix_ratio": 0.5})  # guided by a prefix
    completion = my_policy(obs)
    _, reward, terminated, truncated, step_info = env.step(completion)
    total += reward
    print(f"{info['problem_id']}: prefix={info['prefix']!r:.40} "
          f"parsed={step_info['parsed_answer']!r} reward={reward}")
    print("   extracted:", extract_final_answer(info["prefix"] + completion))
print("mean reward", total / 5)
env.close()
