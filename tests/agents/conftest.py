"""Tiny offline policy for fast tests; nothing is downloaded.

A byte-level tokenizer with a ChatML template and a randomly initialised 2-layer Llama.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from agents.policy import Policy

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE without merges: one token per byte, plus ChatML special tokens."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):  # set order varies per process
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    return fast


def make_tiny_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    return model


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return make_tiny_tokenizer()


@pytest.fixture
def tiny_policy(tiny_tokenizer) -> Policy:
    """A fresh tiny policy per test (learner tests mutate the weights)."""
    model = make_tiny_model(len(tiny_tokenizer))
    return Policy(model=model, tokenizer=tiny_tokenizer, name="tiny-llama")


@pytest.fixture
def tiny_dir(tmp_path_factory, tiny_policy) -> Path:
    """The tiny policy saved as a model directory (what `--model` takes)."""
    d = tmp_path_factory.mktemp("tiny-model")
    tiny_policy.model.save_pretrained(d)
    tiny_policy.tokenizer.save_pretrained(d)
    return d


@pytest.fixture
def messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": "What is 2+3?"}]


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models(request):
    """Tiny models run faster on one thread, and much faster on a loaded shared machine."""
    if "slow" in request.keywords:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
