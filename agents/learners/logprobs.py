"""Log-probabilities of given tokens under a causal LM — the one forward pass every learner needs.

GRPO/PPO/REINFORCE++ need per-token log-probs (for ratios and KL), DPO needs per-sequence
sums; both come from `token_logprobs`, so the alignment convention (value at `t` is the
log-prob of the token at `t`) and the memory-saving gather live in one place.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from torch import nn

from agents.batch import TrainBatch

__all__ = [
    "micro_batches",
    "no_grad_token_logprobs",
    "selective_log_softmax",
    "sequence_logprobs",
    "token_logprobs",
    "LOGIT_CHUNK_TOKENS",
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


LOGIT_CHUNK_TOKENS = 256
"""Positions whose full-vocabulary logits exist at once (256 x 49k vocab x 4 B = 50 MB)."""

_SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def _decoder_and_head(model: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    """The model's trunk and LM head when its logits are exactly `head(trunk(x))`."""
    get_decoder = getattr(model, "get_decoder", None)
    get_head = getattr(model, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None, None
    config = getattr(model, "config", None)
    if any(getattr(config, name, None) for name in _SCALED_LOGITS):
        return None, None  # logits are post-processed: use the model's own forward
    decoder, head = get_decoder(), get_head()
    if decoder is None or head is None or decoder is model:
        return None, None
    return decoder, head


def _chunk_logprobs(
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    head: nn.Module,
    temperature: float,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(n,) log-probs of `tokens` (and entropies) from (n, H) hidden states, in float32."""
    logits = head(hidden).float()
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, tokens[:, None]).squeeze(-1) - lse
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logprobs, entropy


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    value_head: nn.Module | None = None,
    with_entropy: bool = False,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-token log-probs of `input_ids` under `model`, aligned with token positions.

    Memory: the trunk runs once; the LM head then turns the hidden states into logits
    `LOGIT_CHUNK_TOKENS` positions at a time, only at `positions`, and with gradient
    enabled each chunk is recomputed in backward (activation checkpointing) instead of
    kept. So the (B, L, V) float32 logits of the whole batch never exist: for 16 x 150
    tokens and SmolLM2's 49k vocabulary that is 470 MB per copy, and a plain forward plus
    log-softmax, entropy and backward holds several copies.

    Args:
        model: a causal LM (`get_decoder()` + `get_output_embeddings()`; models whose
            logits are scaled or soft-capped use their own forward instead).
        input_ids: (B, L) token ids.
        attention_mask: (B, L) 1 on real tokens.
        temperature: divide the logits by this before the softmax (1 = the model itself).
        value_head: module mapping last hidden states (B, L, H) to values (B, L, 1), for PPO.
        with_entropy: also return the per-position entropy of the next-token distribution
            (no gradient; a diagnostic).
        positions: (B, L) mask of the tokens whose log-prob is needed (e.g. the response
            mask); None = every real token. Elsewhere the outputs are 0.

    Returns:
        `(logprobs, values, entropy)`: logprobs (B, L) with column 0 = 0 (the first token
        has no prediction); values (B, L) (value of the state *before* each token, i.e. of
        the prefix ending at `t - 1`, aligned like the log-probs) or None; entropy (B, L)
        or None.
    """
    decoder, head = _decoder_and_head(model)
    if decoder is None or head is None:
        return _full_logits_logprobs(
            model, input_ids, attention_mask, temperature, value_head, with_entropy
        )
    hidden = decoder(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state[:, :-1]  # position t predicts token t + 1
    B, L = input_ids.shape
    wanted = attention_mask[:, 1:] > 0
    if positions is not None:
        wanted = wanted & (positions[:, 1:] > 0)
    flat = wanted.reshape(-1).nonzero().squeeze(-1)  # indices into the (B, L - 1) grid
    h = hidden.reshape(B * (L - 1), -1)[flat]
    targets = input_ids[:, 1:].reshape(-1)[flat]
    checkpointed = torch.is_grad_enabled() and h.requires_grad
    lp_chunks, ent_chunks = [], []
    for start in range(0, len(flat), LOGIT_CHUNK_TOKENS):
        args = (h[start : start + LOGIT_CHUNK_TOKENS], targets[start : start + LOGIT_CHUNK_TOKENS],
                head, temperature, with_entropy)
        if checkpointed:
            lp, ent = torch.utils.checkpoint.checkpoint(_chunk_logprobs, *args, use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(*args)
        lp_chunks.append(lp)
        ent_chunks.append(ent)
    zero = torch.zeros(B, 1, device=input_ids.device)
    grid = torch.zeros(B * (L - 1), device=input_ids.device)

    def scatter(chunks: list[torch.Tensor]) -> torch.Tensor:
        values = torch.cat(chunks) if chunks else grid[:0]
        return torch.cat([zero, grid.index_put((flat,), values).reshape(B, L - 1)], dim=1)

    logprobs = scatter(lp_chunks)
    entropy = scatter(ent_chunks).detach() if with_entropy else None  # type: ignore[arg-type]
    values = None
    if value_head is not None:
        v = value_head(hidden.to(next(value_head.parameters()).dtype)).squeeze(-1).float()
        values = torch.cat([zero, v], dim=1)
    return logprobs, values, entropy


def _full_logits_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float,
    value_head: nn.Module | None,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """`token_logprobs` through the model's own forward (full (B, L, V) logits)."""
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
    logprobs, _, _ = token_logprobs(
        model, batch.input_ids, batch.attention_mask, positions=batch.response_mask
    )
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
    """(B, L) log-probs (and values) of a whole batch in eval mode, micro-batched by tokens.

    Log-probs are computed at response positions only (0 elsewhere): ratios and KL terms
    are only ever taken there.
    """
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
                positions=mb.response_mask,
            )
            logprobs[rows, :width] = lp * mb.attention_mask
            if values is not None and v is not None:
                values[rows, :width] = v * mb.attention_mask
    finally:
        model.train(was_training)
    return logprobs, values
