"""The rollout contract shared by every generation backend (HF `generate`, vLLM).

Why one contract: learners and the trainer must not care which engine produced a
completion, and the prefix-masking rule ("expert-prefix tokens are never trained")
must hold identically for both. A backend therefore returns plain token lists split
into three parts — prompt, prefix, response — and only the response is trainable.

The prefix is rendered the standard way: the chat template is applied to the messages
plus a *partial assistant turn* holding the prefix, with `continue_final_message=True`
(transformers PR #33198; vLLM `llm.chat(..., continue_final_message=True)`), so the
prefix sits on the prompt side both at generation and at training time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample. Mirrors vLLM `SamplingParams` / HF `GenerationConfig` names.

    Attributes:
        temperature: softmax temperature; 0 means greedy.
        top_p: nucleus mass.
        max_new_tokens: cap on generated tokens per rollout (after any prefix).
        seed: seeds the engine for this call, so a call is reproducible.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig expects temperature >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig expects top_p in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(
                f"SamplingConfig expects max_new_tokens >= 1, got {self.max_new_tokens}"
            )


@dataclass(frozen=True)
class RolloutRequest:
    """One prompt to complete `n` times, all from the same assistant prefix.

    A request carries either chat `messages` (the backend renders them) or a `prompt`
    already rendered by the environment (`MathReasoningEnv`'s observation, which ends with
    the prefix when guided): the backend then only tokenizes it, so a prompt is rendered
    once, by the env.

    Attributes:
        messages: chat messages (system/user) ending with the user turn.
        prefix: expert-solution prefix that starts the assistant turn ("" = unguided).
        n: number of samples for this (messages, prefix) pair.
        tag: opaque caller data copied to every resulting `Rollout` (e.g. sample key).
        prompt: chat-templated prompt text, ending with the assistant header followed by
            `prefix`; when non-empty it is used instead of `messages`.
    """

    messages: Messages = field(default_factory=list)
    prefix: str = ""
    n: int = 1
    tag: object = None
    prompt: str = ""


def encode_request(tokenizer: object, request: RolloutRequest) -> tuple[list[int], list[int]]:
    """`(prompt_ids, prefix_ids)` of a request: tokenize its rendered prompt, else render."""
    from agents.policy import encode_chat, encode_rendered

    if request.prompt:
        return encode_rendered(tokenizer, request.prompt, request.prefix)  # type: ignore[arg-type]
    return encode_chat(tokenizer, request.messages, request.prefix)  # type: ignore[arg-type]


@dataclass
class Rollout:
    """One generated sequence, split so the loss mask is explicit.

    `prompt_ids + prefix_ids + response_ids` is exactly the token sequence the policy
    conditioned on and produced. Only `response_ids` are trainable.

    Attributes:
        prompt_ids: chat-templated prompt including the assistant header.
        prefix_ids: tokens of the expert prefix inside the assistant turn (may be empty).
        response_ids: generated tokens (includes the EOS token when generation stopped).
        response_logprobs: behaviour-policy log-probability of each response token,
            same length as `response_ids`.
        text: decoded response (without the prefix).
        prefix: the prefix text.
        finish_reason: "stop" (EOS) or "length" (hit max_new_tokens).
        request_index: index of the originating `RolloutRequest`.
        tag: the request's tag.
    """

    prompt_ids: list[int]
    prefix_ids: list[int]
    response_ids: list[int]
    response_logprobs: list[float]
    text: str
    prefix: str = ""
    finish_reason: str = "stop"
    request_index: int = 0
    tag: object = None
    extra: dict = field(default_factory=dict)

    @property
    def context_ids(self) -> list[int]:
        """Prompt plus prefix: everything the policy conditioned on."""
        return self.prompt_ids + self.prefix_ids

    @property
    def full_text(self) -> str:
        """What a verifier should score: the prefix followed by the continuation."""
        return self.prefix + self.text


@runtime_checkable
class RolloutBackend(Protocol):
    """A generation engine. Implementations: `HFBackend`, `VLLMBackend`."""

    def generate(
        self, requests: Sequence[RolloutRequest], sampling: SamplingConfig
    ) -> list[Rollout]:
        """Return `sum(r.n for r in requests)` rollouts, grouped in request order."""
        ...

    def sync_weights(self, model: object) -> None:
        """Load the training model's current weights into the engine (no-op if shared)."""
        ...
