"""Load-average gate and machine record shared by every benchmark in benchmarks/.

Why: this machine has few cores and is often shared; a timing taken while other work runs
measures the other work. Every benchmark records the load average before and after each
measurement, and a measurement that *starts* above ``MAX_START_LOAD`` (1-minute average) is
marked invalid instead of being published.

Usage::

    from benchmarks._load import LoadGate            # or: from _load import LoadGate
    with LoadGate() as gate:
        ...  # the measurement
    record.update(gate.record())   # {"load_before": [...], "load_after": [...], "valid": ..}

or the functional form ``before = load_now(); ...; record.update(load_record(before))``.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

MAX_START_LOAD = 1.5
"""A measurement whose 1-minute load average at start exceeds this is invalid."""


def load_now() -> list[float]:
    """1/5/15-minute load averages, rounded to 2 decimals (``[nan]*3`` where unsupported)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return [float("nan")] * 3


SETTLED_LOAD = 1.0
"""`wait_until_quiet` waits for the 1-minute load to fall to this before a measurement."""


def wait_until_quiet(
    max_seconds: float = 180.0, target: float = SETTLED_LOAD, poll: float = 5.0
) -> float:
    """Wait up to `max_seconds` for the 1-minute load to fall to `target`; seconds waited.

    Why: the 1-minute average decays over about a minute, so a measurement started right
    after the previous one (or after loading a model) would count the benchmark's own
    work as "the machine was busy". Waiting never makes a busy machine valid: the gate
    still judges the load at the start of the measurement.
    """
    start = time.monotonic()
    while load_now()[0] > target and time.monotonic() - start < max_seconds:
        time.sleep(poll)
    return time.monotonic() - start


def is_valid_start(before: list[float], max_start_load: float = MAX_START_LOAD) -> bool:
    """True when the 1-minute load at the start of a measurement is at most the limit."""
    return bool(before) and before[0] == before[0] and before[0] <= max_start_load


def load_record(
    before: list[float], after: list[float] | None = None, max_start_load: float = MAX_START_LOAD
) -> dict:
    """The fields every benchmark figure carries: load before/after, validity and why."""
    after = load_now() if after is None else after
    valid = is_valid_start(before, max_start_load)
    rec = {
        "load_before": before,
        "load_after": after,
        "max_start_load": max_start_load,
        "valid": valid,
    }
    if not valid:
        rec["invalid_reason"] = (
            f"1-minute load average {before[0] if before else 'unknown'} at start "
            f"> {max_start_load}: the machine was busy, the figure measures other work"
        )
    return rec


def all_valid(records: list[dict]) -> bool:
    """A result built from several measurements is valid only if every one of them is."""
    return bool(records) and all(r.get("valid", False) for r in records)


class LoadGate:
    """Context manager recording the load around one measurement.

    ``gate.record()`` after the block gives :func:`load_record`'s fields.
    """

    def __init__(self, max_start_load: float = MAX_START_LOAD) -> None:
        self.max_start_load = max_start_load
        self.before: list[float] = []
        self.after: list[float] | None = None

    def __enter__(self) -> LoadGate:
        self.before = load_now()
        return self

    def __exit__(self, *exc) -> None:
        self.after = load_now()

    @property
    def valid(self) -> bool:
        """Whether the measurement started on a quiet enough machine."""
        return is_valid_start(self.before, self.max_start_load)

    def record(self) -> dict:
        """Load before/after, the limit, ``valid`` and (if invalid) the reason."""
        return load_record(self.before, self.after or load_now(), self.max_start_load)


def hardware() -> dict[str, Any]:
    """Where a figure was measured, and under what load: it means little without them."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "load_average_1_5_15": load_now(),
    }
    try:
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["ram_gb"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info
