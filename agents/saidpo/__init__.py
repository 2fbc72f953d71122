"""SAI-DPO (Rao et al., arXiv 2505.16176): probe -> self-aware selection -> DPO, iterated.

Each iteration (papers_lppo_saidpo.md §2.6; [A] = this project's assumption):

1. **probe** ~1% of the training pool (`probe_keys` of the `saidpo` strategy), K = 8
   samples per problem from the current policy, scored by the verifier;
2. **measure**: the strategy observes rewards, lengths and step counts, so each probed
   problem gets its self-aware difficulty (NoP, steps, length) and each knowledge cluster
   its error rate;
3. **select** training problems through the strategy: solvable band 0 < NoP < K [A],
   clusters drawn with mass proportional to their error rate [A], harder first in band;
   selected problems not probed this iteration are sampled K times (and observed);
4. **pairs**: for each selected problem with both outcomes, a random correct sample
   (chosen) and a random incorrect one (rejected) [A, the paper's "natural" recipe];
5. **DPO** update(s) on the pairs; reference = the initial policy (default) or the
   policy of the previous iteration (`reference="previous"`, iterative DPO);
6. **evaluate** greedy pass@1 on a fixed held-out split; one JSONL line per iteration.

Clusters are the problems' knowledge tags joined with "; ", used as the strategy's
`category`. The tags come from the data (`tags="data"`: `MathProblem.tags`) or, as in
the paper, from an LLM (`tags="policy"`: the initial policy tags every training problem
once, greedily, cached in JSONL; see `agents.knowledge_tags`). With `use_embeddings` the
tag strings are embedded with all-MiniLM-L6-v2 and grouped by K-Means
(`lppo_sampling.clustering.cluster_tags`), as in the paper; generated tags rarely repeat
exactly, so they are meant to be used with it.

After every iteration the loop writes an atomic checkpoint to `run_dir/checkpoints/`
(`agents.checkpoint`: policy, optimizer and DPO shuffling RNG, the reference weights
unless they equal the policy's, strategy state, RNG states, iteration counter); a new
`SAIDPOLoop` on the same run_dir resumes from the latest one (`resume=True`) and drops
the metrics lines of iterations it will redo, so a killed run continued to the end logs
exactly what an uninterrupted run logs.

CLI: `lppo saidpo --iterations 3 --pairs-per-iteration 16` (flags from `SAIDPOConfig`).

Modules, one idea each: `config` (the settings), `pairs` (DPO pairs from K samples),
`clusters` (knowledge clusters of the pool), `checkpoint` (what resuming needs),
`loop` (the iteration), `cli` (`lppo saidpo`).
"""

from agents.saidpo.cli import add_saidpo_parser, run_saidpo
from agents.saidpo.clusters import problem_categories
from agents.saidpo.config import SAIDPOConfig
from agents.saidpo.loop import RewardFn, SAIDPOLoop
from agents.saidpo.pairs import build_pairs

__all__ = [
    "RewardFn",
    "SAIDPOConfig",
    "SAIDPOLoop",
    "add_saidpo_parser",
    "build_pairs",
    "problem_categories",
    "run_saidpo",
]
