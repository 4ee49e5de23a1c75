"""The processes a local Ray cluster leaves behind, found and ended after ``ray.shutdown``; and
SIGINT held back while Ray starts or stops.

``ray.shutdown`` stops the GCS and the raylet it started, but the raylet's agents (dashboard
agent, runtime-env agent) and its workers are left to notice by themselves, which took up to a
minute when the job was interrupted while Ray was starting (issue 24). The driver therefore takes
a list of its descendants before the shutdown, waits a bounded time for them to exit, and kills
the rest: they are processes this job started. Linux (``/proc``) only; elsewhere nothing is
tracked. A Ray cluster the job only connected to (``--ray-address``) is never touched: its
processes are not descendants of the driver.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import defaultdict

__all__ = ["descendants", "reap", "sigint_deferred"]


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of ``pid`` from /proc, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid: int | None = None) -> list[tuple[int, int]]:
    """``(pid, start time)`` of every descendant of ``pid`` (default: this process)."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[tuple[int, int]]] = defaultdict(list)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if name.isdigit() and (st := _stat(int(name))) is not None:
            children[st[0]].append((int(name), st[2]))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def _alive(proc: tuple[int, int]) -> bool:
    st = _stat(proc[0])
    return st is not None and st[2] == proc[1] and st[1] != "Z"  # same process, not a zombie


def reap(procs: list[tuple[int, int]], grace_s: float = 3.0) -> int:
    """Wait up to ``grace_s`` for ``procs`` to exit, then SIGKILL the rest; return how many were
    killed."""
    deadline = time.monotonic() + grace_s
    while any(map(_alive, procs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = 0
    for proc in procs:
        if _alive(proc):
            try:
                os.kill(proc[0], signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


@contextlib.contextmanager
def sigint_deferred():
    """Hold back SIGINT (Ctrl-C) for the duration; raise KeyboardInterrupt at the end if one came.

    For the steps that must not stop halfway (starting and stopping Ray). A handler that only
    records, not a blocked signal mask: Python runs handlers in the main thread whichever thread
    the kernel hands the signal to, and the other threads' masks are not ours to change.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if got:
            raise KeyboardInterrupt
