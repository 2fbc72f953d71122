"""Log-probabilities of given tokens under a causal LM — the one forward pass every learner needs.

GRPO/PPO/REINFORCE++ need per-token log-probs (for ratios and KL), DPO needs per-sequence
sums; both come from `token_logprobs`, so the alignment convention (value at `t` is the
log-prob of the token at `t`) and the memory-saving gather live in one place.
"""

from __future__ import annotations

import torch
from torch import nn

from agents.batch import TrainBatch

__all__ = [
    "micro_batches",
    "no_grad_token_logprobs",
    "selective_log_softmax",
    "sequence_logprobs",
    "token_logprobs",
]


def selective_log_softmax(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`log_softmax(logits).gather(tokens)` without materialising the (…, V) log-softmax.

    Args:
        logits: (B, T, V) float logits.
        tokens: (B, T) token ids.

    Returns:
        (B, T) log-probabilities of `tokens`, in float32.
    """
    logits = logits.float()
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    value_head: nn.Module | None = None,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-token log-probs of `input_ids` under `model`, aligned with token positions.

    Args:
        model: a causal LM returning `.logits` (and `.hidden_states` if `value_head`).
        input_ids: (B, L) token ids.
        attention_mask: (B, L) 1 on real tokens.
        temperature: divide the logits by this before the softmax (1 = the model itself).
        value_head: module mapping last hidden states (B, L, H) to values (B, L, 1), for PPO.
        with_entropy: also return the per-position entropy of the next-token distribution
            (no gradient; a diagnostic).

    Returns:
        `(logprobs, values, entropy)`: logprobs (B, L) with column 0 = 0 (the first token
        has no prediction); values (B, L) (value of the state *before* each token, i.e. of
        the prefix ending at `t - 1`, aligned like the log-probs) or None; entropy (B, L)
        or None.
    """
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        output_hidden_states=value_head is not None,
        use_cache=False,
    )
    logits = out.logits[:, :-1]
    if temperature != 1.0:
        logits = logits / temperature
    lp = selective_log_softmax(logits, input_ids[:, 1:])
    zero = lp.new_zeros(lp.shape[0], 1)
    logprobs = torch.cat([zero, lp], dim=1)
    values = None
    if value_head is not None:
        hidden = out.hidden_states[-1][:, :-1]
        v = value_head(hidden.to(next(value_head.parameters()).dtype)).squeeze(-1).float()
        values = torch.cat([zero, v], dim=1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            logits_f = logits.float()
            p = torch.softmax(logits_f, dim=-1)
            ent = torch.logsumexp(logits_f, dim=-1) - (p * logits_f).sum(-1)
            entropy = torch.cat([zero.detach(), ent], dim=1)
    return logprobs, values, entropy


def sequence_logprobs(model: nn.Module, batch: TrainBatch) -> torch.Tensor:
    """Sum of response-token log-probs per sequence (prompt and prefix excluded), for DPO.

    Args:
        model: a causal LM.
        batch: a `TrainBatch` on the model's device.

    Returns:
        (B,) `sum_t response_mask[t] * log pi(x_t | x_<t)`, with gradient if enabled.
    """
    logprobs, _, _ = token_logprobs(model, batch.input_ids, batch.attention_mask)
    return (logprobs * batch.response_mask).sum(dim=-1)


def micro_batches(lengths: torch.Tensor, token_budget: int | None) -> list[list[int]]:
    """Split rows into micro-batches whose padded size `rows * max_len` fits `token_budget`.

    Rows are sorted by length (longest first) and packed greedily, which keeps padding low.
    A row longer than the budget gets a micro-batch of its own. The gradient does not
    depend on the split, because losses are normalised by whole-minibatch totals.

    Args:
        lengths: (n,) real token count per row.
        token_budget: max padded tokens per micro-batch; None = everything in one.

    Returns:
        Lists of row positions (into `lengths`).
    """
    n = len(lengths)
    if token_budget is None:
        return [list(range(n))] if n else []
    if token_budget < 1:
        raise ValueError(f"expected token_budget >= 1 or None, got {token_budget}")
    order = sorted(range(n), key=lambda i: -int(lengths[i]))
    out: list[list[int]] = []
    current: list[int] = []
    for i in order:
        max_len = int(lengths[current[0]]) if current else int(lengths[i])
        if current and (len(current) + 1) * max_len > token_budget:
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out


@torch.no_grad()
def no_grad_token_logprobs(
    model: nn.Module,
    batch: TrainBatch,
    *,
    token_budget: int | None,
    temperature: float = 1.0,
    value_head: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, L) log-probs (and values) of a whole batch in eval mode, micro-batched by tokens."""
    was_training = model.training
    model.eval()
    B, L = batch.input_ids.shape
    logprobs = torch.zeros(B, L, device=batch.input_ids.device)
    values = torch.zeros(B, L, device=batch.input_ids.device) if value_head is not None else None
    try:
        for micro in micro_batches(batch.seq_lengths, token_budget):
            rows = torch.tensor(micro, device=batch.input_ids.device)
            mb = batch.select(rows)
            width = mb.input_ids.shape[1]
            lp, v, _ = token_logprobs(
                model,
                mb.input_ids,
                mb.attention_mask,
                temperature=temperature,
                value_head=value_head,
            )
            logprobs[rows, :width] = lp * mb.attention_mask
            if values is not None and v is not None:
                values[rows, :width] = v * mb.attention_mask
    finally:
        model.train(was_training)
    return logprobs, values
