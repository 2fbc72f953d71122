"""Shared test configuration: `--run-slow` enables tests that load the real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Properties, not timings: a per-example deadline fails at random on a loaded machine
# (the first example also pays for imports). Speed goals live in benchmarks/.
settings.register_profile("lppo", deadline=None)
settings.load_profile("lppo")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GSM8K_TRAIN = SHARED / "data" / "gsm8k_train.jsonl"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gsm8k_path() -> Path:
    if not GSM8K_TRAIN.exists():
        pytest.skip(f"{GSM8K_TRAIN} not found (../shared beside the repo)")
    return GSM8K_TRAIN
