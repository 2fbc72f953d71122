"""Graceful stop on SIGTERM and SIGINT, whatever signal disposition the process inherited.

Why a handler of our own: schedulers (Slurm, Kubernetes, most job runners) send SIGTERM
and kill a few seconds later; Python's default for SIGTERM is to die at once. A job started
in the background from a script (`nohup lppo train &`) inherits SIGINT *ignored*, so Ctrl-C
never becomes a KeyboardInterrupt. `GracefulStop` installs the same handler for both
signals, whatever was there before, and restores the previous dispositions on exit.

A stop is either abandoning or finishing the work in progress:

- Inside `abandonable()` nothing irreversible has happened yet: a signal raises
  `StopRequested` at once and the caller restores what it saved before entering.
- Elsewhere, or after `commit()` (the point of no return: `commit_on_optimizer_step`
  calls it before any optimizer changes weights), a signal only sets `requested`; the
  caller finishes what it is doing and stops at its next check.

Repeated SIGTERMs change nothing (launchers often signal a whole process group and
forward it too). A second SIGINT, a person pressing Ctrl-C again, exits at once with
status 128 + 2; checkpoints are written atomically, so the last one is intact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType

__all__ = ["GracefulStop", "StopRequested", "commit_on_optimizer_step", "exit_status"]

log = logging.getLogger("lppo")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(signal_name: str | None) -> int:
    """Process exit status after a stop: 128 + the signal number (the shell's convention).

    130 after SIGINT, 143 after SIGTERM, 0 when no signal stopped the run: a wrapper
    script can tell "stopped, resumable" from "finished" and from an error (1, 2).
    """
    return 128 + int(signal.Signals[signal_name]) if signal_name else 0


class StopRequested(BaseException):  # noqa: N818 - named like KeyboardInterrupt
    """A stop signal arrived inside an abandonable region.

    A `BaseException`, like `KeyboardInterrupt`, so that `except Exception` in library
    code (a verifier that scores a failure 0, say) cannot swallow it and carry on.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class GracefulStop:
    """Context manager that turns SIGTERM / SIGINT into a stop the caller controls.

    Example:
        >>> with GracefulStop() as stop:                        # doctest: +SKIP
        ...     while not stop.requested:
        ...         saved = snapshot()
        ...         try:
        ...             with stop.abandonable():
        ...                 work()              # may call stop.commit() before mutating
        ...         except StopRequested:
        ...             restore(saved)
        ...     save()

    Signal handlers can only be installed from the main thread; elsewhere the context
    does nothing (`installed` is False) and signals keep their previous behaviour.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.signum: int | None = None
        self.installed = False
        self._abandonable = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal has arrived."""
        return self.signum is not None

    @property
    def signal_name(self) -> str | None:
        """The signal's name ("SIGTERM", "SIGINT") once requested, else None."""
        return None if self.signum is None else signal.Signals(self.signum).name

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: SIGTERM/SIGINT keep their default behaviour")
            return self
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        self.installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)  # type: ignore[arg-type]
        self._previous.clear()
        self.installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            if signum == signal.SIGINT:
                sys.stderr.write(f"\nlppo: second {name}: exiting now\n")
                sys.stderr.flush()
                os._exit(128 + signum)
            log.warning("%s received again: still stopping", name)
            return
        self.signum = signum
        log.warning("%s received: stopping (a checkpoint is written first)", name)
        if self._abandonable:
            self._abandonable = False
            raise StopRequested(signum)

    @contextlib.contextmanager
    def abandonable(self) -> Iterator[None]:
        """A region a stop signal interrupts at once, by raising `StopRequested`.

        Entered after a stop was requested, it raises at once. The caller must be able to
        undo whatever the region did up to `commit()`.
        """
        if self.signum is not None:
            raise StopRequested(self.signum)
        self._abandonable = True
        try:
            yield
        finally:
            self._abandonable = False

    def commit(self) -> None:
        """Point of no return: for the rest of the region a signal only sets `requested`."""
        self._abandonable = False


@contextlib.contextmanager
def commit_on_optimizer_step(stop: GracefulStop) -> Iterator[None]:
    """Call `stop.commit()` before any torch optimizer step (a global pre-hook).

    Why: the first optimizer step is the first change to the weights and optimizer state
    of a training step; before it, a step can be undone cheaply (sampler state, RNGs,
    counters), after it only finished.
    """
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(lambda *_: stop.commit())
    try:
        yield
    finally:
        handle.remove()
