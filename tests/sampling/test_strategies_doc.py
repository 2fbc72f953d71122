"""docs/strategies.md is generated from the strategy catalog and must be current.

A strategy registered without a catalog entry fails here (and in the generator), so a
new strategy cannot land without its row in the table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lppo_sampling import available_strategies, make_strategy, register_strategy
from lppo_sampling.strategies import catalog
from lppo_sampling.strategy import _REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "strategies.md"


def test_every_strategy_has_a_catalog_entry_and_a_row():
    """Bug caught: a strategy added to the registry with no documentation row."""
    assert catalog.undescribed_strategies() == []
    text = DOC.read_text()
    for name in available_strategies():
        assert f"| `{name}` |" in text, name


def test_doc_is_current():
    """Bug caught: metadata or arguments changed without regenerating the document."""
    assert DOC.read_text() == catalog.render_markdown(), (
        "docs/strategies.md is stale: run python scripts/strategies_doc.py"
    )


def test_script_check_mode_agrees():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "strategies_doc.py"), "--check"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_a_strategy_without_metadata_is_refused():
    """Bug caught: render_markdown silently skipping an undescribed strategy."""

    @register_strategy("_undocumented_tmp")
    def _tmp(group_size: int = 8, seed: int = 0):
        return make_strategy("uniform", group_size=group_size, seed=seed)

    try:
        assert catalog.undescribed_strategies() == ["_undocumented_tmp"]
        with pytest.raises(ValueError, match="_undocumented_tmp"):
            catalog.render_markdown()
        with pytest.raises(ValueError, match="no catalog entry"):
            catalog.strategy_info("_undocumented_tmp")
    finally:
        del _REGISTRY["_undocumented_tmp"]


def test_signals_are_required_arguments_of_their_factories():
    """Bug caught: metadata naming a callable the factory does not take."""
    import inspect

    for name in available_strategies():
        params = inspect.signature(_REGISTRY[name]).parameters
        for arg in catalog.strategy_info(name).signals:
            assert arg in params and params[arg].default is None, (name, arg)
            with pytest.raises(ValueError, match=arg):
                make_strategy(name)
