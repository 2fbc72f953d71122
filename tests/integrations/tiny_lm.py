"""A tiny byte-level BPE tokenizer and random Llama, built in memory (no hub download).

Shared by the pytest fixtures and by scripts the tests launch in other processes
(`accelerate launch`), which cannot use fixtures.
"""

from __future__ import annotations

CHATML = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if not (loop.last and m['role'] == 'assistant') %}<eos>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer():
    """A 300-token byte-level BPE with a ChatML-like template (deterministic)."""
    import tokenizers
    import transformers

    corpus = [f"What is {i}+{i + 1}? Step {i}: add {i} and {i + 1}. The answer is {2 * i + 1}."
              for i in range(50)] + ["<|user|><|assistant|>"]
    tk = tokenizers.Tokenizer(tokenizers.models.BPE())
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    tk.train_from_iterator(corpus, tokenizers.trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>"
    )
    tok.chat_template = CHATML
    return tok


def tiny_model(tok, seed: int = 0):
    """A 2-layer, 64-wide random Llama over `tok`'s vocabulary (same weights for a seed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id))
