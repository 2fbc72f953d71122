"""Imported once by the verifier's worker server to warm math-verify before workers fork.

Why a module with an import-time effect: the server (`lppo_env._verify_server`)
imports it before it forks any worker. math-verify builds its LaTeX parser and regexes
lazily on the first call (~0.3 s, more for sympy's numeric and set code); doing those
first calls in the server means every forked worker,
including one that replaces a killed worker, starts warm in milliseconds, which keeps
the caller's worst-case latency close to the deadline.
"""

from __future__ import annotations

import logging

from lppo_env.verify import _verify_one

logging.disable(logging.WARNING)  # math-verify warns on every disabled timeout
# One case per lazily built part of math-verify/sympy (numeric evaluation, sets,
# intervals, factoring, functions, matrices): cold, the first such item took 0.2-1.4 s,
# enough to run past a 1 s deadline on a loaded machine.
for _gold, _answer in [
    ("1", "1"), ("\\frac{1}{2}", "0.5"), ("3", "\\pi"), ("\\{1,2\\}", "\\{2,1\\}"),
    ("(1,2]", "(1, 2]"), ("x^2-1", "(x-1)(x+1)"), ("e^{2}", "e^2"), ("\\sin(x)", "\\sin x"),
    ("\\log_2 8", "3"), ("90^\\circ", "90"), ("50\\%", "50"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
]:
    _verify_one(_gold, _answer)
logging.disable(logging.NOTSET)
