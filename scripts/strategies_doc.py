"""Write docs/strategies.md from the strategy catalog (run after adding a strategy).

Usage::

    python scripts/strategies_doc.py            # rewrite docs/strategies.md
    python scripts/strategies_doc.py --check    # exit 1 if the file is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lppo_sampling.strategies.catalog import render_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "strategies.md"


def main() -> int:
    """Rewrite (or check) the document; 0 when it is current."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 if stale")
    args = ap.parse_args()
    try:
        text = render_markdown()
    except ValueError as e:
        print(f"strategies_doc: {e}", file=sys.stderr)
        return 2
    if args.check:
        current = DOC.read_text() if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is stale: run python scripts/strategies_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
