"""Expert prefixes for verl rollouts: `data.lppo.prefix_fn.path=<this file> name=expert_prefix`.

The verl adapter calls `expert_prefix(row, ratio)` on the driver for every guided
(sample, slot) of a training batch; `row` holds the generation batch's columns for that
prompt, as written by `to_verl_parquet` (`extra_info.solution`, `reward_model.ground_truth`).
The prefix is cut by lppo_env at a step boundary and never contains the final answer.
"""

from __future__ import annotations

from typing import Any

from lppo_env import MathProblem, make_prefix, split_steps


def expert_prefix(row: dict[str, Any], ratio: float) -> str:
    """About `ratio` of the row's worked solution, cut after a whole step ("" without one)."""
    info = row.get("extra_info") or {}
    solution = str(info.get("solution") or "")
    if not solution.strip():
        return ""
    problem = MathProblem(
        id=str(info.get("index", "row")), question=str(info.get("question") or "(question)"),
        answer=str(row["reward_model"]["ground_truth"]), solution=solution,
        steps=split_steps(solution))
    return make_prefix(problem, float(ratio)).text
