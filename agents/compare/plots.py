"""Held-out accuracy curves per arm (mean line, ± std band over seeds)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.compare.stats import mean_curve

__all__ = ["plot_arm_curves"]


def plot_arm_curves(
    summaries: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    x: str = "step",
    title: str | None = None,
) -> Path | None:
    """Held-out accuracy per arm: mean line, band = ± std over seeds; x = step or tokens.

    An arm is drawn from its complete seeds, like the table; an arm with none yet is drawn
    from its running seeds (up to the steps all of them reached, dotted), so a running
    matrix can be looked at. The legend says which, and how many seeds.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in summaries:
        arms.setdefault((s["strategy"], s["learner"]), []).append(s)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = 0
    for (strategy, learner), runs in sorted(arms.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        done = [r for r in runs if r.get("complete")]
        curve = mean_curve(done or runs)
        if not curve:
            continue
        n = curve[-1]["n"]
        what = f"{n} seed{'s' if n != 1 else ''}" + ("" if done else " running")
        xs = [c["step" if x == "step" else "tokens"] for c in curve]
        m = [100 * c["mean"] for c in curve]
        sd = [100 * (c["std"] or 0.0) for c in curve]  # one seed: no band
        style = ":" if not done else ("-" if learner == "grpo" else "--")
        (line,) = ax.plot(
            xs,
            m,
            style,
            marker="o" if len(xs) < 30 else None,
            ms=3,
            label=f"{strategy}/{learner} ({what})",
        )
        ax.fill_between(
            xs,
            [a - b for a, b in zip(m, sd, strict=True)],
            [a + b for a, b in zip(m, sd, strict=True)],
            color=line.get_color(),
            alpha=0.18,
            linewidth=0,
        )
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training step" if x == "step" else "generated tokens (training rollouts)")
    ax.set_ylabel("held-out accuracy, greedy pass@1 (%)")
    ax.set_title(title or "held-out accuracy (mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
