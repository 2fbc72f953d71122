"""Fixtures for the RL-library adapter tests (each test module importorskips its library)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tiny_lm, also used by launched scripts

from tiny_lm import CHATML  # noqa: E402
from tiny_lm import tiny_tokenizer as _tiny_tokenizer

__all__ = ["CHATML"]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A 300-token byte-level BPE with a ChatML-like template, trained in memory (no hub)."""
    pytest.importorskip("tokenizers")
    pytest.importorskip("transformers")
    return _tiny_tokenizer()
