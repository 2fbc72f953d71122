"""Fixtures shared by the lppo_env tests: one verifier pool and GSM8K loaded once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lppo_env import MathProblem, MathVerifier, load_gsm8k


@pytest.fixture(scope="session")
def verifier() -> Iterator[MathVerifier]:
    with MathVerifier(deadline=1.0) as v:
        v.start()
        yield v


@pytest.fixture(scope="session")
def gsm8k(gsm8k_path: Path) -> tuple[MathProblem, ...]:
    return load_gsm8k(gsm8k_path)
