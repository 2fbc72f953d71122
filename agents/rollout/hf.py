"""Rollout backend over HF `generate`: batched, left padded, CPU or GPU, no extra engine.

Why keep it next to vLLM: it shares the training model (no weight sync, no second copy in
memory), runs anywhere `transformers` runs, and is the reference the vLLM backend is
checked against.

Log-probabilities: `response_logprobs[k]` is the log-probability of the sampled token under
the distribution it was *sampled from*: the model's logits divided by `temperature`, then
top-p truncated and renormalised (HF's processed scores). With `temperature == 0` (greedy)
it is the log-probability under the untempered model (temperature 1). Learners recompute
log-probs by default, so these serve diagnostics and importance-sampling checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from agents.policy import Policy
from agents.rollout.base import Rollout, RolloutRequest, SamplingConfig, encode_request

__all__ = ["HFBackend", "default_stop_token_ids"]

# End-of-turn tokens of common chat templates (ChatML/SmolLM2/Qwen, Llama 3, Gemma).
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|endoftext|>")


def default_stop_token_ids(tokenizer: object, model: object | None = None) -> list[int]:
    """EOS ids to stop at: the tokenizer's EOS, the model's generation EOS, end-of-turn tokens.

    Stopping at the chat template's end-of-turn token (`<|im_end|>` for SmolLM2) matters:
    stopping only at `<|endoftext|>` would let the model write the next user turn.
    """
    ids: list[int] = []

    def add(value: object) -> None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(getattr(tokenizer, "eos_token_id", None))
    gen_cfg = getattr(model, "generation_config", None)
    if gen_cfg is not None:
        add(gen_cfg.eos_token_id)
    vocab = tokenizer.get_vocab()
    for tok in _END_OF_TURN:
        if tok in vocab:
            add(vocab[tok])
    return ids


class _SampledLogprobs(LogitsProcessor):
    """Records log-probs of sampled tokens from the final processed scores, O(B·V) memory.

    Placed after every warper. At step k+1 `input_ids[:, -1]` is the token sampled at step k,
    so only the previous step's log-softmax is kept (unlike `output_scores`, which keeps all
    steps: 256 steps × 16 rows × 49k vocab × 4 B = 800 MB).
    """

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """(b, steps) log-probs, given the tokens sampled at the last step."""
        if self.previous is not None:
            self.steps.append(self.previous.gather(-1, last_tokens[:, None]).squeeze(-1))
        return torch.stack(self.steps, dim=1)


class HFBackend:
    """`RolloutBackend` over `model.generate`.

    Args:
        policy: the training `Policy` (model and tokenizer are shared, not copied).
        batch_size: rollouts per `generate` call; bounds memory (KV cache, logits).
        stop_token_ids: tokens that end a response; default `default_stop_token_ids`.

    Example:
        >>> backend = HFBackend(load_policy())                     # doctest: +SKIP
        >>> req = RolloutRequest([{"role": "user", "content": "2+3?"}], prefix="2+3", n=4)
        >>> rollouts = backend.generate([req], SamplingConfig(seed=0))  # doctest: +SKIP
    """

    def __init__(
        self,
        policy: Policy,
        *,
        batch_size: int = 16,
        stop_token_ids: Sequence[int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"expected batch_size >= 1, got {batch_size}")
        self.policy = policy
        self.batch_size = batch_size
        tok = policy.tokenizer
        self.stop_token_ids = (
            list(stop_token_ids)
            if stop_token_ids is not None
            else default_stop_token_ids(tok, policy.model)
        )
        if not self.stop_token_ids:
            raise ValueError("expected at least one stop token id, got none from the tokenizer")
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.stop_token_ids[0]
        self.pad_token_id = int(pad)

    def sync_weights(self, model: object) -> None:
        """No-op when `model` is the policy's own model (the usual case: weights are shared)."""
        if model is self.policy.model:
            return
        self.policy.model.load_state_dict(model.state_dict())  # type: ignore[attr-defined]

    @torch.no_grad()
    def generate(
        self, requests: Sequence[RolloutRequest], sampling: SamplingConfig
    ) -> list[Rollout]:
        """Return `sum(r.n for r in requests)` rollouts, grouped in request order.

        Deterministic for a given `sampling.seed`, requests and `batch_size`: the global
        torch RNG is forked and seeded, so the caller's RNG stream is left untouched.
        """
        slots: list[tuple[int, list[int], list[int]]] = []
        for i, req in enumerate(requests):
            if req.n < 1:
                raise ValueError(f"expected RolloutRequest.n >= 1, got {req.n} for request {i}")
            prompt_ids, prefix_ids = encode_request(self.policy.tokenizer, req)
            slots.extend((i, prompt_ids, prefix_ids) for _ in range(req.n))
        model = self.policy.model
        was_training = model.training
        model.eval()
        devices = [self.policy.device] if self.policy.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices, enabled=sampling.seed is not None):
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                rollouts: list[Rollout] = []
                for start in range(0, len(slots), self.batch_size):
                    chunk = slots[start : start + self.batch_size]
                    rollouts.extend(self._generate_chunk(chunk, requests, sampling))
        finally:
            model.train(was_training)
        return rollouts

    def _generate_chunk(
        self,
        chunk: list[tuple[int, list[int], list[int]]],
        requests: Sequence[RolloutRequest],
        sampling: SamplingConfig,
    ) -> list[Rollout]:
        device = self.policy.device
        contexts = [p + q for _, p, q in chunk]
        width = max(len(c) for c in contexts)
        input_ids = torch.full((len(chunk), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, ctx in enumerate(contexts):  # left padding: generation starts at column `width`
            input_ids[row, width - len(ctx) :] = torch.tensor(ctx)
            attention_mask[row, width - len(ctx) :] = 1
        do_sample = sampling.temperature > 0
        processors = LogitsProcessorList()
        if do_sample and sampling.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
        if do_sample and sampling.top_p < 1.0:
            processors.append(TopPLogitsWarper(sampling.top_p))
        recorder = _SampledLogprobs()
        processors.append(recorder)
        # Warpers are passed explicitly (and HF's own switched to neutral values) so the
        # recorder sees the final distribution; top_k=0 because HF would default to 50.
        config = GenerationConfig(
            do_sample=do_sample,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            repetition_penalty=1.0,
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_token_id,
            use_cache=True,
        )
        sequences = self.policy.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=config,
            logits_processor=processors,
        )
        generated = sequences[:, width:].cpu()
        logprobs = recorder.finish(sequences[:, -1]).cpu()
        stops = torch.tensor(self.stop_token_ids)
        out = []
        for row, (req_index, prompt_ids, prefix_ids) in enumerate(chunk):
            tokens = generated[row]
            hits = torch.isin(tokens, stops).nonzero()
            if len(hits):
                n, finish = int(hits[0]) + 1, "stop"
            else:
                n, finish = len(tokens), "length"
            response_ids = tokens[:n].tolist()
            req = requests[req_index]
            out.append(
                Rollout(
                    prompt_ids=list(prompt_ids),
                    prefix_ids=list(prefix_ids),
                    response_ids=response_ids,
                    response_logprobs=logprobs[row, :n].tolist(),
                    text=self.policy.tokenizer.decode(response_ids, skip_special_tokens=True),
                    prefix=req.prefix,
                    finish_reason=finish,
                    request_index=req_index,
                    tag=req.tag,
                    extra={"logprobs": "sampling"},
                )
            )
        return out
