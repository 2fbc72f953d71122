"""GAIN-RL ("Angles Don't Lie", arXiv 2506.02281): a Gaussian over a fixed rank order.

Each prompt gets one score before training: the angle concentration of the policy's
hidden states on it (mean pairwise cosine of the token states at the input of the last
layer's `mlp.up_proj`; `agents.signals.AngleScorer` computes it in one prefill pass).
Prompts are sorted by descending score, once. A batch is n ranks drawn without
replacement with Gaussian weights over rank, centre μ (starts at 0, the most
concentrated end) and std σ = 1000 ranks. After each step the centre moves:

    μ ← μ + clip(n_adj·tanh(α(acc/acc_divisor − β)) + n_adj·tanh(α·angle), adj_min, adj_max)

with the paper code's defaults n_adj = 500, α = 2, β = 0.5, adj_max = 1000, adj_min = 0,
acc_divisor = 2 (the code's accuracy is a summed reward that reaches 2). `acc` is the batch
mean unguided reward; `angle` is the batch online angle metric from the optional
`angle_fn(keys)`. Without `angle_fn` only the accuracy term moves μ — and with rewards in
[0, 1], acc_divisor = 2 and adj_min = 0 that term is never positive, so μ stays put: set
`acc_divisor=1` to let accuracy above β advance the centre.

Drawing is O(n) at any pool size: ranks are drawn from the normal and out-of-range or
repeated ones rejected (`gaussian_rank_draw`), never n weights over the whole pool.
"""

from __future__ import annotations

import math

import numpy as np

from lppo_sampling.batch import GroupResults
from lppo_sampling.roles import KeepAll, NoGuide, Selector, UnitWeighter, check_range
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategies.catalog import describe_strategy
from lppo_sampling.strategies.signals import check_scores, require_callable
from lppo_sampling.strategy import Strategy, register_strategy

__all__ = ["gain_mu_step", "gaussian_rank_draw", "GainSelector", "gain_rl"]


def gain_mu_step(
    acc: float, angle: float, n_adj: float, alpha: float, beta: float,
    adj_min: float, adj_max: float, acc_divisor: float,
) -> float:
    """The move of μ after one batch (bounded by [adj_min, adj_max])."""
    move = n_adj * np.tanh(alpha * (acc / acc_divisor - beta)) + n_adj * np.tanh(alpha * angle)
    return float(np.clip(move, adj_min, adj_max))


def gaussian_rank_draw(
    mu: float, sigma: float, size: int, n: int, rng: np.random.Generator, max_rounds: int = 64
) -> np.ndarray:
    """Distinct ranks (n) in [0, size), Gaussian weights N(μ, σ) over rank, O(n + σ) per call.

    μ is clipped into the pool. Draws are rounded to the nearest rank and rejected when
    out of range or already drawn (a mask over the ±8σ window around μ, never the pool);
    each round draws enough for the in-range mass. After `max_rounds` (a tiny σ on a
    crowded centre) the remaining ranks are the nearest free ones to μ. n ≥ size returns
    every rank.
    """
    if n >= size:
        return np.arange(size, dtype=np.int64)
    centre = float(np.clip(mu, 0, size - 1))
    lo, hi = max(0, int(centre - 8 * sigma)), min(size, int(np.ceil(centre + 8 * sigma)) + 1)
    cdf = [0.5 * (1 + math.erf((x - centre) / (sigma * math.sqrt(2)))) for x in (lo - 0.5,
                                                                             hi - 0.5)]
    p_in = max(cdf[1] - cdf[0], 1e-3)
    taken = np.zeros(hi - lo, bool)
    parts: list[np.ndarray] = []
    count = 0
    for _ in range(max_rounds):
        need = n - count
        if need == 0:
            break
        m = int(need / p_in * 1.5) + 32
        draw = np.rint(rng.normal(centre, sigma, size=m)).astype(np.int64)
        draw = draw[(draw >= lo) & (draw < hi)]
        draw = draw[~taken[draw - lo]]
        _, first = np.unique(draw, return_index=True)
        draw = draw[np.sort(first)][:need]
        taken[draw - lo] = True
        parts.append(draw)
        count += draw.shape[0]
    chosen = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    need = n - chosen.shape[0]
    if need:
        a, b = max(0, int(centre) - n - need), min(size, int(centre) + n + need + 1)
        near = np.arange(a, b, dtype=np.int64)
        near = near[~np.isin(near, chosen)]
        near = near[np.argsort(np.abs(near - centre), kind="stable")][:need]
        chosen = np.concatenate([chosen, near])
    return chosen


class GainSelector(Selector):
    """Sample ranks of a fixed score order with a Gaussian whose centre follows accuracy.

    Args:
        score_fn: `score_fn(keys) -> (m,)` finite scores (angle concentration), called
            once for each sample the first time it is in the pool at a select.
        angle_fn: optional `angle_fn(keys) -> float`, the batch online angle metric.
        sigma, n_adj, alpha, beta, adj_min, adj_max, acc_divisor, mu0: see the module.
    """

    def __init__(
        self, score_fn: object, angle_fn: object = None, sigma: float = 1000.0,
        n_adj: float = 500.0, alpha: float = 2.0, beta: float = 0.5, adj_min: float = 0.0,
        adj_max: float = 1000.0, acc_divisor: float = 2.0, mu0: float = 0.0,
    ) -> None:
        self._score = require_callable("gain_rl", "score_fn", score_fn,
                                       "a per-prompt score score_fn(keys) -> (m,)")
        self.score_fn = score_fn
        self._angle = None if angle_fn is None else require_callable(
            "gain_rl", "angle_fn", angle_fn, "the batch angle metric angle_fn(keys) -> float")
        self.angle_fn = angle_fn
        self.sigma = check_range("sigma", sigma, 0.0, np.inf, closed="neither")
        self.n_adj = check_range("n_adj", n_adj, 0.0, np.inf)
        self.alpha = check_range("alpha", alpha, 0.0, np.inf)
        self.beta = check_range("beta", beta, -np.inf, np.inf, closed="neither")
        self.adj_min = check_range("adj_min", adj_min, -np.inf, np.inf, closed="neither")
        self.adj_max = check_range("adj_max", adj_max, self.adj_min, np.inf, closed="left")
        self.acc_divisor = check_range("acc_divisor", acc_divisor, 0.0, np.inf,
                                       closed="neither")
        self.mu = check_range("mu0", mu0, 0.0, np.inf, closed="left")
        self.scores = np.zeros(0, np.float64)
        self.order = np.zeros(0, np.int64)
        self._last: dict[str, float] = {}

    def _extend(self, stats: SampleStats) -> None:
        have = self.scores.shape[0]
        if have < len(stats):
            new = np.arange(have, len(stats), dtype=np.int64)
            s = check_scores("gain_rl", "score_fn", self._score(stats.index.keys_of(new)),
                             new.shape[0])
            self.scores = np.concatenate([self.scores, s])
            self.order = np.argsort(-self.scores, kind="stable").astype(np.int64)

    def select(self, stats: SampleStats, n: int, rng: np.random.Generator) -> np.ndarray:
        """N rows at Gaussian-drawn ranks of the score order."""
        self._extend(stats)
        size = self.order.shape[0]
        ranks = gaussian_rank_draw(self.mu, self.sigma, size, n, rng)
        if n > size:
            ranks = np.concatenate([ranks, rng.choice(size, n - size).astype(np.int64)])
        self._last["sampler/gain_mu"] = float(self.mu)
        return self.order[ranks]

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Move μ by the batch's unguided accuracy (and angle metric, with `angle_fn`)."""
        u = results.mask & ~results.guided
        if not u.any():
            return
        acc = float(results.rewards[u].mean())
        angle = 0.0
        if self._angle is not None:
            a = np.asarray(self._angle(results.keys), np.float64)
            if a.size != 1 or not np.isfinite(a).all():
                raise ValueError(f"strategy 'gain_rl': angle_fn must return one finite number, "
                                 f"got {a!r:.60}")
            angle = float(a.reshape(()))
        self.mu += gain_mu_step(acc, angle, self.n_adj, self.alpha, self.beta, self.adj_min,
                                self.adj_max, self.acc_divisor)

    def state_dict(self) -> dict:
        """μ and the scores (the order is recomputed from them)."""
        return {"mu": float(self.mu), "scores": self.scores.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Restore μ and scores; `ValueError` on non-finite values."""
        mu = float(state.get("mu", 0.0))
        scores = np.asarray(state.get("scores", np.zeros(0)), np.float64).reshape(-1)
        if not np.isfinite(mu) or not np.isfinite(scores).all():
            raise ValueError("state_dict['roles']['selector'] needs a finite mu and scores")
        self.mu, self.scores = mu, scores
        self.order = np.argsort(-scores, kind="stable").astype(np.int64)

    def check(self, stats: SampleStats) -> None:
        """Refuse scores for more rows than the pool."""
        if self.scores.shape[0] > len(stats):
            raise ValueError(f"state_dict['roles']['selector']['scores'] covers "
                             f"{self.scores.shape[0]} rows; the pool has {len(stats)}")

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """The Gaussian's centre μ (in ranks) at the last select."""
        return dict(self._last)


@register_strategy("gain_rl")
def gain_rl(
    score_fn: object = None,
    angle_fn: object = None,
    group_size: int = 8,
    beta: float = 0.8,
    sigma: float = 1000.0,
    n_adj: float = 500.0,
    alpha: float = 2.0,
    acc_beta: float = 0.5,
    adj_min: float = 0.0,
    adj_max: float = 1000.0,
    acc_divisor: float = 2.0,
    mu0: float = 0.0,
    seed: int = 0,
) -> Strategy:
    """GAIN-RL: Gaussian over a fixed angle-concentration order, centre paced by accuracy."""
    return Strategy(
        selector=GainSelector(score_fn, angle_fn, sigma, n_adj, alpha, acc_beta, adj_min,
                              adj_max, acc_divisor, mu0),
        guide=NoGuide(), filter=KeepAll(), weighter=UnitWeighter(),
        group_size=group_size, beta=beta, seed=seed,
    )


describe_strategy(
    "gain_rl",
    decides="selection: Gaussian weights over a fixed rank order (angle concentration), "
    "centre moved after each step by batch accuracy (and the online angle metric)",
    needs="one prefill pass of the policy with a hook on the last layer's mlp.up_proj input "
    "(per-prompt score); optionally the batch angle metric",
    paper='GAIN-RL, "Angles Don\'t Lie" (arXiv 2506.02281)',
    reports="over 2.5× faster training on maths and code (Qwen2.5 0.5B-7B, LLaMA-3.2-3B); "
    "beats vanilla GRPO with half the data",
    signals=("score_fn",),
)
