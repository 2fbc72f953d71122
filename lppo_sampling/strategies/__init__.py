"""Peer strategies (DAPO, balanced filtering, SEC, DUMP, MoPPS, CurES, adaptive hints, SAI-DPO).

Each module registers its strategies with `register_strategy` on import; the registry
imports this package the first time a strategy is looked up by name. Rules are pure
functions in `rules_peer`; fast batch sampling over large pools lives in `sampling`.

| name              | module      | roles                                                     |
|-------------------|-------------|-----------------------------------------------------------|
| `dapo`            | `filters`   | uniform · none · DynamicSamplingFilter · 1 (+ `refill`)   |
| `balanced_filter` | `filters`   | uniform · none · BalancedFilter · 1 (+ `refill`)          |
| `sec`             | `arms`      | SECSelector · none · keep all · 1                         |
| `dump`            | `arms`      | DUMPSelector · none · keep all · 1                        |
| `mopps`           | `posterior` | MoPPSSelector · none · keep all · 1                       |
| `cures`           | `posterior` | CurESSelector · none · keep all · 1 (+ `allocate_rollouts`)|
| `hint_length`     | `hint`      | uniform · AdaptiveHintGuide · keep all · 1                |
| `hint_lppo`       | `hint`      | uniform · AdaptiveHintGuide · keep all · LPWeighter       |
| `self_prefix`     | `self_prefix`| uniform · SelfPrefixGuide · keep all · 1                 |
| `lppo_self`       | `self_prefix`| uniform · SelfPrefixGuide · keep all · LPWeighter        |
| `saidpo`          | `saidpo`    | SAIDPOSelector · none · DAPO filter · 1 (+ `probe_keys`)  |
| `pcl`             | `predictive`| PCLSelector (needs `predictor`) · none · keep all · 1     |
| `adcl`            | `predictive`| ADCLSelector (needs `estimate_fn`) · none · keep all · 1  |
| `gain_rl`         | `gain`      | GainSelector (needs `score_fn`) · none · keep all · 1     |
| `length_curriculum`| `length`   | uniform · LengthBudgetGuide (options) · keep all · 1      |
| `h1`              | `horizon`   | ChainDepthSelector · none · keep all · 1                  |
| `cog_drift`       | `formats`   | uniform · FormatGuide (options) · keep all · 1            |
| `clpo`            | `restructure`| uniform · RestructureGuide (needs `restructure_fn`) · 1   |

What each strategy decides and needs, and its paper: `catalog` (docs/strategies.md).
"""

from lppo_sampling.strategies import (  # noqa: F401
    arms,
    catalog,
    filters,
    formats,
    gain,
    hint,
    horizon,
    length,
    posterior,
    predictive,
    restructure,
    saidpo,
    self_prefix,
)
