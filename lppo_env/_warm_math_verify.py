"""Imported once by the verifier's forkserver to warm math-verify before workers fork.

Why a module with an import-time effect: `multiprocessing.set_forkserver_preload`
only imports modules. math-verify builds its LaTeX parser and regexes lazily on the
first call (~0.3 s); doing that first call in the server means every forked worker,
including one that replaces a killed worker, starts warm in milliseconds, which keeps
the caller's worst-case latency close to the deadline.
"""

from __future__ import annotations

import logging

from lppo_env.verify import _verify_one

logging.disable(logging.WARNING)  # math-verify warns on every disabled timeout
_verify_one("1", "1")
_verify_one("\\frac{1}{2}", "0.5")
logging.disable(logging.NOTSET)
