"""lppo_sampling: per-sample learning statistics and the decisions built on them.

Numpy only. A `Strategy` answers, each step, which samples to roll out (Selector),
which rollouts start from an expert prefix (Guide), which groups count (Filter) and how
much each counts (Weighter), from one `SampleStats` table. Build one by name::

    from lppo_sampling import make_strategy, GroupResults
    s = make_strategy("lppo", group_size=8, seed=0)
    s.add_samples(keys, has_solution=flags)
    keys = s.select(64); plan = s.plan(keys)
    s.observe(GroupResults.from_plan(plan, rewards))   # rewards: (64, 8) in [0, 1]
    w = s.weights(keys)
"""

from lppo_sampling import rules
from lppo_sampling.batch import GroupResults, RolloutPlan
from lppo_sampling.keys import KeyIndex
from lppo_sampling.roles import (
    Filter,
    Guide,
    KeepAll,
    LPWeighter,
    NoGuide,
    PrefixGuide,
    Selector,
    UniformSelector,
    UnitWeighter,
    Weighter,
)
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategy import (
    STATE_VERSION,
    Strategy,
    available_strategies,
    make_strategy,
    register_strategy,
)

__all__ = [
    "rules",
    "GroupResults",
    "RolloutPlan",
    "KeyIndex",
    "SampleStats",
    "Strategy",
    "STATE_VERSION",
    "make_strategy",
    "register_strategy",
    "available_strategies",
    "Selector",
    "Guide",
    "Filter",
    "Weighter",
    "UniformSelector",
    "NoGuide",
    "PrefixGuide",
    "KeepAll",
    "UnitWeighter",
    "LPWeighter",
]
