"""Peer strategies (DAPO, balanced filtering, SEC, DUMP, MoPPS, CurES, adaptive hints, SAI-DPO).

Each module registers its strategies with `register_strategy` on import; the registry
imports this package the first time a strategy is looked up by name. Rules are pure
functions in `rules_peer`; fast batch sampling over large pools lives in `sampling`.
"""

from lppo_sampling.strategies import arms, filters  # noqa: F401  (registration)
