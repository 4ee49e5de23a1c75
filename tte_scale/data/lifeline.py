"""DataLoader workers end when the trainer ends, however it ends (SIGKILL and OOM kills included).

On a clean exit or SIGINT/SIGTERM the trainer shuts its workers down itself. When it is killed
outright nothing runs in it, and nothing else ends the workers: torch's worker watchdog watches
the worker's *parent*, which under the forkserver start method (the default for Zarr) is the
forkserver, not the trainer; the forkserver in turn stays up while any worker holds its "alive"
pipe, and the multiprocessing resource tracker (which removes the run's named semaphores from
/dev/shm) stays up while any of them holds its pipe. Workers, forkserver and tracker then wait on
each other for ever, each worker holding its memory (issue 24).

So each worker watches the trainer itself: a daemon thread blocks on a pidfd of the trainer
(readable when that process exits; Linux >= 5.3, else it polls the pid once a second) and ends
the worker at once. With the workers gone the forkserver and the resource tracker see their pipes
close and exit, and the tracker unlinks the semaphores. The first worker to notice also removes
the trainer's multiprocessing temp folder (``/tmp/pymp-*``, which holds the forkserver's socket),
which only the trainer's own exit handler would otherwise remove.
"""

from __future__ import annotations

import os
import select
import shutil
import threading
import time

__all__ = ["die_with", "WorkerInit"]


def _wait_for_exit(pid: int) -> None:
    """Return when process ``pid`` has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        return
    except (AttributeError, OSError):  # no pidfd on this system: poll
        _poll_until_gone(pid)
        return
    try:
        select.select([fd], [], [])  # a pidfd turns readable when its process exits
    finally:
        os.close(fd)


def _poll_until_gone(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:  # exists, under another user
            pass
        time.sleep(1.0)


def die_with(pid: int, tempdir: str | None = None) -> threading.Thread:
    """End this process (``os._exit``) as soon as process ``pid`` exits; first remove ``tempdir``."""

    def watch() -> None:
        _wait_for_exit(pid)
        if tempdir:
            shutil.rmtree(tempdir, ignore_errors=True)
        os._exit(0)

    thread = threading.Thread(target=watch, name=f"die-with-{pid}", daemon=True)
    thread.start()
    return thread


class WorkerInit:
    """``worker_init_fn`` of the loader's DataLoader: the worker dies with the trainer.

    Made in the trainer, so it knows the trainer's pid (a worker's parent may be the forkserver)
    and the trainer's multiprocessing temp folder; picklable for spawn/forkserver workers.
    """

    def __init__(self, tempdir: str | None = None) -> None:
        self.trainer_pid = os.getpid()
        self.tempdir = tempdir

    def __call__(self, worker_id: int) -> None:
        die_with(self.trainer_pid, self.tempdir)
