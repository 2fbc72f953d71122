"""The verifier's fork server: a fresh Python that warms math-verify, then forks workers.

Why not `multiprocessing`: its `spawn` and `forkserver` start methods re-run the
user's main script in every worker (so a script without `if __name__ ==
"__main__":` breaks the pool, or worse, trains again inside it), and a daemonic
process (an `AsyncVectorEnv` worker) may not start `multiprocessing` children at all.
This server is started with `subprocess` as `python -c ...`: it never sees the
caller's `__main__`, and `subprocess` works from any process. It imports math-verify
and pays its lazy set-up once, so a worker forked from it is ready in milliseconds
(a worker killed at its deadline is replaced at once).

Protocol on one Unix socket to the parent (fixed 9-byte requests, one command byte
and an 8-byte big-endian argument):
- server -> parent: b"R" + pid once warm;
- b"F": fork a worker; reply 8 bytes (its pid) carrying the parent's end of a new
  socket pair as ancillary data (`socket.send_fds`);
- b"K" + pid: SIGKILL that worker (only a child not yet reaped, so never a reused pid);
- EOF (the parent closed or died): kill every worker and exit.

Workers and the server ignore SIGINT and run in their own session: a Ctrl-C meant for
the trainer (which may be writing a checkpoint) must not kill the reward mid-step.
On Linux each worker also dies with the server (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys

REQUEST_SIZE = 9
READY = b"R"
FORK = b"F"
KILL = b"K"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (the server) exits."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _reap(children: set[int]) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def _run_worker(ctrl: socket.socket, child: socket.socket, parent_end: socket.socket) -> None:
    """In the forked child: become a verifier worker on `child`; never return."""
    code = 0
    try:
        ctrl.close()
        parent_end.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _die_with_parent()
        if os.getppid() == 1:  # the server died between fork and prctl
            os._exit(0)
        from multiprocessing.connection import Connection

        from lppo_env.verify import _worker_main

        _worker_main(Connection(child.detach()))
    except BaseException:  # noqa: BLE001 - a forked child must never return into the server
        code = 1
    finally:
        os._exit(code)


def serve(fd: int) -> None:
    """Run the server on the inherited socket `fd` until the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctrl = socket.socket(fileno=fd)
    import lppo_env._warm_math_verify  # noqa: F401  (warms math-verify before any fork)

    ctrl.sendall(READY + os.getpid().to_bytes(8, "big"))
    children: set[int] = set()
    try:
        while True:
            readable, _, _ = select.select([ctrl], [], [], 1.0)
            _reap(children)
            if not readable:
                continue
            request = _recv_exact(ctrl, REQUEST_SIZE)
            if not request:
                return
            command, arg = request[:1], int.from_bytes(request[1:], "big")
            if command == FORK:
                parent_end, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                pid = os.fork()
                if pid == 0:
                    _run_worker(ctrl, child, parent_end)
                child.close()
                children.add(pid)
                socket.send_fds(ctrl, [pid.to_bytes(8, "big")], [parent_end.fileno()])
                parent_end.close()
            elif command == KILL and arg in children:
                os.kill(arg, signal.SIGKILL)
    except (OSError, EOFError):
        return
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(children)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
