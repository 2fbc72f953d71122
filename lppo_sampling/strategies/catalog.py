"""What each registered strategy is: the rows of docs/strategies.md.

Every name `make_strategy` accepts must have an entry here (`describe_strategy`), written
next to the strategy or, for strategies defined before the catalog existed, below. The
table in docs/strategies.md is generated from these entries (`scripts/strategies_doc.py`)
and a test fails when a strategy has no entry or the document is stale, so a new strategy
cannot be added without its row.

Fields:
    decides: what the strategy decides (selection, guidance, filter, weight, budget...).
    needs: what it needs from the training side ("nothing" = the rollouts' rewards only).
    paper: the paper it follows (title or arXiv id), or "ours".
    reports: what that paper reports (its headline claim, with our source's caveats).
    signals: the callable constructor arguments it cannot run without.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StrategyInfo", "describe_strategy", "strategy_info", "undescribed_strategies"]


@dataclass(frozen=True)
class StrategyInfo:
    """Documentation metadata of one registered strategy."""

    decides: str
    needs: str
    paper: str
    reports: str
    signals: tuple[str, ...] = ()


_INFO: dict[str, StrategyInfo] = {}


def describe_strategy(
    name: str, *, decides: str, needs: str, paper: str, reports: str,
    signals: tuple[str, ...] = (),
) -> None:
    """Record the documentation row of strategy `name` (every field a non-empty string)."""
    for field, value in (("decides", decides), ("needs", needs), ("paper", paper),
                         ("reports", reports)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"describe_strategy({name!r}): {field} must be a non-empty string")
    _INFO[name] = StrategyInfo(decides, needs, paper, reports, tuple(signals))


def strategy_info(name: str) -> StrategyInfo:
    """The metadata of a registered strategy; `ValueError` if it has none."""
    from lppo_sampling.strategy import available_strategies

    available_strategies()  # imports the modules that describe their strategies
    if name not in _INFO:
        raise ValueError(f"strategy {name!r} has no catalog entry: add describe_strategy("
                         f"{name!r}, ...) in lppo_sampling/strategies/catalog.py or its module")
    return _INFO[name]


def undescribed_strategies() -> list[str]:
    """Registered strategies without a catalog entry (must be empty)."""
    from lppo_sampling.strategy import available_strategies

    return [n for n in available_strategies() if n not in _INFO]


# ------------------------------------------- strategies that predate the catalog
_LPPO = "LPPO (arXiv 2507.06573)"
_LPPO_REPORTS = ("outperforms strong baselines on maths benchmarks with faster convergence and a "
                 "higher ceiling (abstract; numbers not found)")

describe_strategy(
    "uniform", decides="nothing: uniform batches, no guidance, keep all, weight 1",
    needs="nothing", paper="baseline (plain GRPO sampling)", reports="the reference arm",
)
describe_strategy(
    "lp_weighting", decides="weight: σ(κ·Δ)+b from each sample's learning progress",
    needs="nothing", paper=_LPPO + ", LP-weighting ablation", reports=_LPPO_REPORTS,
)
describe_strategy(
    "prefix_guidance",
    decides="guidance: stuck samples' slots start from an expert-solution prefix",
    needs="expert solutions", paper=_LPPO + ", PG-sampling ablation", reports=_LPPO_REPORTS,
)
describe_strategy(
    "lppo", decides="weight (LP-weighting) + guidance (expert prefixes on stuck samples)",
    needs="expert solutions", paper=_LPPO, reports=_LPPO_REPORTS,
)
describe_strategy(
    "dapo", decides="filter: drop groups whose rewards are all 0 or all 1 (refill to n)",
    needs="nothing", paper="DAPO (arXiv 2503.14476)",
    reports="dynamic sampling: AIME24 42 → 50 (Qwen2.5-32B, paper ablation)",
)
describe_strategy(
    "balanced_filter", decides="filter: keep groups with pass rate inside a band",
    needs="nothing", paper="Balanced online difficulty filtering (arXiv 2504.03380)",
    reports="+10% AIME, +4% average over GRPO; GRPO's best reward in 60% of the time",
)
describe_strategy(
    "sec", decides="selection: categories as bandit arms valued by mean |advantage|",
    needs="category labels", paper="SEC, Self-Evolving Curriculum (arXiv 2505.14970)",
    reports="Countdown OOD 0.54 vs 0.48 random (Qwen2.5-3B; third-party reading of Table 1)",
)
describe_strategy(
    "dump", decides="selection: categories by UCB on mean |advantage|",
    needs="category labels", paper="DUMP (arXiv 2504.09710)",
    reports="higher test reward than uniform on every K&K distribution (figures only)",
)
describe_strategy(
    "mopps", decides="selection: Beta posterior per sample, Thompson draws near a target",
    needs="nothing", paper="MoPPS (arXiv 2507.04632)",
    reports="accelerates training with far fewer rollouts (numbers not found)",
)
describe_strategy(
    "cures", decides="selection (and rollout allocation) by estimated pass-rate variance",
    needs="nothing", paper="CurES (arXiv 2510.01037)",
    reports="+3.30 (1.5B) and +4.82 (7B) points over GRPO on eight maths benchmarks",
)
describe_strategy(
    "hint_length", decides="guidance: per-sample prefix ratio, grown until solvable, annealed",
    needs="expert solutions", paper="QuestA (arXiv 2507.13266) and BREAD (arXiv 2506.17211)",
    reports="QuestA: AIME24 61.8 → 72.5 (Nemotron-1.5B)",
)
describe_strategy(
    "hint_lppo", decides="weight (LP-weighting) + guidance (adaptive hint length)",
    needs="expert solutions", paper=_LPPO + " with QuestA-style hints",
    reports="combination of ours; see lppo and hint_length",
)
describe_strategy(
    "self_prefix",
    decides="guidance: rarely solved samples replay a head of their own earlier success",
    needs="the completion texts of successful rollouts",
    paper="Prefix Sampling for pass-rate control (arXiv 2605.05112)",
    reports="2.01× (Qwen3-14B) end-to-end speed-up on SWE-bench Verified agentic RL",
)
describe_strategy(
    "lppo_self", decides="weight (LP-weighting) + guidance (self-prefix)",
    needs="the completion texts of successful rollouts", paper=_LPPO + " with self-prefixes",
    reports="combination of ours; see lppo and self_prefix",
)
describe_strategy(
    "saidpo", decides="selection: probed self-aware difficulty × error-rate clusters (DPO)",
    needs="knowledge-tag clusters (category labels)", paper="SAI-DPO (arXiv 2505.16176)",
    reports="v1: up to +21.3 points average, +10 AIME24, +15 AMC23; v2: at most ~6 points "
    "over static baselines",
)
