"""Pure rules of the peer strategies (DAPO, Bae, SEC, DUMP, MoPPS, CurES, SAI-DPO, hints).

Arrays in, arrays out, no state — the same contract as `lppo_sampling.rules`, so that each
rule's properties (bounds, monotonicity, symmetry about p = 0.5) can be stated and tested
on their own. The roles in this package only decide *which* rows a rule is applied to and
keep the rule's state between steps.

Sources (see shared/reference/peer_samplers.md for what each claim rests on):
    DAPO: Yu et al., arXiv 2503.14476 (dynamic sampling).
    Balanced online difficulty filtering: Bae et al., arXiv 2504.03380.
    SEC: Chen et al., "Self-Evolving Curriculum", arXiv 2505.14970.
    DUMP: Wang et al., arXiv 2504.09710 (code: ZhentingWang/DUMP @ 235e85d).
    MoPPS: Qu et al., arXiv 2507.04632 (code: thu-rllab/MoPPS @ a883f51).
    CurES: Sun et al., arXiv 2510.01037 (code: ZexuSun/CurES @ eccf298).
    SAI-DPO: Rao et al., arXiv 2505.16176.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "grpo_advantages",
    "softmax",
    "dapo_keep",
    "balanced_keep",
    "td0_update",
    "boltzmann_probs",
    "ucb_scores",
    "beta_posterior_update",
    "closest_to_target",
    "within_band_first",
    "cures_success_estimate",
    "cures_logits",
    "cures_rollout_allocation",
    "next_hint_ratio",
    "saidpo_nop",
    "saidpo_hardness_order",
    "saidpo_in_band",
    "cluster_error_weights",
]


# ------------------------------------------------------------------- shared
def grpo_advantages(rewards: np.ndarray, mask: np.ndarray, epsilon: float = 1e-6) -> np.ndarray:
    """GRPO outcome advantages per group: `A = (r − mean) / (std + ε)`, 0 on padding.

    Matches `agents.core_algos.compute_grpo_outcome_advantage` (and verl): the *unbiased*
    group std, ε = 1e-6, and a singleton group gets mean 0 and std 1 (its advantage is its
    raw reward). SEC and DUMP score a category by the mean |A| of its rollouts, which for
    binary rewards is ≈ 2·sqrt(p(1−p)) (peer_samplers.md §0.4): largest at p = 0.5.

    Args:
        rewards: (n, G) rewards; one row is one group.
        mask: (n, G) bool, valid slots; every row needs at least one.
        epsilon: added to the std.

    Returns:
        (n, G) float64 advantages.
    """
    r = np.asarray(rewards, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if r.shape != m.shape or r.ndim != 2:
        raise ValueError(f"rewards and mask must be (n, G) of one shape, got {r.shape}, {m.shape}")
    mf = m.astype(np.float64)
    count = mf.sum(axis=1)
    if (count < 1).any():
        raise ValueError("mask has a row without a valid rollout")
    mean = (r * mf).sum(axis=1) / count
    dev = (r - mean[:, None]) * mf
    var = (dev * dev).sum(axis=1) / np.maximum(count - 1.0, 1.0)
    single = count == 1
    std = np.where(single, 1.0, np.sqrt(var))
    mean = np.where(single, 0.0, mean)
    return (r - mean[:, None]) / (std[:, None] + epsilon) * mf


def softmax(logits: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
    """Max-subtracted softmax over the `available` entries (others get probability 0).

    Args:
        logits: (k,) finite logits.
        available: (k,) bool, or None for all. At least one entry must be available.

    Returns:
        (k,) float64 probabilities summing to 1.
    """
    z = np.asarray(logits, dtype=np.float64)
    a = np.ones(z.shape, bool) if available is None else np.asarray(available, bool)
    if not a.any():
        raise ValueError("available selects no entry: softmax needs at least one")
    zz = np.where(a, z, -np.inf)
    e = np.exp(zz - zz[a].max())
    return e / e.sum()


# -------------------------------------------------------- filters (post-rollout)
def dapo_keep(rewards: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """DAPO dynamic sampling (arXiv 2503.14476): keep a group iff its rewards are not all equal.

    verl implements "0 < #correct < G" as "std of the group metric > 0"; comparing the
    group's max and min exactly is the same test without the float noise of a computed
    std (eight rewards of 0.1 have a tiny nonzero `sqrt(E[r²] − E[r]²)`). A group with a
    single valid rollout has no spread to measure and is kept.

    Args:
        rewards: (n, G) rewards.
        mask: (n, G) bool, valid slots.

    Returns:
        (n,) bool.
    """
    r = np.asarray(rewards, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    hi = np.where(m, r, -np.inf).max(axis=1)
    lo = np.where(m, r, np.inf).min(axis=1)
    return (m.sum(axis=1) <= 1) | (hi > lo)


def balanced_keep(pass_rate: np.ndarray, low: float = 0.2, high: float = 0.8) -> np.ndarray:
    """Balanced online difficulty filtering (Bae et al., arXiv 2504.03380): `low ≤ p ≤ high`.

    The paper's bound on policy improvement grows with the variance p(1−p) of task
    success, maximal at p = 0.5, so groups are kept in a band around 0.5. A symmetric band
    [a, 1−a] is exactly the set `p(1−p) ≥ a(1−a)`. Thresholds are not published; 0.2–0.8
    follows a third-party note ([3P] in peer_samplers.md §3.1). NaN (no observation) is
    dropped.

    Args:
        pass_rate: (n,) group pass rates in [0, 1].
        low: lower edge of the inclusive band, 0 ≤ low ≤ high.
        high: upper edge of the inclusive band, high ≤ 1.
    """
    p = np.asarray(pass_rate, dtype=np.float64)
    return (p >= low) & (p <= high)


# ---------------------------------------------------------------------- SEC
def td0_update(q: np.ndarray, reward: np.ndarray, alpha: float, present: np.ndarray) -> np.ndarray:
    """SEC value update `Q ← α·r + (1 − α)·Q` on the arms drawn this step, others unchanged.

    SEC (arXiv 2505.14970 §2.2) calls this TD(0); with a one-step bandit it is an
    exponential moving average of each arm's reward with learning rate α.

    Args:
        q: (k,) arm values.
        reward: (k,) this step's arm rewards (ignored where not `present`).
        alpha: learning rate in [0, 1].
        present: (k,) bool, arms with at least one rollout this step.
    """
    q = np.asarray(q, dtype=np.float64)
    r = np.asarray(reward, dtype=np.float64)
    return np.where(present, alpha * np.where(present, r, 0.0) + (1.0 - alpha) * q, q)


def boltzmann_probs(q: np.ndarray, tau: float, available: np.ndarray | None = None) -> np.ndarray:
    """SEC arm distribution `π(c) = exp(Q(c)/τ) / Σ exp(Q(c')/τ)` over available arms."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    return softmax(np.asarray(q, dtype=np.float64) / tau, available)


# --------------------------------------------------------------------- DUMP
def ucb_scores(learnability: np.ndarray, counts: np.ndarray, c: float = 1.0) -> np.ndarray:
    """DUMP UCB score `U_j = L̂_j + c·sqrt(2·ln(N + 1) / (n_j + 1))`, N = Σ n_j.

    From `verl/utils/curriculum_learning.py` of the DUMP code: L̂_j is the windowed mean
    |advantage| of arm j and n_j its lifetime rollout count. The bonus shrinks as an arm is
    tried and grows (logarithmically) as others are, so a neglected arm comes back.

    Args:
        learnability: (k,) L̂_j ≥ 0.
        counts: (k,) n_j ≥ 0 rollouts observed per arm.
        c: exploration weight ≥ 0.
    """
    n = np.asarray(counts, dtype=np.float64)
    total = n.sum()
    return np.asarray(learnability, np.float64) + c * np.sqrt(2.0 * np.log(total + 1.0) / (n + 1.0))


# -------------------------------------------------------------------- MoPPS
def beta_posterior_update(
    alpha: np.ndarray,
    beta: np.ndarray,
    k: np.ndarray,
    success_rate: np.ndarray,
    decay: float = 1.0,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """MoPPS posterior update with discounting toward the prior.

    `α ← λ·α + (1−λ)·α⁰ + k·s`, `β ← λ·β + (1−λ)·β⁰ + k·(1−s)` (`recipe/ours/mopps.py`):
    λ < 1 forgets old evidence, so the posterior tracks a policy whose success rates drift.

    Args:
        alpha: (n,) current Beta α (> 0).
        beta: (n,) current Beta β (> 0).
        k: (n,) rollouts observed now.
        success_rate: (n,) mean accuracy s of those rollouts, in [0, 1].
        decay: λ in [0, 1]; 1 = no discount (MoPPS MATH scripts).
        prior_alpha: α⁰ > 0, the prior α that discounting (λ < 1) pulls toward.
        prior_beta: β⁰ > 0, the prior β that discounting (λ < 1) pulls toward.

    Returns:
        (new_alpha, new_beta), float64.
    """
    k = np.asarray(k, dtype=np.float64)
    s = np.asarray(success_rate, dtype=np.float64)
    a = decay * np.asarray(alpha, np.float64) + (1.0 - decay) * prior_alpha + k * s
    b = decay * np.asarray(beta, np.float64) + (1.0 - decay) * prior_beta + k * (1.0 - s)
    return a, b


def closest_to_target(draws: np.ndarray, target: float, n: int) -> np.ndarray:
    """Indices of the `n` draws closest to `target` (MoPPS `topk`: top-n of −(γ̂ − γ*)²).

    Ties are broken by position (stable), so the result is a pure function of the input.

    Returns:
        (min(n, len),) int64 indices, closest first.
    """
    d = np.abs(np.asarray(draws, dtype=np.float64) - target)
    n = min(int(n), d.shape[0])
    if n < d.shape[0]:
        part = np.argpartition(d, n - 1)[:n]
        return part[np.lexsort((part, d[part]))]
    return np.argsort(d, kind="stable")


def within_band_first(draws: np.ndarray, low: float, high: float, n: int) -> np.ndarray:
    """MoPPS `threshold` mode: draws inside [low, high] first (in order), then the nearest.

    Candidates arrive shuffled, so "in order" is the code's random pick among the band;
    when fewer than `n` qualify the rest are filled by smallest distance to the band.

    Returns:
        (min(n, len),) int64 indices.
    """
    g = np.asarray(draws, dtype=np.float64)
    dist = np.maximum(low - g, 0.0) + np.maximum(g - high, 0.0)
    order = np.lexsort((np.arange(g.shape[0]), dist))
    return order[: min(int(n), g.shape[0])]


# -------------------------------------------------------------------- CurES
def cures_success_estimate(successes: np.ndarray, attempts: np.ndarray) -> np.ndarray:
    """CurES posterior mean `p̂ = (s + 1) / (n + 2)` of Beta(s + 1, n − s + 1), in (0, 1)."""
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(attempts, dtype=np.float64)
    return (s + 1.0) / (n + 2.0)


def cures_logits(
    p_hat: np.ndarray, successes: np.ndarray, temperature: float, scale_by_successes: bool = True
) -> np.ndarray:
    """CurES sampling logits `sqrt(p̂(1 − p̂)) / T_x`, `P(x) ∝ exp(logit)`.

    `epic/epic_sampler.py` sets `T_x = (α_x + 1) / 0.01` with α_x the sample's successes,
    i.e. `temperature = 100` scaled by successes; the paper's temperature is not known
    (peer_samplers.md §5), hence a free `temperature`. Logits lie in [0, 0.5 / temperature].

    Args:
        p_hat: (n,) success estimates in [0, 1].
        successes: (n,) α_x ≥ 0.
        temperature: T > 0.
        scale_by_successes: multiply T by (α_x + 1), as the released code does.
    """
    p = np.asarray(p_hat, dtype=np.float64)
    t = (
        temperature * (np.asarray(successes, np.float64) + 1.0)
        if scale_by_successes
        else temperature
    )
    return np.sqrt(np.clip(p * (1.0 - p), 0.0, None)) / t


def cures_rollout_allocation(sigma: np.ndarray, budget: int) -> np.ndarray:
    """CurES rollout allocation `n_x = round(budget · σ_x / Σ σ)` (code comment: "eq. 127").

    σ_x is the std of the policy gradient of sample x, which needs white-box gradients; a
    caller without them can pass the Bernoulli proxy `sqrt(p̂(1 − p̂))` ([A]). All-zero σ
    spreads the budget evenly. Samples with `n_x = 0` get no rollouts, as in the code.

    Args:
        sigma: (n,) σ_x ≥ 0.
        budget: total rollouts (B · n_max in the paper's script).

    Returns:
        (n,) int64 rollouts per sample.
    """
    s = np.asarray(sigma, dtype=np.float64)
    if (s < 0).any() or not np.isfinite(s).all():
        raise ValueError("sigma must be finite and >= 0")
    total = s.sum()
    share = s / total if total > 0 else np.full(s.shape, 1.0 / max(s.size, 1))
    return np.rint(budget * share).astype(np.int64)


# ------------------------------------------------------------ adaptive hints
def next_hint_ratio(
    ratio: np.ndarray,
    guided_pass_rate: np.ndarray,
    unguided_pass_rate: np.ndarray,
    step_up: float = 0.1,
    step_down: float = 0.05,
    low: float = 0.15,
    high: float = 0.55,
    target: float = 0.5,
) -> np.ndarray:
    """Adaptive hint length: grow until the guided group solves, shrink as the sample is learned.

    Per sample, after an observation event (NaN = no rollout of that kind this event):
      * guided rollouts all failed → the hint was too short: `ratio += step_up`;
      * guided pass rate ≥ `target` → the hint makes it easy: `ratio −= step_down`;
      * any unguided success (pass rate > 0) → the sample is becoming solvable alone:
        `ratio −= step_down`;
    then clip to [low, high]. This searches for the shortest prefix that makes a sample
    solvable (BREAD-like growth, peer_samplers.md §7.5/§7.8) and anneals it per sample as
    the unguided pass rate rises (QuestA's 50% → 25% schedule, made per-sample). The
    result is non-increasing in both pass rates.

    Args:
        ratio: (n,) current prefix ratios.
        guided_pass_rate: (n,) pass rate of the guided rollouts, in [0, 1] or NaN.
        unguided_pass_rate: (n,) pass rate of the unguided rollouts, in [0, 1] or NaN.
        step_up: increment ≥ 0 when the guided group all failed.
        step_down: decrement ≥ 0 when the hint made it easy or the sample is learned.
        low: lower edge of the ratio band, 0 ≤ low ≤ high.
        high: upper edge of the ratio band, high ≤ 1.
        target: guided pass rate at or above which the hint shrinks.

    Returns:
        (n,) float64 in [low, high].
    """
    r = np.asarray(ratio, dtype=np.float64)
    g = np.asarray(guided_pass_rate, dtype=np.float64)
    u = np.asarray(unguided_pass_rate, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        up = g <= 0.0
        down = (g >= target).astype(np.float64) + (u > 0.0)
    return np.clip(r + step_up * up - step_down * down, low, high)


# ------------------------------------------------------------------ SAI-DPO
def saidpo_nop(correct: np.ndarray, attempts: np.ndarray, k: int = 8) -> np.ndarray:
    """Number of passes on the K-probe scale: `K · correct / attempts` (NaN where no attempt).

    With the paper's K = 8 probes per problem this is the count NoP itself; a ragged probe
    (some rollouts lost) is rescaled so the solvable band 0 < NoP < K keeps its meaning.
    """
    c = np.asarray(correct, dtype=np.float64)
    a = np.asarray(attempts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a > 0, k * c / np.maximum(a, 1.0), np.nan)


def saidpo_in_band(nop: np.ndarray, k: int = 8) -> np.ndarray:
    """SAI-DPO solvable band `0 < NoP < K`: solved sometimes, not always (NaN = unprobed → False).

    A problem never solved has no correct sample to be "chosen" in a DPO pair, one always
    solved has no rejected one, and both carry no learning signal (papers_lppo_saidpo.md
    §2.5; the exact band is [A]).
    """
    x = np.asarray(nop, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (x > 0) & (x < k)


def saidpo_hardness_order(nop: np.ndarray, steps: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Indices from hardest to easiest by SAI-DPO's self-aware difficulty, lexicographic.

    Priority (papers_lppo_saidpo.md §2.2): fewer passes NoP is harder; on a tie, more
    reasoning steps; then longer outputs. NaN or negative steps/length (unmeasured) count
    as the easiest on that criterion; remaining ties keep input order (stable).

    Args:
        nop: (n,) number of passes (NoP) per sample; fewer is harder.
        steps: (n,) reasoning steps per sample; more is harder.
        length: (n,) output length per sample; longer is harder.

    Returns:
        (n,) int64 permutation, hardest first.
    """
    nop = np.asarray(nop, dtype=np.float64)
    st = np.asarray(steps, dtype=np.float64)
    ln = np.asarray(length, dtype=np.float64)
    st = np.where(np.isnan(st) | (st < 0), -np.inf, st)
    ln = np.where(np.isnan(ln) | (ln < 0), -np.inf, ln)
    # lexsort: last key is primary; ascending NoP, then descending steps, then length
    return np.lexsort((np.arange(nop.shape[0]), -ln, -st, nop))


def cluster_error_weights(
    error_rate: np.ndarray, available: np.ndarray, floor: float = 0.0
) -> np.ndarray:
    """SAI-DPO cluster sampling mass `q_k ∝ err_k + floor` over available clusters.

    Clusters where the model fails more get more of the next batch ("up-weight clusters
    with high error", papers_lppo_saidpo.md §2.6 [A] for the proportional form). If every
    available cluster has zero mass the distribution is uniform over them.

    Args:
        error_rate: (k,) err_k in [0, 1] (NaN = unprobed, treated as 0).
        available: (k,) bool, clusters that have selectable samples.
        floor: added mass ≥ 0, so no available cluster is starved.

    Returns:
        (k,) float64 summing to 1 (0 where unavailable).
    """
    a = np.asarray(available, dtype=bool)
    if not a.any():
        raise ValueError("available selects no cluster")
    w = np.where(a, np.nan_to_num(np.asarray(error_rate, np.float64), nan=0.0) + floor, 0.0)
    w = np.clip(w, 0.0, None)
    if w.sum() <= 0:
        w = a.astype(np.float64)
    return w / w.sum()
