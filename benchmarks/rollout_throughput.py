"""Rollout throughput: HF `generate` (`HFBackend`) vs vLLM (`VLLMBackend`) for the default model.

Why: rollouts dominate an RLVR step, and the vLLM backend only earns its extra install and
its second copy of the weights if it is much faster (goal on the 2-core reference CPU:
at least 5x HF). This script measures generated tokens per second for the same requests
on both backends and writes one JSON record per device kind (`cpu`, `cuda`), merged into
`benchmarks/results/rollout_throughput.json` so CPU and GPU runs from different machines
accumulate.

Workload (defaults): 32 GSM-style prompts (reasoning-gym `gsm_symbolic`, the embedded data
of `lppo_env`) x 8 samples x up to 128 new tokens at temperature 1. HF is slow on CPU, so
it runs on a subset of the prompts (`--hf-prompts`); tokens/s is the comparable number.
Times exclude model loading and engine start-up (reported separately). The machine may be
shared: `os.getloadavg()` is recorded before and after each measurement.

Run (the `__main__` guard is required: vLLM spawns engine processes):

    python benchmarks/rollout_throughput.py                  # both backends
    python benchmarks/rollout_throughput.py --skip-hf        # vLLM only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, installed or not
from _load import hardware, load_now, load_record, wait_until_quiet  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "rollout_throughput.json"


def make_requests(num_prompts: int, samples: int, seed: int) -> list[Any]:
    """`num_prompts` GSM-style questions as chat requests with `samples` rollouts each."""
    from agents.rollout.base import RolloutRequest
    from lppo_env.default_data import gsm_symbolic_problems

    problems = gsm_symbolic_problems(size=num_prompts, seed=seed)
    if len(problems) < num_prompts:
        raise ValueError(f"expected {num_prompts} problems, got {len(problems)}")
    return [
        RolloutRequest([{"role": "user", "content": p.question}], n=samples, tag=p.id)
        for p in problems[:num_prompts]
    ]


def measure(
    backend: Any, requests: list[Any], sampling: Any, settle: float = 180.0
) -> dict[str, Any]:
    """Generate once and report tokens, wall time and tokens/s.

    First waits (up to `settle` s) for the load of loading the model to decay.
    """
    wait_until_quiet(settle)
    before = load_now()
    start = time.perf_counter()
    rollouts = backend.generate(requests, sampling)
    seconds = time.perf_counter() - start
    tokens = sum(len(r.response_ids) for r in rollouts)
    gate = load_record(before)
    return {
        "valid": gate["valid"],
        **({"invalid_reason": gate["invalid_reason"]} if not gate["valid"] else {}),
        "prompts": len(requests),
        "rollouts": len(rollouts),
        "new_tokens": tokens,
        "mean_response_tokens": round(tokens / max(len(rollouts), 1), 1),
        "finished_by_stop": sum(r.finish_reason == "stop" for r in rollouts),
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "loadavg_before": before,
        "loadavg_after": load_now(),
    }


def run_hf(args: argparse.Namespace, requests: list[Any], sampling: Any) -> dict[str, Any]:
    """Time `HFBackend` on the first `args.hf_prompts` requests."""
    from agents.policy import load_policy
    from agents.rollout.hf import HFBackend

    start = time.perf_counter()
    policy = load_policy(args.model)
    load_seconds = time.perf_counter() - start
    backend = HFBackend(policy, batch_size=args.hf_batch_size)
    result = measure(backend, requests[: args.hf_prompts], sampling, args.settle)
    result.update(
        load_seconds=round(load_seconds, 1),
        batch_size=args.hf_batch_size,
        dtype=str(policy.model.dtype).removeprefix("torch."),
        device=str(policy.device),
    )
    return result


def run_vllm(args: argparse.Namespace, requests: list[Any], sampling: Any) -> dict[str, Any]:
    """Time `VLLMBackend` on all requests, plus one `sync_weights` from the HF policy."""
    import vllm

    from agents.policy import load_policy
    from agents.rollout.vllm import VLLMBackend

    backend = VLLMBackend(args.model, seed=args.seed, enforce_eager=args.enforce_eager)
    try:
        backend.generate(requests[:1], type(sampling)(max_new_tokens=8, seed=args.seed))  # warm-up
        result = measure(backend, requests, sampling, args.settle)
        policy = load_policy(args.model)
        start = time.perf_counter()
        backend.sync_weights(policy.model)
        sync_seconds = time.perf_counter() - start
    finally:
        backend.close()
    result.update(
        engine_start_seconds=round(backend.start_seconds, 1),
        sync_weights_seconds=round(sync_seconds, 2),
        vllm_version=vllm.__version__,
        dtype=backend.dtype,
        enforce_eager=args.enforce_eager,
    )
    return result


def main() -> None:
    """Parse arguments, run the backends, print a table and merge the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model name or HF directory")
    parser.add_argument("--prompts", type=int, default=32, help="prompts for vLLM")
    parser.add_argument("--hf-prompts", type=int, default=4, help="prompts for HF (a subset)")
    parser.add_argument("--hf-batch-size", type=int, default=16, help="HFBackend batch size")
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without compile")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument("--settle", type=float, default=180.0,
                        help="max seconds to wait before each measurement for load <= 1.0")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if not 1 <= args.hf_prompts <= args.prompts:
        parser.error(f"expected 1 <= --hf-prompts <= --prompts, got {args.hf_prompts}")

    import torch

    from agents.rollout.base import SamplingConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device_kind = "cuda" if torch.cuda.is_available() else "cpu"
    requests = make_requests(args.prompts, args.samples, args.seed)
    sampling = SamplingConfig(
        temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    record: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "hardware": hardware(),
        "workload": {
            "model": args.model,
            "prompts": args.prompts,
            "hf_prompts": args.hf_prompts,
            "samples_per_prompt": args.samples,
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "data": "reasoning-gym gsm_symbolic via lppo_env.default_data",
        },
        "loadavg_start": load_now(),
    }
    if not args.skip_hf:
        record["hf"] = run_hf(args, requests, sampling)
    if not args.skip_vllm:
        record["vllm"] = run_vllm(args, requests, sampling)
    record["valid"] = all(record[k]["valid"] for k in ("hf", "vllm") if k in record)
    if "hf" in record and "vllm" in record and record["valid"]:
        record["speedup_vllm_over_hf"] = round(
            record["vllm"]["tokens_per_s"] / record["hf"]["tokens_per_s"], 2
        )
    record["loadavg_end"] = load_now()

    machine = record["hardware"]["cuda"] or record["hardware"]["cpu_model"]
    print(f"\nrollout throughput on {device_kind}: {machine}")
    header = ("backend", "prompts", "rollouts", "tokens", "seconds", "tok/s")
    print(f"{header[0]:<8} " + " ".join(f"{h:>8}" for h in header[1:]))
    for name in ("hf", "vllm"):
        if name in record:
            r = record[name]
            print(
                f"{name:<8} {r['prompts']:>8} {r['rollouts']:>8} {r['new_tokens']:>8} "
                f"{r['seconds']:>8.1f} {r['tokens_per_s']:>8.1f}"
            )
    if "speedup_vllm_over_hf" in record:
        print(f"vLLM / HF speed-up: {record['speedup_vllm_over_hf']}x")
    print(f"load average start/end: {record['loadavg_start']} / {record['loadavg_end']}")
    if not record["valid"]:
        print("INVALID: a measurement started at 1-minute load > 1.5; not a figure to publish")

    results: dict[str, Any] = {}
    if args.out.is_file():
        results = json.loads(args.out.read_text())
    results[device_kind] = record
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
