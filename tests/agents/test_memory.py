"""agents.memory: freed tensors stay in the heap outside the update, go back to the OS inside.

Run in a fresh interpreter each (the allocator's state is per process). Breaks if the
thresholds are swapped or the context manager stops switching (the RSS checks flip).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch")

_PROBE = """
import sys, torch
from agents.memory import memory_returned_to_os, serve_tensors_from_the_heap

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

def held_after_free(inside):
    big, pins = [], []
    for _ in range(25):  # 25 x 8 MiB, touched, each followed by a 64 KiB tensor that stays:
        big.append(torch.ones(2 * 1024 * 1024))  # the heap cannot shrink from its top
        pins.append(torch.ones(16 * 1024))
    before = rss_mb()
    del big
    return before - rss_mb(), pins

serve_tensors_from_the_heap()
if sys.argv[1] == "update":
    with memory_returned_to_os():
        released, _ = held_after_free(True)
else:
    released, _ = held_after_free(False)
print(released)
"""


def _released_mb(phase: str) -> float:
    out = subprocess.run([sys.executable, "-c", _PROBE, phase], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_the_update_returns_freed_tensors_and_generation_keeps_them_for_reuse() -> None:
    assert _released_mb("update") > 150  # 200 MiB freed inside the update: back to the OS
    assert _released_mb("generate") < 50  # outside it stays in the heap for the next token
