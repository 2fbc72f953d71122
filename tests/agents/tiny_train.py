"""`lppo train` on the tiny test model, for tests that signal or kill a real training process.

As a script::

    python tests/agents/tiny_train.py --model-dir DIR --run-dir RUN [any lppo train flag]

builds the tiny model of conftest.py (`make_tiny_model`, `make_tiny_tokenizer`) into DIR
unless it is there, then runs the real `lppo train` entry point with small defaults (any
flag given overrides them) on one thread, and exits with its status.

From a test, `start_training(...)` runs the same `main` in a child process forked from a
multiprocessing fork server that imported torch, transformers and lppo once: a killed
and resumed run costs a process start of well under a second instead of ~10-40 s of
imports on a loaded 2-core machine. Each child is a real process (own pid, own signal
dispositions, SIGKILL kills it); its stdout and stderr go to `RUN.log`.

`checkpoint_state` / `assert_identical` compare two checkpoints bitwise.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

DEFAULTS = {
    "--steps": "6", "--batch-size": "3", "--group-size": "3", "--max-new-tokens": "12",
    "--eval-size": "0", "--save-every": "1", "--keep-checkpoints": "100", "--lr": "1e-3",
    "--data-kwargs": '{"size": 60}',
}

# what the fork server imports once, so that children start at once
PRELOAD = [
    "torch", "transformers", "transformers.models.llama.modeling_llama", "safetensors.torch",
    "agents.cli", "agents.trainer", "agents.learners", "agents.rollout.hf", "agents.policy",
    "agents.metrics", "lppo_env", "lppo_sampling", "tqdm.auto", "matplotlib.pyplot",
]


def ensure_tiny_model(model_dir: Path) -> Path:
    """Save the tiny policy as an HF directory (atomically: concurrent callers are safe)."""
    model_dir = Path(model_dir)
    if (model_dir / "config.json").is_file():
        return model_dir
    import importlib.util

    # by path: pytest may hold another module named "conftest"
    spec = importlib.util.spec_from_file_location(
        "tiny_model_conftest", Path(__file__).with_name("conftest.py")
    )
    conftest = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(conftest)  # type: ignore[union-attr]
    tok = conftest.make_tiny_tokenizer()
    tmp = model_dir.with_name(f".{model_dir.name}.{os.getpid()}")
    conftest.make_tiny_model(len(tok)).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, model_dir)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return model_dir


def main(argv: list[str]) -> int:
    """Parse `--model-dir` and lppo flags, run `lppo train`, return its exit status."""
    import torch

    torch.set_num_threads(1)
    flags = dict(DEFAULTS)
    rest: list[str] = []
    model_dir = None
    i = 0
    while i < len(argv):
        if argv[i] == "--model-dir":
            model_dir = Path(argv[i + 1])
            i += 2
        elif argv[i].startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            flags[argv[i]] = argv[i + 1]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    if model_dir is None:
        print("tiny_train.py: --model-dir is required", file=sys.stderr)
        return 2
    flags["--model"] = str(ensure_tiny_model(model_dir))
    from agents.cli import main as lppo

    return lppo(["train", "--no-progress", *(x for kv in flags.items() for x in kv), *rest])


# ------------------------------------------------------------------ child processes
def _context() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _child(argv: list[str], log: str, dispositions: dict[int, Any]) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    for signum, disposition in dispositions.items():
        signal.signal(signum, disposition)
    os.environ.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    sys.exit(main(argv))


def start_training(
    model_dir: Path, run_dir: Path, *flags: str, dispositions: dict[int, Any] | None = None
) -> multiprocessing.Process:
    """Start `lppo train` on the tiny model in a child process; output goes to RUN.log.

    Args:
        dispositions: signal -> handler (e.g. `{signal.SIGINT: signal.SIG_IGN}`) set in the
            child before lppo starts, as a shell or job runner would have left them.
    """
    argv = ["--model-dir", str(model_dir), "--run-dir", str(run_dir), *flags]
    proc = _context().Process(
        target=_child, args=(argv, str(log_path(run_dir)), dispositions or {}), daemon=False
    )
    proc.start()
    return proc


def log_path(run_dir: Path) -> Path:
    """Where `start_training` writes the child's stdout and stderr."""
    return Path(f"{run_dir}.log")


# ------------------------------------------------------------------ comparing runs
def checkpoint_state(ckpt: Path) -> dict[str, Any]:
    """Everything a checkpoint holds that a resumed run continues from, loaded."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    with np.load(ckpt / "sampler.npz", allow_pickle=False) as z:
        sampler = {k: z[k] for k in z.files}
    state = json.loads((ckpt / "trainer_state.json").read_text())
    return {
        "model": load_file(str(ckpt / "model" / "model.safetensors")),
        "learner": torch.load(ckpt / "learner.pt", weights_only=False),
        "sampler": sampler,
        "rng": torch.load(ckpt / "rng.pt", weights_only=False),
        "counters": {"step": state["step"], "tokens_generated": state["tokens_generated"]},
    }


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Bitwise equality of nested dicts / sequences of tensors, arrays and scalars."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert a.shape == b.shape and torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{where}: arrays differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def metrics_without_timings(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows minus wall-clock fields (time/*, perf/*), which differ between runs."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/"))} for r in rows]


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(sys.argv[1:]))
