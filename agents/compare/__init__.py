r"""`lppo compare`: a matrix of strategies × learners × seeds on one data set, model and budget.

Why a separate command: a claim such as "LPPO learns faster than uniform sampling" is only
worth something when every arm saw the same model, data, held-out set, step budget and
seeds, and when the numbers come from code rather than from a hand-copied table. This
package runs the matrix and derives everything from each run's `metrics.jsonl`:

    out/<strategy>__<learner>__s<seed>/   one Trainer run dir (metrics.jsonl, checkpoints)
    out/<run>/summary.json                final/best held-out accuracy, steps and tokens to a
                                          threshold, tokens generated, compute time, complete
    out/summary.md                        table per arm (strategy, learner), mean ± std over seeds
    out/matrix.json                       the same, machine-readable (runs + arms)
    out/curves.png                        held-out accuracy vs step, band = ± std over seeds
    out/curves_tokens.png                 held-out accuracy vs generated tokens

Every run uses `resume=True`, so rerunning the same command after an interruption skips
finished runs and continues unfinished ones from their last checkpoint. By default each run
is a subprocess (`python -m agents.cli train --config ...`): a crash or an out-of-memory
kill in one run is recorded in its summary and the matrix goes on. `touch out/DRAIN` lets the
runs in flight finish and starts no more (before a machine or allocation ends).

Modules, one idea each: `matrix` (the runs), `execute` (running them), `stats` (numbers
from metrics.jsonl), `plots`, `report` (the files written), `cli` (`lppo compare`).

Example::

    lppo compare --strategies uniform lppo --learners grpo --seeds 0 1 2 \
        --steps 40 --eval-size 200 --eval-every 5 --out runs/cmp
"""

from agents.compare.execute import DRAIN_FILE, drain_when_file, run_matrix
from agents.compare.matrix import MATRIX_FIELDS, RunSpec, build_matrix, run_name
from agents.compare.plots import plot_arm_curves
from agents.compare.report import summarize_matrix, write_run_summary, write_summary_md
from agents.compare.stats import (
    aggregate,
    eval_curve,
    initial_on_final_set,
    mean_curve,
    mean_std,
    steps_to_reach,
    summarize_run,
)

__all__ = [
    "DRAIN_FILE",
    "MATRIX_FIELDS",
    "RunSpec",
    "aggregate",
    "build_matrix",
    "drain_when_file",
    "eval_curve",
    "initial_on_final_set",
    "mean_curve",
    "mean_std",
    "plot_arm_curves",
    "run_matrix",
    "run_name",
    "steps_to_reach",
    "summarize_matrix",
    "write_run_summary",
    "summarize_run",
    "write_summary_md",
]
