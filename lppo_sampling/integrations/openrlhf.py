"""OpenRLHF glue shared by `openrlhf_reward` and `openrlhf_agent` (no openrlhf import here).

OpenRLHF (0.11) has no sampler hook: `prepare_datasets` builds its own shuffled
`StatefulDataLoader`, and rewards are computed inside Ray vLLM actors, far from any
driver-side strategy. The supported loop is therefore file-based, at episode
granularity, and needs no patching of OpenRLHF:

1. `write_prompts(strategy, problems, path, n)` selects and plans `n` samples and writes
   the JSONL prompt file (`--data.input_key input --data.label_key label`); each label
   is JSON carrying `sample_id`, `answer` and, for guided samples, one expert prefix per
   rollout slot (`prefixes`, "" = unguided).
2. OpenRLHF trains one episode on it with `--train.agent_func_path
   .../openrlhf_agent.py` (prefix on the prompt side, never trained) or
   `--reward.remote_url .../openrlhf_reward.py` (no prefixes). Both score each rollout
   and append `{"sample_id", "reward", "guided"}` to the observation log named by
   `$LPPO_OBSERVATION_LOG` (one `O_APPEND` write per line, safe across actors).
3. `feed_observations(strategy, log_path)` folds the log into the strategy; repeat.

Labels and the log are plain JSON so the actors need nothing but this package.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lppo_sampling.batch import GroupResults
from lppo_sampling.integrations._common import (
    check_plan_options,
    check_pool,
    exact_match_score,
    refuse_plan_options,
    unit_rewards,
)
from lppo_sampling.strategy import Strategy

__all__ = [
    "LOG_ENV",
    "encode_label",
    "decode_label",
    "write_prompts",
    "check_prompts",
    "append_observation",
    "feed_observations",
    "feed_observation_files",
    "log_path_for_this_process",
    "default_score",
    "OPENRLHF_OPTIONS",
]

LOG_ENV = "LPPO_OBSERVATION_LOG"
# per-rollout plan options the prompt file can carry: a restructured question (clpo) is
# written as the prompt; the label keeps the original answer, as lppo_env scores it
OPENRLHF_OPTIONS: frozenset[str] = frozenset({"question", "restructure"})
_NAME = "OpenRLHF's prompt-file loop"


def encode_label(sample_id: int | str, answer: str, prefixes: list[str] | None = None) -> str:
    """JSON label: the stable key, the gold answer and optional per-slot prefixes."""
    if not isinstance(sample_id, (int, str)) or isinstance(sample_id, bool):
        raise ValueError(f"sample_id must be int or str, got {type(sample_id).__name__}")
    out: dict[str, Any] = {"sample_id": sample_id, "answer": str(answer)}
    if prefixes and any(prefixes):
        out["prefixes"] = [str(p) for p in prefixes]
    return json.dumps(out, ensure_ascii=False)


def decode_label(label: Any) -> dict:
    """Parse a label written by `encode_label`; `ValueError` naming what is wrong."""
    if isinstance(label, Mapping):
        meta = dict(label)
    else:
        try:
            meta = json.loads(label)
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"OpenRLHF label is not lppo JSON ({str(label)[:80]!r}); write the prompt file "
                "with lppo_sampling.integrations.openrlhf.write_prompts"
            ) from e
    if not isinstance(meta, dict) or "sample_id" not in meta or "answer" not in meta:
        raise ValueError(f"OpenRLHF label needs 'sample_id' and 'answer', got {meta!r:.120}")
    prefixes = meta.get("prefixes", [])
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        raise ValueError("label 'prefixes' must be a list of strings")
    meta["prefixes"] = prefixes
    return meta


def _field(problem: Any, name: str) -> Any:
    return problem.get(name) if isinstance(problem, Mapping) else getattr(problem, name, None)


def write_prompts(
    strategy: Strategy,
    problems: Mapping[Any, Any],
    path: str | os.PathLike,
    n: int,
    *,
    prefix_fn: Callable[[Any, float], str] | None = None,
    input_key: str = "input",
    label_key: str = "label",
) -> Path:
    """Select `n` samples, plan their rollouts and write OpenRLHF's JSONL prompt file.

    A plan's restructured question (clpo's `{"question": ...}` option) is written as the
    prompt, and the label keeps the original answer (the rewrite keeps the answer; the
    reward is verified against the original, as in lppo_env). Other per-rollout options
    (length_curriculum's token budget, cog_drift's format) cannot reach OpenRLHF's
    rollouts and scorers: such a strategy is refused before anything is written.

    Args:
        strategy: the strategy; its `group_size` must equal OpenRLHF's
            `n_samples_per_prompt`. Problems not yet in its pool are registered (with
            `has_solution` = a prefix can be built, i.e. `prefix_fn` is given and the
            problem has a non-empty `solution`).
        problems: key -> problem: any object with `question`, `answer` and optional
            `solution` attributes (e.g. an lppo_env `MathProblem`) or a mapping with
            those keys.
        path: output JSONL path.
        n: prompts in the file (one episode).
        prefix_fn: `f(problem, ratio) -> str`; None writes no prefixes.
        input_key: JSONL key of the question (OpenRLHF `--data.input_key`).
        label_key: JSONL key of the label (OpenRLHF `--data.label_key`).
    """
    if not problems:
        raise ValueError("problems is empty")
    refuse_plan_options(strategy, "write_prompts(strategy=...)", _NAME, OPENRLHF_OPTIONS)
    keys = list(problems)
    has = [prefix_fn is not None and bool(_field(problems[k], "solution")) for k in keys]
    arr = np.asarray(keys, dtype=object) if isinstance(keys[0], str) else np.asarray(keys)
    strategy.add_samples(arr, has_solution=np.asarray(has, bool))
    check_pool(strategy, "write_prompts(strategy=...)")
    picked = strategy.select(n)
    plan = strategy.plan(picked)
    check_plan_options(plan, OPENRLHF_OPTIONS, _NAME)
    options = plan.options or ({},) * len(plan)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for k, ratios, opt in zip(picked.tolist(), plan.prefix_ratios, options, strict=True):
            p = problems[k]
            prefixes = [prefix_fn(p, float(r)) if (r > 0 and prefix_fn) else "" for r in ratios]
            row = {input_key: opt.get("question") or _field(p, "question"),
                   label_key: encode_label(k, _field(p, "answer"), prefixes)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def check_prompts(path: str | os.PathLike, group_size: int, *, input_key: str = "input",
                  label_key: str = "label") -> int:
    """Check a prompt file before launching OpenRLHF on it; return its number of rows.

    OpenRLHF's executors log a failing reward function at INFO level and go on with a
    `None` reward, so a bad label would be lost silently mid-run; this check fails at
    start-up instead, naming file, row and field.

    Args:
        path: the JSONL file (as written by `write_prompts`).
        group_size: `--rollout.n_samples_per_prompt`; each label's `prefixes` must have
            one entry per rollout slot.
        input_key: OpenRLHF's `--data.input_key`.
        label_key: OpenRLHF's `--data.label_key`.

    Raises:
        ValueError: `path:row: field: problem`.
    """
    n = 0
    with open(path, encoding="utf-8") as f:
        for row, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{row}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not a JSON object ({e.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            if not isinstance(rec.get(input_key), str) or not rec[input_key].strip():
                raise ValueError(f"{where}: {input_key}: expected a non-empty question string "
                                 "(--data.input_key)")
            try:
                meta = decode_label(rec.get(label_key))
            except ValueError as e:
                raise ValueError(f"{where}: {label_key}: {e}") from None
            if meta["prefixes"] and len(meta["prefixes"]) != group_size:
                raise ValueError(
                    f"{where}: {label_key}.prefixes has {len(meta['prefixes'])} entries but "
                    f"group_size={group_size} (--rollout.n_samples_per_prompt); write the file "
                    "with a strategy of that group size")
            n += 1
    if n == 0:
        raise ValueError(f"{path}: no prompts")
    return n


def log_path_for_this_process(path: str | os.PathLike) -> str:
    """`path` with `{host}` and `{pid}` filled in for the calling process.

    O_APPEND is atomic on a local filesystem but not across NFS clients, so on several
    nodes give each writer its own file on the shared storage, e.g.
    `/shared/run/obs/{host}-{pid}.jsonl`, and read them with `feed_observation_files`.
    """
    return str(path).format(host=socket.gethostname(), pid=os.getpid())


def append_observation(sample_id: int | str, reward: float, guided: bool,
                       path: str | os.PathLike | None = None) -> None:
    """Append one rollout's outcome to the observation log (no-op without a path).

    One `os.write` of one short line on an `O_APPEND` descriptor, so concurrent actors
    of one machine never interleave partial lines. `{host}`/`{pid}` in the path are
    filled in (`log_path_for_this_process`).
    """
    path = path if path is not None else os.environ.get(LOG_ENV)
    if not path:
        return
    path = log_path_for_this_process(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"sample_id": sample_id, "reward": float(reward), "guided": bool(guided)})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _read_log(path: str | os.PathLike, offset: int) -> tuple[list, list, list, int]:
    """Complete lines of one log after byte `offset`: keys, rewards, guided, new offset."""
    keys, rewards, guided = [], [], []
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # ignore a line still being written
    for i, raw in enumerate(data[:end].splitlines()):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            keys.append(rec["sample_id"])
            rewards.append(float(rec["reward"]))
            guided.append(bool(rec["guided"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path}: bad observation line {i} after offset {offset}: {raw[:80]!r}"
            ) from e
    return keys, rewards, guided, offset + end


def _observe(strategy: Strategy, keys: list, rewards: list, guided: list, source: str) -> None:
    if keys:
        k = np.asarray(keys, dtype=object) if isinstance(keys[0], str) else np.asarray(keys)
        r = unit_rewards(rewards, (0.0, 1.0), source)
        strategy.observe(GroupResults.from_flat(k, r, guided=guided))


def feed_observations(strategy: Strategy, path: str | os.PathLike, offset: int = 0) -> int:
    """Observe every complete log line after byte `offset`; return the new offset.

    Call once per episode; pass the returned offset next time (or truncate the log).
    All lines read in one call form one observation event per sample.
    """
    keys, rewards, guided, end = _read_log(path, offset)
    _observe(strategy, keys, rewards, guided, str(path))
    return end


def feed_observation_files(strategy: Strategy, pattern: str | os.PathLike,
                           offsets: Mapping[str, int] | None = None) -> dict[str, int]:
    """`feed_observations` over every per-process log matching `pattern` ({host}, {pid}).

    All new lines of all files form one observation event, as with one shared log.

    Args:
        strategy: the strategy to feed.
        pattern: the `$LPPO_OBSERVATION_LOG` value, e.g. `/shared/obs/{host}-{pid}.jsonl`.
        offsets: the dict this function returned last time (None the first time).

    Returns:
        file -> byte offset after its last complete line; pass it back next time.
    """
    glob = str(pattern).replace("{host}", "*").replace("{pid}", "*")
    files = sorted(str(f) for f in Path(glob).parent.glob(Path(glob).name))
    out = dict(offsets or {})
    keys, rewards, guided = [], [], []
    for f in files:
        k, r, g, out[f] = _read_log(f, out.get(f, 0))
        keys += k
        rewards += r
        guided += g
    _observe(strategy, keys, rewards, guided, glob)
    return out


def default_score(text: str, answer: str) -> float:
    r"""Score a response (prefix + continuation) by exact match of its final answer.

    Dependency-free so that the Ray actors need nothing but this package. For
    math-verify, pass a scorer built from lppo_env to `make_agent_executor` /
    `make_reward_func` in a two-line module (docs/integrations.md shows it); this
    package never imports lppo_env itself.
    """
    return exact_match_score(text, answer)
