"""Run outputs: metrics as JSONL (one line per step) and learning-curve plots.

JSONL is the contract: plots, `lppo compare` summaries and the README tables are all
derived from it, never typed by hand. Every metric name and its meaning: docs/metrics.md.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter", "read_metrics", "plot_runs", "PLOT_KEYS"]

# metric key -> axis label, in the order they are plotted
PLOT_KEYS: dict[str, str] = {
    "eval/accuracy": "held-out accuracy (pass@1, greedy)",
    "rollout/pass_rate": "unguided training pass rate",
    "rollout/reward_mean": "mean reward (all rollouts)",
    "batch/weight_mean": "mean sample weight",
    "prefix/guided_frac": "guided rollout fraction",
}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; null means "not measured this step"
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


class MetricsWriter:
    """Append-only JSONL writer that flushes every line (a crash loses nothing written)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int, *, key: str = "step") -> None:
        """Drop lines whose `key` (the step counter; SAI-DPO logs "iteration") is > `step`.

        Why: a resumed run redoes every step after its checkpoint, so their lines go.
        """
        if not self.path.exists():
            return
        keep = [r for r in read_metrics(self.path) if r.get(key, 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        line = json.dumps({k: _clean(v) for k, v in record.items()})
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl (a run dir is accepted too); a torn last line is skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"no metrics file at {p}")
    out = []
    lines = p.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break  # torn write from a killed process
            raise ValueError(f"{p}, line {i + 1}: not valid JSON ({e})") from e
    return out


def _series(records: Iterable[dict[str, Any]], key: str, x: str) -> tuple[list, list]:
    xs, ys = [], []
    for r in records:
        if r.get(key) is not None and r.get(x) is not None:
            xs.append(r[x])
            ys.append(r[key])
    return xs, ys


def plot_runs(
    runs: Sequence[str | Path],
    out: str | Path,
    *,
    labels: Sequence[str] | None = None,
    keys: Sequence[str] | None = None,
    x: str = "step",
) -> Path:
    """Plot the curves of one or several runs on one figure (one panel per metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(keys or PLOT_KEYS)
    data = [read_metrics(r) for r in runs]
    labels = list(labels or [Path(r).name for r in runs])
    present = [k for k in keys if any(_series(d, k, x)[0] for d in data)]
    if not present:
        raise ValueError(f"none of {keys} was logged in {list(map(str, runs))}")
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    for ax, key in zip(axes[0], present, strict=True):
        for d, label in zip(data, labels, strict=False):
            xs, ys = _series(d, key, x)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=label)
        ax.set_title(PLOT_KEYS.get(key, key), fontsize=9)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
