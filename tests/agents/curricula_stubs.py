"""Signal objects of the right types, never called: to load a saved curriculum state."""

from __future__ import annotations

from typing import Any

from agents.signals import build_signals


def stub_signals(name: str) -> dict[str, Any]:
    """The signals `lppo train` builds for `name`, on no policy (loading state only)."""
    return build_signals(name, lambda: None, {})
