"""Category-level ("arm") selectors: SEC and DUMP.

Both treat the categories of the pool (difficulty levels, problem types, data sources —
the `category` labels given to `Strategy.add_samples`) as bandit arms, score each arm by
the mean |advantage| of its recent rollouts, draw an arm per batch slot from a softmax
over the scores, and pick a sample uniformly within the arm. Samples without a category
form arm 0. Per-arm state grows as new labels appear.

References:
    SEC: Chen et al., "Self-Evolving Curriculum for LLM Reasoning", arXiv 2505.14970.
    DUMP: Wang et al., "DUMP: Automated Distribution-Level Curriculum Learning for
    RL-based LLM Post-training", arXiv 2504.09710 (code ZhentingWang/DUMP @ 235e85d).
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from lppo_sampling.batch import GroupResults
from lppo_sampling.checks import check_int
from lppo_sampling.roles import KeepAll, NoGuide, Selector, UnitWeighter, check_range
from lppo_sampling.stats import SampleStats
from lppo_sampling.strategies import rules_peer
from lppo_sampling.strategies.sampling import ArmIndex, sample_by_arm
from lppo_sampling.strategy import Strategy, register_strategy

__all__ = ["ArmSelector", "SECSelector", "DUMPSelector", "sec", "dump"]


def _grow(arr: np.ndarray, k: int, fill: float) -> np.ndarray:
    """Pad the first axis of `arr` to length `k` with `fill`."""
    if arr.shape[0] >= k:
        return arr
    pad = np.full((k - arr.shape[0],) + arr.shape[1:], fill, dtype=arr.dtype)
    return np.concatenate([arr, pad])


class ArmSelector(Selector):
    """Base of the arm selectors: arm grouping, arm-level |advantage|, sampling.

    Subclasses implement `arm_probs(stats)` and `on_observe`.

    Args:
        epsilon: ε of the GRPO advantages computed from group rewards.
    """

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = check_range("epsilon", epsilon, 0.0, np.inf)
        self.index = ArmIndex()

    def bind(self, stats: SampleStats) -> None:
        """New table: drop the cached arm grouping."""
        self.index.invalidate()

    def invalidate(self) -> None:
        """Rebuild the arm grouping on the next select (after re-labelling samples)."""
        self.index.invalidate()

    @abstractmethod
    def arm_probs(self, stats: SampleStats) -> np.ndarray:
        """(n_arms,) probabilities over arms; 0 for arms without samples."""

    def _available(self, stats: SampleStats) -> np.ndarray:
        """(n_arms,) bool, arms that hold at least one sample (all, for an empty pool)."""
        sizes = self.index.refresh(stats).sizes
        return sizes > 0 if sizes.any() else np.ones(sizes.shape, bool)

    def select(self, stats: SampleStats, n: int, rng: np.random.Generator) -> np.ndarray:
        """Arm per slot from `arm_probs`, then uniform within the arm, no repeats."""
        probs = self.arm_probs(stats)
        return sample_by_arm(self.index, stats, probs, n, rng)

    def abs_advantages(self, stats: SampleStats, rows: np.ndarray, results: GroupResults):
        """Per-rollout |A| (n, G) of the batch and each row's arm (n,)."""
        adv = np.abs(rules_peer.grpo_advantages(results.rewards, results.mask, self.epsilon))
        return adv, self.index.arm_of(stats, rows)

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Entropy and max of the current arm distribution, number of non-empty arms."""
        if len(stats) == 0:
            return {}
        self.index.refresh(stats)
        p = np.where(self.index.sizes > 0, self.arm_probs(stats), 0.0)
        if p.sum() <= 0:
            return {}
        p = p / p.sum()
        nz = p[p > 0]
        return {
            "sampler/arm_entropy": float(-(nz * np.log(nz)).sum()),
            "sampler/arm_p_max": float(p.max()),
            "sampler/arms": float((self.index.sizes > 0).sum()),
        }


class SECSelector(ArmSelector):
    """SEC: TD(0) value per category, Boltzmann over categories, uniform within.

    After each observed batch, arm c's reward is the mean |Â| over all valid rollouts of
    the batch's samples in c (GRPO advantages from the group rewards), and
    `Q(c) ← α·r + (1 − α)·Q(c)` for the arms present (`rules_peer.td0_update`); the next
    batch draws arms from softmax(Q/τ). Q starts at 0 (uniform).

    Args:
        alpha: TD learning rate α in [0, 1] (0.5: third-party default, peer_samplers.md §1b).
        tau: Boltzmann temperature τ > 0 (1.0, same source). For binary rewards |Â| ≤ ~1,
            so τ = 1 gives a fairly flat distribution.
        epsilon: ε of the GRPO advantages.
    """

    def __init__(self, alpha: float = 0.5, tau: float = 1.0, epsilon: float = 1e-6) -> None:
        super().__init__(epsilon)
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)
        self.tau = check_range("tau", tau, 0.0, np.inf, closed="right")
        self.q = np.zeros(1, np.float64)
        self.last_reward = np.full(1, np.nan)

    def arm_probs(self, stats: SampleStats) -> np.ndarray:
        """softmax(Q/τ) over all arms."""
        k = ArmIndex.n_arms(stats)
        self.q = _grow(self.q, k, 0.0)
        return rules_peer.boltzmann_probs(self.q[:k], self.tau, self._available(stats))

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """TD(0) step on every arm present in the batch."""
        k = ArmIndex.n_arms(stats)
        self.q = _grow(self.q, k, 0.0)
        adv, arms = self.abs_advantages(stats, rows, results)
        total = np.bincount(arms, weights=adv.sum(axis=1), minlength=k)
        count = np.bincount(arms, weights=results.mask.sum(axis=1), minlength=k)
        present = count > 0
        reward = np.divide(total, count, out=np.zeros(k), where=present)
        self.q = rules_peer.td0_update(self.q[:k], reward, self.alpha, present)
        self.last_reward = np.where(present, reward, np.nan)

    def state_dict(self) -> dict:
        """Arm values."""
        return {"q": self.q.copy(), "last_reward": self.last_reward.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Restore arm values; `ValueError` naming the field if they are not finite arrays."""
        where = "state_dict['roles']['selector']"
        q = _float_vector(state.get("q", np.zeros(1)), f"{where}['q']")
        if not np.isfinite(q).all() or (q < 0).any():
            raise ValueError(f"{where}['q'] must be finite and >= 0 (a mean |advantage|)")
        last = _float_vector(state.get("last_reward", np.full(q.shape, np.nan)),
                             f"{where}['last_reward']")
        if last.shape != q.shape:
            raise ValueError(f"{where}['last_reward'] must have shape {q.shape} like 'q'")
        if np.isinf(last).any() or (last < 0).any():
            raise ValueError(f"{where}['last_reward'] must be NaN or finite >= 0")
        self.q = q.copy()
        self.last_reward = last.copy()

    def metrics(self, stats: SampleStats) -> dict[str, float]:
        """Arm distribution summary plus the spread of Q."""
        out = super().metrics(stats)
        if len(stats):
            q = self.q[: ArmIndex.n_arms(stats)][self._available(stats)]
            out["sampler/sec_q_max"] = float(q.max())
            out["sampler/sec_q_min"] = float(q.min())
        return out


class DUMPSelector(ArmSelector):
    """DUMP: UCB over data distributions with a windowed mean |advantage|.

    Each arm keeps the last `window` per-rollout |Â| values (GRPO advantages from the
    group rewards; DUMP uses the token-mean advantage, which for GRPO is the sequence
    advantage) and a lifetime rollout count n_j. Score
    `U_j = mean|Â|_window + c·sqrt(2 ln(Σn + 1)/(n_j + 1))` (`rules_peer.ucb_scores`),
    arm probabilities softmax(U/T). Empty windows score 0, so the first batch is uniform.

    Args:
        window: W, rollouts remembered per arm (code default 300).
        c: exploration weight (code default 1).
        temperature: softmax temperature T > 0 (code default 0.1).
        epsilon: ε of the GRPO advantages.
    """

    def __init__(
        self, window: int = 300, c: float = 1.0, temperature: float = 0.1, epsilon: float = 1e-6
    ) -> None:
        super().__init__(epsilon)
        self.window = check_int("window", window, 1)
        self.c = check_range("c", c, 0.0, np.inf)
        self.temperature = check_range("temperature", temperature, 0.0, np.inf, closed="right")
        self.values = np.zeros((1, self.window), np.float64)
        self.filled = np.zeros(1, np.int64)
        self.pos = np.zeros(1, np.int64)
        self.counts = np.zeros(1, np.int64)

    def _ensure(self, k: int) -> None:
        self.values = _grow(self.values, k, 0.0)
        self.filled = _grow(self.filled, k, 0)
        self.pos = _grow(self.pos, k, 0)
        self.counts = _grow(self.counts, k, 0)

    def learnability(self) -> np.ndarray:
        """(n_arms,) windowed mean |Â| (0 for an empty window)."""
        valid = np.arange(self.window)[None, :] < self.filled[:, None]
        s = np.where(valid, self.values, 0.0).sum(axis=1)
        return np.divide(s, self.filled, out=np.zeros(s.shape), where=self.filled > 0)

    def arm_probs(self, stats: SampleStats) -> np.ndarray:
        """softmax(U/T) over all arms."""
        k = ArmIndex.n_arms(stats)
        self._ensure(k)
        u = rules_peer.ucb_scores(self.learnability()[:k], self.counts[:k], self.c)
        return rules_peer.softmax(u / self.temperature, self._available(stats))

    def on_observe(self, stats: SampleStats, rows: np.ndarray, results: GroupResults) -> None:
        """Append each rollout's |Â| to its arm's window (batch order), count rollouts."""
        k = ArmIndex.n_arms(stats)
        self._ensure(k)
        adv, arms = self.abs_advantages(stats, rows, results)
        m = results.mask
        for a in np.unique(arms).tolist():
            sel = arms == a
            vals = adv[sel][m[sel]]
            L = vals.shape[0]
            self.counts[a] += L
            vals = vals[-self.window :]
            idx = (self.pos[a] + np.arange(vals.shape[0])) % self.window
            self.values[a, idx] = vals
            self.pos[a] = (self.pos[a] + vals.shape[0]) % self.window
            self.filled[a] = min(self.window, int(self.filled[a]) + vals.shape[0])

    def state_dict(self) -> dict:
        """Windows, fill levels, write positions and lifetime counts."""
        return {
            "values": self.values.copy(),
            "filled": self.filled.copy(),
            "pos": self.pos.copy(),
            "counts": self.counts.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the windows; `ValueError` naming the field if any is malformed."""
        where = "state_dict['roles']['selector']"
        values = np.asarray(state.get("values", np.zeros((1, self.window))))
        if values.dtype.kind != "f" or values.ndim != 2 or values.shape[1] != self.window:
            raise ValueError(
                f"{where}['values'] has {values.dtype} shape {values.shape}; "
                f"expected float (arms, window={self.window})"
            )
        if not np.isfinite(values).all() or (values < 0).any():
            raise ValueError(f"{where}['values'] must be finite and >= 0 (|advantage| values)")
        k = values.shape[0]
        arrs = {}
        limits = {"filled": self.window, "pos": self.window - 1, "counts": None}
        for name, top in limits.items():
            a = np.asarray(state.get(name, np.zeros(k, np.int64)))
            if a.dtype.kind not in "iu" or a.shape != (k,):
                raise ValueError(
                    f"{where}[{name!r}] must be an int array of shape ({k},), got "
                    f"{a.dtype} {a.shape}"
                )
            if (a < 0).any() or (top is not None and (a > top).any()):
                rng = f"[0, {top}]" if top is not None else ">= 0"
                raise ValueError(f"{where}[{name!r}] must lie in {rng}")
            arrs[name] = a.astype(np.int64)
        if (arrs["counts"] < arrs["filled"]).any():
            raise ValueError(f"{where}['counts'] must be >= 'filled' (lifetime >= window)")
        self.values = values.astype(np.float64)
        self.filled, self.pos, self.counts = arrs["filled"], arrs["pos"], arrs["counts"]


def _float_vector(x: object, where: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind != "f" or arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(
            f"{where} must be a non-empty 1-D float array, got {arr.dtype} {arr.shape}"
        )
    return arr.astype(np.float64)


# ------------------------------------------------------------------ registry
@register_strategy("sec")
def sec(
    group_size: int = 8,
    beta: float = 0.8,
    alpha: float = 0.5,
    tau: float = 1.0,
    epsilon: float = 1e-6,
    seed: int = 0,
) -> Strategy:
    """SEC (arXiv 2505.14970): Boltzmann over category TD(0) values of mean |advantage|."""
    return Strategy(
        selector=SECSelector(alpha, tau, epsilon),
        guide=NoGuide(),
        filter=KeepAll(),
        weighter=UnitWeighter(),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )


@register_strategy("dump")
def dump(
    group_size: int = 8,
    beta: float = 0.8,
    window: int = 300,
    c: float = 1.0,
    temperature: float = 0.1,
    epsilon: float = 1e-6,
    seed: int = 0,
) -> Strategy:
    """DUMP (arXiv 2504.09710): UCB over categories of windowed mean |advantage|, softmax T."""
    return Strategy(
        selector=DUMPSelector(window, c, temperature, epsilon),
        guide=NoGuide(),
        filter=KeepAll(),
        weighter=UnitWeighter(),
        group_size=group_size,
        beta=beta,
        seed=seed,
    )
