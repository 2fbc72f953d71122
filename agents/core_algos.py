"""Pure tensor functions of policy-gradient RL for LLMs: estimators, losses, KL.

Modelled on verl's `verl/trainer/ppo/core_algos.py` and named as it (and the papers) name
things, so that results and configs translate one to one:

- advantage estimators in a registry: `grpo`, `rloo`, `reinforce_plus_plus`,
  `reinforce_plus_plus_baseline`, `gae`;
- the PPO-clip token loss (`vanilla`, with asymmetric and dual clip) in a registry of
  policy losses;
- KL estimators `k1`, `k2`, `k3` (aliases `kl`, `mse`, `low_var_kl`; plus `abs`);
- loss aggregation modes `token-mean`, `seq-mean-token-sum`, `seq-mean-token-mean`,
  `seq-mean-token-sum-norm`.

Unlike verl, every estimator has the same keyword signature (`AdvantageEstimatorFn`), so
callers never special-case GAE or GRPO, and no config object enters a function.

Tensor conventions: `B` rows (sequences), `T` token positions. A `(B, T)` tensor is aligned
with the token positions of the training batch; `response_mask` is 1.0 on trainable
(response) tokens and 0.0 on prompt, expert-prefix and padding tokens. The prompt may take
any number of leading positions: estimators only look at masked positions.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

__all__ = [
    "ADV_ESTIMATOR_REGISTRY",
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "POLICY_LOSS_REGISTRY",
    "AdvantageEstimatorFn",
    "PolicyLossFn",
    "agg_loss",
    "compute_gae_advantage_return",
    "compute_grpo_outcome_advantage",
    "compute_policy_loss_vanilla",
    "compute_reinforce_plus_plus_baseline_outcome_advantage",
    "compute_reinforce_plus_plus_outcome_advantage",
    "compute_rloo_outcome_advantage",
    "compute_token_level_rewards",
    "compute_value_loss",
    "explained_variance",
    "get_adv_estimator_fn",
    "get_policy_loss_fn",
    "group_ids",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "register_adv_est",
    "register_policy_loss",
]


# --------------------------------------------------------------------------- registries


class AdvantageEstimatorFn(Protocol):
    """Signature shared by every advantage estimator.

    Args:
        token_level_rewards: (B, T) per-token rewards (outcome reward on the last response
            token, optionally minus a per-token KL penalty).
        response_mask: (B, T) 1.0 on response tokens.
        index: (B,) group id per row (rows sampled from the same prompt share an id);
            needed by group estimators.
        values: (B, T) critic values; needed by `gae`.
        gamma: discount factor.
        lam: GAE lambda.
        norm_adv_by_std_in_grpo: divide by the group std in `grpo` (False = Dr.GRPO).
        epsilon: added to standard deviations.

    Returns:
        `(advantages, returns)`, each (B, T), zero outside `response_mask`.
    """

    def __call__(
        self,
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        *,
        index: torch.Tensor | np.ndarray | Sequence[Any] | None = None,
        values: torch.Tensor | None = None,
        gamma: float = 1.0,
        lam: float = 1.0,
        norm_adv_by_std_in_grpo: bool = True,
        epsilon: float = 1e-6,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(advantages, returns)` for a batch of rollouts."""
        ...


class PolicyLossFn(Protocol):
    """Signature shared by policy losses: `(loss, metrics)`; see `compute_policy_loss_vanilla`."""

    def __call__(
        self,
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return `(loss, metrics)` for (B, T) log-probs and advantages."""
        ...


ADV_ESTIMATOR_REGISTRY: dict[str, AdvantageEstimatorFn] = {}
POLICY_LOSS_REGISTRY: dict[str, PolicyLossFn] = {}


def _register(registry: dict[str, Any], kind: str, name: str) -> Callable[[Any], Any]:
    def decorator(fn: Any) -> Any:
        if not isinstance(name, str) or not name:
            raise ValueError(f"expected a non-empty string {kind} name, got {name!r}")
        existing = registry.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(
                f"expected a free {kind} name, got {name!r} which is already registered to "
                f"{existing.__module__}.{existing.__qualname__}; choose another name"
            )
        registry[name] = fn
        return fn

    return decorator


def _lookup(registry: dict[str, Any], kind: str, name: str) -> Any:
    if name in registry:
        return registry[name]
    valid = sorted(registry)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"expected a {kind} name in {valid}, got {name!r}.{hint}")


def register_adv_est(name: str) -> Callable[[AdvantageEstimatorFn], AdvantageEstimatorFn]:
    """Decorator: register an advantage estimator under `name`.

    Re-registering the same function is a no-op (module reloads); a different function
    under a taken name raises `ValueError`, so plugins cannot silently shadow built-ins.
    """
    return _register(ADV_ESTIMATOR_REGISTRY, "advantage estimator", name)


def get_adv_estimator_fn(name: str) -> AdvantageEstimatorFn:
    """Return the estimator registered as `name`; the error lists valid names."""
    return _lookup(ADV_ESTIMATOR_REGISTRY, "advantage estimator", name)


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator: register a policy loss under `name` (same rules as `register_adv_est`)."""
    return _register(POLICY_LOSS_REGISTRY, "policy loss", name)


def get_policy_loss_fn(name: str) -> PolicyLossFn:
    """Return the policy loss registered as `name`; the error lists valid names."""
    return _lookup(POLICY_LOSS_REGISTRY, "policy loss", name)


# --------------------------------------------------------------------------- masked stats


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `x` where `mask` is 1 (over all elements if `dim` is None)."""
    return (x * mask).sum() if dim is None else (x * mask).sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over masked elements; 0 where the mask is empty (never NaN)."""
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over all masked elements (Bessel-corrected by default, as verl)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, epsilon: float = 1e-8
) -> torch.Tensor:
    """Normalise `x` to zero mean, unit variance over all masked elements of the batch.

    Args:
        x: (B, T) values.
        mask: (B, T) 1.0 where counted.
        shift_mean: subtract the mean (False keeps the mean, only rescales).
        epsilon: added to the variance.
    """
    mean = masked_mean(x, mask)
    whitened = (x - mean) * torch.rsqrt(masked_var(x, mask) + epsilon)
    return whitened if shift_mean else whitened + mean


def group_ids(index: torch.Tensor | np.ndarray | Sequence[Any], n: int) -> torch.Tensor:
    """Map arbitrary group labels (ints, strings, uids) to dense ids `0..G-1`.

    Args:
        index: (B,) labels; rows with equal labels form a group.
        n: expected length B.

    Returns:
        (B,) int64 tensor of dense group ids in order of first appearance.
    """
    if isinstance(index, torch.Tensor):
        labels: list[Any] = index.detach().cpu().tolist()
    elif isinstance(index, np.ndarray):
        labels = index.tolist()
    else:
        labels = list(index)
    if len(labels) != n:
        raise ValueError(f"expected index of length {n} (one group id per row), got {len(labels)}")
    dense: dict[Any, int] = {}
    return torch.tensor([dense.setdefault(label, len(dense)) for label in labels], dtype=torch.long)


def _group_mean_std(
    scores: torch.Tensor, gid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row group mean, unbiased group std and group size, vectorised with scatter_add.

    A singleton group gets mean 0 and std 1, as in verl (its advantage is its raw score).
    """
    num_groups = int(gid.max()) + 1 if gid.numel() else 0
    gid = gid.to(scores.device)
    count = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device)
    count.scatter_add_(0, gid, torch.ones_like(scores))
    total = torch.zeros_like(count).scatter_add_(0, gid, scores)
    mean = total / count
    dev2 = torch.zeros_like(count).scatter_add_(0, gid, (scores - mean[gid]) ** 2)
    std = torch.sqrt(dev2 / (count - 1).clamp(min=1))
    single = count <= 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    return mean[gid], std[gid], count[gid]


def _group_outcome_stats(
    token_level_rewards: torch.Tensor, index: Any, name: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outcome scores of the group estimators with their per-row group statistics.

    Returns `(scores, mean, std, count)`, each (B,): `scores` are the row sums of
    `token_level_rewards`, the rest is `_group_mean_std` of the scores over the groups of
    `index` (required: the estimator `name` raises without it).
    """
    if index is None:
        raise ValueError(
            f"expected `index` (one group id per row) for the {name!r} estimator, got None"
        )
    gid = group_ids(index, token_level_rewards.shape[0])
    scores = token_level_rewards.sum(dim=-1)
    mean, std, count = _group_mean_std(scores, gid)
    return scores, mean, std, count


# --------------------------------------------------------------------------- estimators


@register_adv_est("grpo")
@torch.no_grad()
def compute_grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    index: torch.Tensor | np.ndarray | Sequence[Any] | None = None,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_adv_by_std_in_grpo: bool = True,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO: outcome score normalised within its group (DeepSeekMath, arXiv 2402.03300).

    `A_i = (s_i - mean_g) / (std_g + eps)` with `s_i` the sum of the row's token rewards and
    the unbiased group std; with `norm_adv_by_std_in_grpo=False`, `A_i = s_i - mean_g`
    (Dr.GRPO, arXiv 2503.20783: the std division up-weights near-solved and near-failed
    prompts). Broadcast to every response token. `values`, `gamma`, `lam` are unused.

    Args:
        token_level_rewards: (B, T).
        response_mask: (B, T).
        index: (B,) group labels (required).
        values: unused.
        gamma: unused.
        lam: unused.
        norm_adv_by_std_in_grpo: divide by the group std.
        epsilon: added to the std.

    Returns:
        `(advantages, returns)`, both (B, T), equal.
    """
    scores, mean, std, _ = _group_outcome_stats(token_level_rewards, index, "grpo")
    adv = scores - mean
    if norm_adv_by_std_in_grpo:
        adv = adv / (std + epsilon)
    adv = adv.unsqueeze(-1) * response_mask
    return adv, adv


@register_adv_est("rloo")
@torch.no_grad()
def compute_rloo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    index: torch.Tensor | np.ndarray | Sequence[Any] | None = None,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_adv_by_std_in_grpo: bool = True,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO: score minus the mean of the *other* rows of its group (arXiv 2402.14740).

    `A_i = s_i - mean_{j != i} s_j = n/(n-1) (s_i - mean_g)`; a singleton group has no
    baseline (`A_i = s_i`), as in verl. Only `index` is used besides the rewards.

    Args:
        token_level_rewards: (B, T).
        response_mask: (B, T).
        index: (B,) group labels (required).
        values: unused.
        gamma: unused.
        lam: unused.
        norm_adv_by_std_in_grpo: unused.
        epsilon: unused.

    Returns:
        `(advantages, returns)`, both (B, T), equal.
    """
    scores, mean, _, count = _group_outcome_stats(token_level_rewards, index, "rloo")
    factor = torch.where(count > 1, count / (count - 1).clamp(min=1), torch.ones_like(count))
    adv = (scores - mean) * factor
    adv = adv.unsqueeze(-1) * response_mask
    return adv, adv


def _discounted_returns(
    token_level_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Reverse discounted cumulative sum over response tokens, reset outside the mask."""
    returns = torch.zeros_like(token_level_rewards)
    running = torch.zeros_like(token_level_rewards[:, 0])
    for t in reversed(range(token_level_rewards.shape[1])):
        running = token_level_rewards[:, t] + gamma * running
        returns[:, t] = running
        running = running * response_mask[:, t]
    return returns


@register_adv_est("reinforce_plus_plus")
@torch.no_grad()
def compute_reinforce_plus_plus_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    index: torch.Tensor | np.ndarray | Sequence[Any] | None = None,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_adv_by_std_in_grpo: bool = True,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++: discounted return, whitened over all tokens of the batch (arXiv 2501.03262).

    As in OpenRLHF and verl, the per-token KL penalty is expected to be already folded into
    `token_level_rewards` (see `compute_token_level_rewards`); the return
    `G_t = sum_{k>=t} gamma^(k-t) r_k` is then normalised with the mean and std of all
    response tokens of the batch (global whitening instead of a critic or group baseline).

    Args:
        token_level_rewards: (B, T) rewards including any KL penalty.
        response_mask: (B, T).
        index: unused.
        values: unused.
        gamma: discount.
        lam: unused.
        norm_adv_by_std_in_grpo: unused.
        epsilon: unused (whitening uses its own 1e-8).

    Returns:
        `(advantages, returns)`, each (B, T); `returns` are the raw discounted returns.
    """
    returns = _discounted_returns(token_level_rewards, response_mask, gamma) * response_mask
    adv = masked_whiten(returns, response_mask) * response_mask
    return adv, returns


@register_adv_est("reinforce_plus_plus_baseline")
@torch.no_grad()
def compute_reinforce_plus_plus_baseline_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    index: torch.Tensor | np.ndarray | Sequence[Any] | None = None,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_adv_by_std_in_grpo: bool = True,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++-baseline: subtract the group mean score, then whiten over the batch.

    The variant OpenRLHF recommends for RLVR: `s_i - mean_g` (no std, so no difficulty
    re-weighting within a group), broadcast to the response tokens, then global masked
    whitening as in `reinforce_plus_plus`. Matches verl's implementation.

    Args:
        token_level_rewards: (B, T).
        response_mask: (B, T).
        index: (B,) group labels (required).
        values: unused.
        gamma: unused.
        lam: unused.
        norm_adv_by_std_in_grpo: unused.
        epsilon: unused.

    Returns:
        `(advantages, returns)`, both (B, T), equal.
    """
    scores, mean, _, _ = _group_outcome_stats(
        token_level_rewards, index, "reinforce_plus_plus_baseline"
    )
    adv = (scores - mean).unsqueeze(-1) * response_mask
    adv = masked_whiten(adv, response_mask) * response_mask
    return adv, adv


@register_adv_est("gae")
@torch.no_grad()
def compute_gae_advantage_return(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    index: torch.Tensor | np.ndarray | Sequence[Any] | None = None,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_adv_by_std_in_grpo: bool = True,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation for PPO (Schulman et al., arXiv 1506.02438).

    `delta_t = r_t + gamma V_{t+1} - V_t`, `A_t = delta_t + gamma lam A_{t+1}`, computed
    over response tokens only: masked positions (prompt, prefix, padding) are skipped, so
    "next" means the next response token and the value after the last one is 0. Returns are
    `A + V` (the critic's regression target); advantages are then whitened over the batch.

    Args:
        token_level_rewards: (B, T).
        response_mask: (B, T).
        index: unused.
        values: (B, T) critic values (required).
        gamma: discount.
        lam: GAE lambda; 1 gives Monte-Carlo returns minus V.
        norm_adv_by_std_in_grpo: unused.
        epsilon: unused.

    Returns:
        `(advantages, returns)`, each (B, T).
    """
    if values is None:
        raise ValueError(
            "expected `values` (B, T) from the critic for the 'gae' estimator, got None"
        )
    if values.shape != token_level_rewards.shape:
        raise ValueError(
            f"expected values of shape {tuple(token_level_rewards.shape)}, "
            f"got {tuple(values.shape)}"
        )
    values = values.to(token_level_rewards.dtype)
    next_values = torch.zeros_like(values[:, 0])
    last_gae = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        m = response_mask[:, t]
        delta = token_level_rewards[:, t] + gamma * next_values - values[:, t]
        gae_t = delta + gamma * lam * last_gae
        next_values = values[:, t] * m + (1 - m) * next_values
        last_gae = gae_t * m + (1 - m) * last_gae
        advantages[:, t] = last_gae
    returns = (advantages + values) * response_mask
    advantages = masked_whiten(advantages, response_mask) * response_mask
    return advantages, returns


# --------------------------------------------------------------------------- rewards, KL


def compute_token_level_rewards(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """Place outcome scores on the last response token and subtract a per-token KL penalty.

    OpenRLHF's `compute_reward` / verl's `apply_kl_penalty` ("KL in reward"):
    `r_t = s * [t = last] - kl_coef * kl_t` on response tokens.

    Args:
        scores: (B,) outcome reward per sequence.
        response_mask: (B, T).
        kl: (B, T) per-token KL estimate between policy and reference, or None.
        kl_coef: penalty coefficient.

    Returns:
        (B, T) token-level rewards, zero outside the mask. A row without response tokens
        gets no reward.
    """
    positions = torch.arange(response_mask.shape[1], device=response_mask.device)
    last = (positions * (response_mask > 0)).argmax(dim=-1)
    rewards = torch.zeros_like(response_mask, dtype=scores.dtype)
    has_tokens = response_mask.sum(dim=-1) > 0
    rows = torch.arange(response_mask.shape[0], device=response_mask.device)
    rewards[rows, last] = torch.where(has_tokens, scores, torch.zeros_like(scores))
    if kl is not None and kl_coef:
        rewards = rewards - kl_coef * kl.to(rewards.dtype) * response_mask
    return rewards * response_mask


KL_ESTIMATORS = ("k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl")


def kl_penalty(
    log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kl_estimator: str = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from sampled-token log-probs (Schulman, 2020).

    - `k1` / `kl`: `log pi - log pi_ref` (unbiased, high variance; use in the reward).
    - `abs`: `|log pi - log pi_ref|`.
    - `k2` / `mse`: `0.5 (log pi - log pi_ref)^2` (its gradient is the KL gradient; use as a loss).
    - `k3` / `low_var_kl`: `exp(r) - r - 1` with `r = log pi_ref - log pi` (unbiased,
      non-negative, low variance; GRPO's choice), clamped to [-10, 10] as in verl.

    Args:
        log_prob: (B, T) policy log-probs of the sampled tokens.
        ref_log_prob: (B, T) reference log-probs of the same tokens.
        kl_estimator: one of `KL_ESTIMATORS`.

    Returns:
        (B, T) per-token estimates (mask them yourself).
    """
    if kl_estimator in ("k1", "kl"):
        return log_prob - ref_log_prob
    if kl_estimator == "abs":
        return (log_prob - ref_log_prob).abs()
    if kl_estimator in ("k2", "mse"):
        return 0.5 * (log_prob - ref_log_prob).square()
    if kl_estimator in ("k3", "low_var_kl"):
        log_ratio = (ref_log_prob - log_prob).clamp(-20, 20)
        return (log_ratio.exp() - log_ratio - 1).clamp(-10, 10)
    close = difflib.get_close_matches(str(kl_estimator), KL_ESTIMATORS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"expected a KL estimator in {list(KL_ESTIMATORS)}, got {kl_estimator!r}.{hint}"
    )


# --------------------------------------------------------------------------- aggregation

LOSS_AGG_MODES = (
    "token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)


def agg_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    norm_constant: float | None = None,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar, as verl's `agg_loss`.

    Modes (TRL `loss_type` equivalents in brackets):

    - `token-mean`: sum over all tokens / number of tokens [`dapo`, or `bnpo` per micro-batch].
      Every token counts the same, so long answers weigh more.
    - `seq-mean-token-sum`: per-sequence token sum, averaged over sequences.
    - `seq-mean-token-mean`: per-sequence token mean, averaged over sequences [`grpo`];
      every sequence counts the same (length-biased gradient per token).
    - `seq-mean-token-sum-norm`: per-sequence token sum / `norm_constant`, averaged over
      sequences [`dr_grpo` with the max completion length]: a constant normaliser, unbiased.

    Micro-batching: pass the totals of the whole (mini)batch as `num_tokens` / `num_seqs`
    so that summing the micro-batch losses gives exactly the full-batch loss.

    Args:
        loss_mat: (B, T) per-token loss.
        loss_mask: (B, T) 1.0 where the token counts.
        loss_agg_mode: one of `LOSS_AGG_MODES`.
        num_tokens: token count to divide by (default: `loss_mask.sum()` here).
        num_seqs: sequence count to divide by (default: rows with >= 1 token here).
        norm_constant: `seq-mean-token-sum-norm` divisor (default: `T`, as verl).

    Returns:
        Scalar loss.
    """
    if loss_agg_mode == "token-mean":
        denom = loss_mask.sum() if num_tokens is None else num_tokens
        return masked_sum(loss_mat, loss_mask) / torch.as_tensor(denom).clamp(min=1)
    if loss_agg_mode not in LOSS_AGG_MODES:
        close = difflib.get_close_matches(str(loss_agg_mode), LOSS_AGG_MODES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"expected loss_agg_mode in {list(LOSS_AGG_MODES)}, got {loss_agg_mode!r}.{hint}"
        )
    seq_sums = masked_sum(loss_mat, loss_mask, dim=-1)
    seq_lens = loss_mask.sum(dim=-1)
    if num_seqs is None:
        num_seqs = (seq_lens > 0).sum()
    seq_denom = torch.as_tensor(num_seqs).clamp(min=1)
    if loss_agg_mode == "seq-mean-token-sum":
        return seq_sums.sum() / seq_denom
    if loss_agg_mode == "seq-mean-token-mean":
        return (seq_sums / seq_lens.clamp(min=1)).sum() / seq_denom
    constant = float(loss_mask.shape[-1]) if norm_constant is None else float(norm_constant)
    if constant <= 0:
        raise ValueError(f"expected norm_constant > 0, got {constant}")
    return seq_sums.sum() / constant / seq_denom


# --------------------------------------------------------------------------- losses


@register_policy_loss("vanilla")
def compute_policy_loss_vanilla(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float | None = None,
    loss_agg_mode: str = "token-mean",
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    norm_constant: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip token loss (arXiv 1707.06347) with asymmetric clip and optional dual clip.

    Per token, with `rho = exp(log_prob - old_log_prob)`:
    `L = max(-A rho, -A clip(rho, 1 - low, 1 + high))`. A larger `clip_ratio_high` (DAPO's
    "clip-higher", 0.28) lets low-probability tokens grow. Dual clip (arXiv 1912.09729)
    additionally bounds the loss of negative-advantage tokens by `-A c` (c > 1) so that a
    huge ratio on a bad token cannot dominate the batch.

    Args:
        old_log_prob: (B, T) behaviour log-probs.
        log_prob: (B, T) current log-probs (with grad).
        advantages: (B, T).
        response_mask: (B, T).
        clip_ratio_low: lower clip epsilon.
        clip_ratio_high: upper clip epsilon.
        clip_ratio_c: dual-clip constant (> 1), or None to disable.
        loss_agg_mode: see `agg_loss`.
        num_tokens: see `agg_loss`.
        num_seqs: see `agg_loss`.
        norm_constant: see `agg_loss`.

    Returns:
        `(loss, metrics)`; metrics `actor/pg_clipfrac`, `actor/pg_clipfrac_lower`,
        `actor/ppo_kl` (k1 of old vs new) and `actor/approx_kl` (k3), as floats.
    """
    if clip_ratio_c is not None and clip_ratio_c <= 1.0:
        raise ValueError(f"expected clip_ratio_c > 1 for dual clip, got {clip_ratio_c}")
    neg_log_ratio = (log_prob - old_log_prob).clamp(-20.0, 20.0)
    ratio = torch.exp(neg_log_ratio)
    losses1 = -advantages * ratio
    losses2 = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clipped = torch.maximum(losses1, losses2)
    pg_clipfrac = masked_mean(torch.gt(losses2, losses1).float(), response_mask)
    pg_losses = clipped
    pg_clipfrac_lower = torch.zeros((), device=log_prob.device)
    if clip_ratio_c is not None:
        losses3 = -advantages * clip_ratio_c
        dual = torch.minimum(losses3, clipped)
        pg_clipfrac_lower = masked_mean(
            (torch.gt(clipped, losses3) & (advantages < 0)).float(), response_mask
        )
        pg_losses = torch.where(advantages < 0, dual, clipped)
    loss = agg_loss(
        pg_losses,
        response_mask,
        loss_agg_mode,
        num_tokens=num_tokens,
        num_seqs=num_seqs,
        norm_constant=norm_constant,
    )
    with torch.no_grad():
        ppo_kl = masked_mean(-neg_log_ratio, response_mask)
        approx_kl = masked_mean(ratio - 1 - neg_log_ratio, response_mask)
    metrics = {
        "actor/pg_clipfrac": float(pg_clipfrac),
        "actor/pg_clipfrac_lower": float(pg_clipfrac_lower),
        "actor/ppo_kl": float(ppo_kl),
        "actor/approx_kl": float(approx_kl),
    }
    return loss, metrics


def compute_value_loss(
    vpreds: torch.Tensor,
    values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    cliprange_value: float | None = 0.2,
    loss_agg_mode: str = "token-mean",
    num_tokens: float | torch.Tensor | None = None,
    num_seqs: float | torch.Tensor | None = None,
    norm_constant: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss `0.5 max((V - R)^2, (clip(V, V_old +- c) - R)^2)`, as verl/CleanRL.

    Args:
        vpreds: (B, T) current value predictions (with grad).
        values: (B, T) values at rollout time.
        returns: (B, T) regression targets.
        response_mask: (B, T).
        cliprange_value: clip range around the old values; None disables clipping.
        loss_agg_mode: see `agg_loss`.
        num_tokens: see `agg_loss`.
        num_seqs: see `agg_loss`.
        norm_constant: see `agg_loss`.

    Returns:
        `(loss, metrics)` with `critic/vf_clipfrac`.
    """
    losses1 = (vpreds - returns) ** 2
    if cliprange_value is None:
        losses, clipfrac = losses1, torch.zeros(())
    else:
        clipped_pred = values + (vpreds - values).clamp(-cliprange_value, cliprange_value)
        losses2 = (clipped_pred - returns) ** 2
        losses = torch.maximum(losses1, losses2)
        clipfrac = masked_mean(torch.gt(losses2, losses1).float(), response_mask)
    loss = 0.5 * agg_loss(
        losses,
        response_mask,
        loss_agg_mode,
        num_tokens=num_tokens,
        num_seqs=num_seqs,
        norm_constant=norm_constant,
    )
    return loss, {"critic/vf_clipfrac": float(clipfrac)}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """`1 - Var(R - V) / Var(R)` over masked tokens: 1 = perfect critic, <= 0 = useless."""
    var_returns = masked_var(returns, mask)
    if var_returns <= 0:
        return float("nan")
    return float(1 - masked_var(returns - values, mask) / var_returns)
