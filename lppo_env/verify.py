"""The math reward: math-verify in a process pool with its own per-item deadline.

Why a pool: math-verify's built-in timeout uses SIGALRM, which only works on the main
thread of the main interpreter; in a reward thread (verl's reward loop, TRL's async
rewards, a Gymnasium vector env driven from a thread) it is skipped or raises, and one
`9^{9^{9^9}}` then hangs training. Here parse/verify run with their timeouts disabled
inside worker processes, and the parent enforces the deadline: a worker that runs
past it is killed and replaced, a worker that crashes is replaced, and the item gets
status "timeout" or "error" with reward 0. The caller never hangs and never sees an
exception for any input.

Why a fast path: most RLVR answers are plain numbers. When both the gold answer and
the extracted answer are plain numbers (`parse_number`), exact comparison decides and
the pool is skipped; only symbolic answers (fractions in odd forms, radicals, sets,
units) pay for IPC. The pool takes items in chunks (one message per chunk, not per
item) and streams results back one by one so each item still has its own deadline.

Why a server of our own (`lppo_env._verify_server`) rather than `multiprocessing`:
its `spawn` and `forkserver` methods re-run the caller's main script in each worker
(a script without `if __name__ == "__main__":` then had every pool item scored 0),
daemonic processes (`AsyncVectorEnv` workers) may not start `multiprocessing`
children, and `fork` copies torch's threads. The server is a fresh `python -c`
started with `subprocess`, which works from any script and any process; it warms
math-verify once and forks workers that are ready in milliseconds. If the workers
cannot run, the verifier raises `VerifierError`: it never scores items 0 instead.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from lppo_env.answers import clean_text, extract_final_answer, parse_number, strip_unit_words
from lppo_env.errors import VerifierError

__all__ = [
    "Status",
    "VerifyResult",
    "MathVerifier",
    "fast_verdict",
    "default_verifier",
    "compute_score",
    "make_trl_reward",
    "GOLD_UNPARSEABLE",
    "VerifierError",
]

Status = Literal["ok", "no_answer", "timeout", "error"]
GOLD_UNPARSEABLE = "gold answer could not be parsed"
_CLOSE_TOLERANCE = Fraction(1, 10**6)


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on one completion.

    Attributes:
        reward: 1.0 if the final answer matches the gold answer, else 0.0.
        parsed_answer: the final answer extracted from the completion, or None.
        status: "ok" (compared), "no_answer" (nothing to compare), "timeout" (ran past
            the deadline), "error" (the verifier failed, or the gold is unparseable).
        detail: a short human-readable reason for non-"ok" statuses.
    """

    reward: float
    parsed_answer: str | None
    status: Status
    detail: str = ""

    @property
    def correct(self) -> bool:
        """Whether the completion earned the reward."""
        return self.reward > 0.0


def _canonical(answer: str) -> str:
    """Plain numbers in one form math-verify reads ("$1,000" -> "1000", "3/4" stays)."""
    value = parse_number(answer)
    if value is None:
        return answer.strip()
    if value.denominator == 1:
        return str(value.numerator)
    # Keep decimals as written: math-verify rounds floats, but compares rationals exactly.
    return answer.strip().replace("\\$", "").replace("$", "").replace(",", "").rstrip(".")


def fast_verdict(
    answer: str | None, gold: str, *, max_answer_chars: int = 1000
) -> VerifyResult | None:
    """Decide a case without math-verify when that is cheap and certain, else None.

    Decided here: no extracted answer; an absurdly long answer; both sides plain numbers,
    unit words after a number ignored (`strip_unit_words`: "18 dollars" is 18), and
    equal, or different by more than 1e-6 relative (math-verify rounds floats, so
    near-equal values are left to it).
    """
    if answer is None or not answer.strip():
        return VerifyResult(0.0, None, "no_answer", "no final answer found")
    if len(answer) > max_answer_chars:
        return VerifyResult(0.0, answer[:80], "no_answer",
                            f"answer longer than {max_answer_chars} characters")
    gold_value = parse_number(strip_unit_words(gold))
    value = parse_number(strip_unit_words(answer))
    if gold_value is None or value is None:
        return None
    if value == gold_value:
        return VerifyResult(1.0, answer, "ok")
    if abs(value - gold_value) > _CLOSE_TOLERANCE * max(1, abs(gold_value)):
        return VerifyResult(0.0, answer, "ok")
    return None


# ----------------------------------------------------------------------------- worker side


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> Any:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
    return parse(f"\\boxed{{{gold}}}", extraction_config=config, parsing_timeout=None)


def _verify_one(gold: str, answer: str) -> tuple[float, Status, str]:
    """Compare in the worker. Gold first: math-verify's `verify` is not symmetric."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return 0.0, "error", GOLD_UNPARSEABLE
    config = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
    pred = parse(f"\\boxed{{{answer}}}", extraction_config=config, parsing_timeout=None)
    if not pred:
        return 0.0, "no_answer", "answer could not be parsed"
    ok = verify(gold_parsed, pred, timeout_seconds=None)
    return (1.0 if ok else 0.0), "ok", ""


def _worker_main(conn: Connection) -> None:
    """Worker loop: receive a chunk [(index, gold, answer)], send (index, result) per item."""
    logging.disable(logging.WARNING)  # math-verify warns on every disabled timeout
    try:
        _verify_one("1", "1")  # pay math-verify's lazy imports before reporting ready
        conn.send(("ready", os.getpid()))
        while True:
            chunk = conn.recv()
            if chunk is None:
                return
            for index, gold, answer in chunk:
                try:
                    result = _verify_one(gold, answer)
                except Exception as e:  # includes RecursionError, MemoryError
                    result = (0.0, "error", f"{type(e).__name__}: {str(e)[:160]}")
                conn.send((index, result))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return


# ----------------------------------------------------------------------------- parent side


def _platform_problem() -> str | None:
    """Why workers cannot be started here, or None (checked when a verifier is built)."""
    if not hasattr(os, "fork") or not hasattr(socket, "send_fds") or not hasattr(socket, "AF_UNIX"):
        return ("MathVerifier needs os.fork and Unix sockets to run math-verify in worker "
                f"processes, which this platform ({sys.platform}) lacks; run on Linux or macOS")
    if not sys.executable or not os.path.isfile(sys.executable):
        return ("MathVerifier starts its worker server with sys.executable, got "
                f"{sys.executable!r}; run from a regular Python interpreter")
    return None


class _Server:
    """The fork server (`lppo_env._verify_server`): a fresh Python that forks warm workers."""

    def __init__(self, startup_timeout: float) -> None:
        from lppo_env._verify_server import READY, REQUEST_SIZE

        self.stderr = tempfile.TemporaryFile()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        code = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
                "from lppo_env._verify_server import serve; serve(int(sys.argv[2]))")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(sys.path), str(child.fileno())],
                pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=self.stderr, start_new_session=True,
            )
        except OSError as e:
            parent.close()
            self.stderr.close()
            raise VerifierError(f"MathVerifier could not start its worker server with "
                                f"{sys.executable!r}: {e}") from e
        finally:
            child.close()
        self.sock = parent
        self.owner = os.getpid()
        self.sock.settimeout(startup_timeout)
        try:
            hello = _recv_exact(self.sock, REQUEST_SIZE)
        except OSError:  # includes socket.timeout
            hello = b""
        if hello[:1] != READY:
            reason = self.failure(f"did not become ready within {startup_timeout} s")
            self.close()
            raise VerifierError(reason)

    def failure(self, what: str) -> str:
        """One line on why the server failed, with the last line it wrote to stderr."""
        try:  # a server that closed its socket is exiting: give it a moment to be reaped
            self.process.wait(timeout=2.0)
            what = f"exited with code {self.process.returncode}"
        except subprocess.TimeoutExpired:
            pass
        try:
            self.stderr.seek(0)
            lines = self.stderr.read().decode("utf-8", "replace").strip().splitlines()
        except (OSError, ValueError):
            lines = []
        last = f": {lines[-1]}" if lines else ""
        return (f"MathVerifier's worker server ({sys.executable} -c ...) {what}{last}. "
                "Check that this Python can `import lppo_env, math_verify`.")

    def fork(self) -> tuple[int, Connection]:
        """A new worker: its pid and the parent's end of its socket (OSError if the server died)."""
        from lppo_env._verify_server import FORK

        self.sock.sendall(FORK + bytes(8))
        data, fds, _, _ = socket.recv_fds(self.sock, 8, 1)
        if not fds:
            raise OSError("the verifier's worker server closed its socket")
        if len(data) < 8:
            data += _recv_exact(self.sock, 8 - len(data))
        return int.from_bytes(data, "big"), Connection(fds[0])

    def kill(self, pid: int) -> None:
        from lppo_env._verify_server import KILL

        try:
            self.sock.sendall(KILL + pid.to_bytes(8, "big"))
        except OSError:
            pass  # a dead server took its workers with it

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """End the server: closing its socket makes it kill every worker and exit."""
        self.sock.close()
        if self.owner == os.getpid():
            try:
                self.process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=2.0)
        self.stderr.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class _Worker:
    """A worker process, its socket, and the items it is working on (head = current)."""

    def __init__(self, server: _Server) -> None:
        self.pid, self.conn = server.fork()
        self.born = time.monotonic()
        self.ready = False
        self.inflight: deque[tuple[int, str, str]] = deque()
        self.started = 0.0  # when the head item started

    def stop(self, server: _Server | None) -> None:
        if server is not None:
            server.kill(self.pid)
        self.conn.close()


class _Pool:
    """The server and its workers, owned by the process that started them.

    Why the owner pid: a process forked from the caller (e.g. an `AsyncVectorEnv`
    worker under the `fork` start method) inherits these sockets; it must drop them
    without a word (a message would reach the parent's server) and start its own.
    """

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.server: _Server | None = None
        self.workers: list[_Worker] = []

    def shutdown(self) -> None:
        mine = self.owner == os.getpid()
        for w in self.workers:
            w.conn.close()
        self.workers.clear()
        if self.server is not None:
            if mine:
                self.server.close()
            else:
                self.server.sock.close()
            self.server = None


class MathVerifier:
    r"""Scores completions against gold answers with math-verify, safely and in batches.

    Use as a context manager (or call `close()`) to shut the pool down; a closed
    verifier restarts its workers on next use. Workers start lazily, on the first item
    the fast path cannot decide (or on `start()`). Thread-safe: calls are serialised.
    Works the same from any script (no `if __name__ == "__main__":` needed), thread,
    daemonic process or forked child (which starts its own pool on first use).

    Args:
        num_workers: worker processes; default min(2, CPU count).
        deadline: seconds one item may run in a worker before it is killed ("timeout").
        max_completion_chars: completions are cut to their last this many characters
            before extraction (the final answer is at the end; this bounds work).
        max_answer_chars: longer extracted answers are "no_answer" without parsing.
        chunk_size: items per message to a worker.
        fast_path: decide plain-number cases in-process (see `fast_verdict`).
        startup_timeout: seconds the worker server may take to start (it imports
            math-verify once) and a new worker to become ready.

    Raises:
        VerifierError: at construction, when this platform cannot run the workers
            (no `os.fork`/Unix sockets, no `sys.executable`); on first use, when the
            worker server cannot start (the message gives its last stderr line). A
            verifier that cannot work says so: it never scores items 0 instead.

    Example:
        >>> with MathVerifier() as v:  # doctest: +SKIP
        ...     v.verify("so the total is \\boxed{72}", "72").reward
        1.0
    """

    def __init__(
        self,
        *,
        num_workers: int | None = None,
        deadline: float = 2.0,
        max_completion_chars: int = 20_000,
        max_answer_chars: int = 1000,
        chunk_size: int = 32,
        fast_path: bool = True,
        startup_timeout: float = 60.0,
    ) -> None:
        n = num_workers if num_workers is not None else min(2, os.cpu_count() or 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"MathVerifier expects num_workers >= 1, got {num_workers!r}")
        for name, value in (("deadline", deadline), ("startup_timeout", startup_timeout)):
            if not value > 0:
                raise ValueError(f"MathVerifier expects {name} > 0, got {value!r}")
        for name, value in (("max_completion_chars", max_completion_chars),
                            ("max_answer_chars", max_answer_chars), ("chunk_size", chunk_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MathVerifier expects {name} >= 1, got {value!r}")
        problem = _platform_problem()
        if problem is not None:
            raise VerifierError(problem)
        self.num_workers = n
        self.deadline = float(deadline)
        self.max_completion_chars = max_completion_chars
        self.max_answer_chars = max_answer_chars
        self.chunk_size = chunk_size
        self.fast_path = fast_path
        self.startup_timeout = float(startup_timeout)
        self._lock = threading.RLock()
        self._pool = _Pool()
        self._finalizer = weakref.finalize(self, self._pool.shutdown)
        self.stats: dict[str, int] = {
            "items": 0, "fast": 0, "pool": 0, "timeouts": 0, "errors": 0, "restarts": 0,
        }

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> MathVerifier:
        """Start the workers now and wait until they are ready (optional warm-up)."""
        with self._lock:
            self._ensure_workers()
            t_end = time.monotonic() + self.startup_timeout
            while not all(w.ready for w in self._workers) and time.monotonic() < t_end:
                self._pump(time.monotonic() + 0.05, {}, None)
        return self

    def close(self) -> None:
        """Stop the server and its workers. Safe to call twice."""
        with self._lock:
            self._pool.shutdown()

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __copy__(self) -> MathVerifier:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> MathVerifier:
        """A verifier is a handle on a shared pool: copies share it.

        `gymnasium.make` deep-copies env kwargs; copying pipes would close the
        original's file descriptors when the copy is collected.
        """
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickling (e.g. into an `AsyncVectorEnv` worker) gives a fresh pool, same settings."""
        return (_rebuild, (self._config(),))

    def _config(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers, "deadline": self.deadline,
            "max_completion_chars": self.max_completion_chars,
            "max_answer_chars": self.max_answer_chars, "chunk_size": self.chunk_size,
            "fast_path": self.fast_path, "startup_timeout": self.startup_timeout,
        }

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        with self._lock:
            self._own_pool()
            return [w.pid for w in self._pool.workers]

    # -- public API ------------------------------------------------------------------

    def verify(self, completion: str, answer: str) -> VerifyResult:
        """Score one completion (the full assistant text, prefix included)."""
        return self.verify_batch([completion], [answer])[0]

    def verify_batch(
        self,
        completions: Sequence[str],
        answers: Sequence[str],
        *,
        timeout: float | None = None,
    ) -> list[VerifyResult]:
        """Score many completions; returns one `VerifyResult` per completion, in order.

        Args:
            completions: model outputs (anything; non-str is coerced, never raises).
            answers: gold answers, same length.
            timeout: optional wall-clock budget for the whole call; items not finished
                by then get status "timeout". Without it each item still has `deadline`.
        """
        if len(completions) != len(answers):
            raise ValueError(f"verify_batch expects as many answers as completions, "
                             f"got {len(answers)} answers for {len(completions)} completions")
        results: list[VerifyResult | None] = [None] * len(completions)
        extracted: dict[int, str] = {}
        pending: list[tuple[int, str, str]] = []
        for i, (completion, gold) in enumerate(zip(completions, answers, strict=True)):
            result, item = self._prepare(completion, gold)
            if result is not None:
                results[i] = result
            else:
                assert item is not None
                extracted[i] = item[1]
                pending.append((i, item[0], _canonical(item[1])))
        self.stats["items"] += len(completions)
        self.stats["fast"] += len(completions) - len(pending)
        if pending:
            self.stats["pool"] += len(pending)
            with self._lock:
                self._run(pending, results, extracted, timeout)
        for r in results:
            if r is not None and r.status == "timeout":
                self.stats["timeouts"] += 1
            elif r is not None and r.status == "error":
                self.stats["errors"] += 1
        return results  # type: ignore[return-value]  # every slot is filled by _run

    # -- internals -------------------------------------------------------------------

    def _prepare(
        self, completion: object, gold: object
    ) -> tuple[VerifyResult | None, tuple[str, str] | None]:
        try:
            if isinstance(completion, str) and len(completion) > self.max_completion_chars:
                completion = completion[-self.max_completion_chars:]
            text = clean_text(completion)[-self.max_completion_chars:]
            gold_text = strip_unit_words(clean_text(gold).strip())
            if not gold_text:
                return VerifyResult(0.0, None, "error", GOLD_UNPARSEABLE), None
            answer = extract_final_answer(text)
            if self.fast_path or answer is None or len(answer) > self.max_answer_chars:
                verdict = fast_verdict(answer, gold_text, max_answer_chars=self.max_answer_chars)
                if verdict is not None:
                    return verdict, None
            assert answer is not None
            return None, (gold_text, strip_unit_words(answer))
        except Exception as e:  # defensive: the caller must never crash on input
            return VerifyResult(0.0, None, "error", f"{type(e).__name__}: {str(e)[:160]}"), None

    @property
    def _workers(self) -> list[_Worker]:
        return self._pool.workers

    def _own_pool(self) -> None:
        """In a process forked from the owner, drop the inherited pool and start afresh."""
        if self._pool.owner != os.getpid():
            self._finalizer.detach()
            self._pool.shutdown()
            self._pool = _Pool()
            self._finalizer = weakref.finalize(self, self._pool.shutdown)

    def _server(self) -> _Server:
        pool = self._pool
        if pool.server is not None and not pool.server.alive():
            for w in pool.workers:  # a dead server took its workers with it
                w.conn.close()
            pool.workers.clear()
            pool.server.close()
            pool.server = None
        if pool.server is None:
            pool.server = _Server(self.startup_timeout)
        return pool.server

    def _ensure_workers(self) -> None:
        self._own_pool()
        while len(self._workers) < self.num_workers:
            try:
                worker = _Worker(self._server())
            except OSError:  # the server died since the check: one fresh start
                if self._pool.server is not None:
                    self._pool.server.close()
                    self._pool.server = None
                try:
                    worker = _Worker(self._server())
                except OSError as e:
                    raise VerifierError(
                        f"MathVerifier could not fork a worker from its server: {e}"
                    ) from e
            self._workers.append(worker)

    def _retire(self, worker: _Worker) -> None:
        """Kill a worker and drop it; the next `_ensure_workers` forks its successor."""
        worker.stop(self._pool.server)
        self._workers.remove(worker)
        self.stats["restarts"] += 1

    def _replace(self, worker: _Worker) -> None:
        self._retire(worker)
        self._ensure_workers()

    def _run(
        self,
        items: list[tuple[int, str, str]],
        results: list[VerifyResult | None],
        extracted: dict[int, str],
        timeout: float | None,
    ) -> None:
        queue: deque[tuple[int, str, str]] = deque(items)
        remaining = {i for i, _, _ in items}
        t_end = time.monotonic() + timeout if timeout is not None else None
        failed_starts = 0

        def finish(index: int, reward: float, status: Status, detail: str) -> None:
            results[index] = VerifyResult(reward, extracted[index], status, detail)
            remaining.discard(index)

        self._ensure_workers()
        while remaining:
            now = time.monotonic()
            if t_end is not None and now >= t_end:
                # Retire, not replace: forking a successor is a round trip to the server
                # that a loaded machine can stretch past the caller's budget. The next
                # call forks them before it sends work.
                for w in [w for w in self._workers if w.inflight]:
                    w.inflight.clear()
                    self._retire(w)
                for index in list(remaining):
                    finish(index, 0.0, "timeout", f"batch timeout of {timeout} s")
                return
            for w in list(self._workers):
                if not w.ready and now - w.born > self.startup_timeout:
                    failed_starts += 1
                    self._replace(w)
                elif w.ready and not w.inflight and queue:
                    # Split the queue evenly so no worker idles while another holds it all.
                    size = min(self.chunk_size, -(-len(queue) // len(self._workers)))
                    chunk = [queue.popleft() for _ in range(size)]
                    try:
                        w.conn.send(chunk)
                    except (OSError, ValueError):
                        queue.extendleft(reversed(chunk))
                        self._replace(w)
                        continue
                    w.inflight.extend(chunk)
                    w.started = now
            if failed_starts > 2 * self.num_workers:
                raise VerifierError(
                    f"MathVerifier's workers died {failed_starts} times before becoming "
                    "ready; nothing was scored (a 0 here would be a wrong reward)"
                )
            wake = [w.started + self.deadline for w in self._workers if w.inflight]
            wake += [w.born + self.startup_timeout for w in self._workers if not w.ready]
            if t_end is not None:
                wake.append(t_end)
            until = min(wake) if wake else now + 0.05
            crashed = self._pump(until, {"finish": finish}, queue)
            failed_starts += crashed
            now = time.monotonic()
            for w in list(self._workers):
                if w.inflight and now - w.started > self.deadline:
                    index = w.inflight.popleft()[0]
                    finish(index, 0.0, "timeout", f"math-verify ran past {self.deadline} s")
                    queue.extendleft(reversed(w.inflight))
                    w.inflight.clear()
                    self._replace(w)

    def _pump(
        self, until: float, hooks: dict[str, Callable[..., None]], queue: deque | None
    ) -> int:
        """Wait for worker messages until `until`; handle results, readiness and deaths.

        Returns the number of workers that died before becoming ready.
        """
        by_conn = {w.conn: w for w in self._workers}
        if not by_conn:
            return 0
        ready = wait(list(by_conn), timeout=max(0.0, until - time.monotonic()))
        died_unready = 0
        for conn in ready:
            w = by_conn[conn]  # type: ignore[index]
            try:
                while w.conn.poll():
                    msg = w.conn.recv()
                    if msg[0] == "ready":
                        w.ready = True
                        continue
                    index, (reward, status, detail) = msg
                    if w.inflight and w.inflight[0][0] == index:
                        w.inflight.popleft()
                    w.started = time.monotonic()
                    if "finish" in hooks:
                        hooks["finish"](index, reward, status, detail)
            except (EOFError, OSError):
                if not w.ready:
                    died_unready += 1
                if w.inflight:
                    index = w.inflight.popleft()[0]
                    if "finish" in hooks:
                        hooks["finish"](index, 0.0, "error",
                                        "verifier worker died")
                    if queue is not None:
                        queue.extendleft(reversed(w.inflight))
                    w.inflight.clear()
                self._replace(w)
        return died_unready


def _rebuild(config: dict[str, Any]) -> MathVerifier:
    return MathVerifier(**config)


# ----------------------------------------------------------------------------- shared default

_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide shared verifier (created on first use, closed at exit).

    Why shared: every env instance and reward wrapper would otherwise own a pool, and
    G envs x 2 workers oversubscribes a small machine.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
            atexit.register(_default.close)
        return _default


def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: str,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Custom reward function for verl (`custom_reward_function.name=compute_score`).

    verl passes the decoded response only; when an expert prefix was rendered on the
    prompt side, put it in `extra_info["prefix"]` and it is scored with the response.
    Extra keyword arguments (verl's `reward_kwargs`) are accepted and ignored.

    Returns:
        {"score": 0.0|1.0, "acc": bool, "pred": str, "status": str}; verl uses "score"
        as the reward and logs the other keys.
    """
    prefix = extra_info.get("prefix", "") if isinstance(extra_info, dict) else ""
    text = (prefix if isinstance(prefix, str) else "") + clean_text(solution_str)
    r = default_verifier().verify(text, clean_text(ground_truth))
    return {"score": r.reward, "acc": r.correct, "pred": r.parsed_answer or "", "status": r.status}


def _completion_text(completion: Any) -> str:
    """TRL completions are strings, or (conversational) lists of message dicts."""
    if isinstance(completion, list):
        return "".join(
            clean_text(m.get("content", "")) for m in completion
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant"
        )
    return clean_text(completion)


def make_trl_reward(
    verifier: MathVerifier | None = None,
    *,
    answer_key: str = "answer",
    prefix_key: str = "prefix",
) -> Callable[..., list[float | None]]:
    """A TRL `reward_funcs` entry: `f(prompts, completions, **columns) -> list[float | None]`.

    The gold answers come from the dataset column `answer_key`; if a `prefix_key`
    column exists, each completion is scored as prefix + completion. A row whose gold
    answer cannot be parsed gets None (TRL then ignores it) rather than a false 0.
    """

    def lppo_math_reward(prompts: Any = None, completions: Sequence[Any] = (),
                         **columns: Any) -> list[float | None]:
        if answer_key not in columns:
            raise KeyError(f"lppo_math_reward expects a dataset column {answer_key!r}, "
                           f"got columns {sorted(columns)}")
        texts = [_completion_text(c) for c in completions]
        prefixes = columns.get(prefix_key)
        if prefixes is not None:
            texts = [clean_text(p or "") + t for p, t in zip(prefixes, texts, strict=False)]
        v = verifier or default_verifier()
        results = v.verify_batch(texts, [clean_text(a) for a in columns[answer_key]])
        return [None if r.detail == GOLD_UNPARSEABLE else r.reward for r in results]

    return lppo_math_reward
