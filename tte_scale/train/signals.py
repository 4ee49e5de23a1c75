"""Preemption signals: SIGUSR1/SIGTERM ask the run to checkpoint and exit for a requeue.

SLURM sends SIGUSR1 (``--signal=USR1@<secs>``) before a time limit and SIGTERM before a
preemption. The handler only sets a flag; the loop all-reduces it at the step boundary so
every rank stops after the same step, saves, and exits with :data:`EXIT_REQUEUE`.
DataLoader workers are separate processes that inherit handlers: they must ignore these
signals (see :func:`ignore_in_worker`) so only the main process decides when to stop.
"""

from __future__ import annotations

import signal
import types

# EX_TEMPFAIL from sysexits.h: "temporary failure, the user is invited to retry". The SLURM
# launcher (and any wrapper) treats this exit status as "requeue me".
EXIT_REQUEUE = 75

PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopFlag:
    """Set by SIGUSR1/SIGTERM; installed in the main process of each rank."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        # Do no work here: the step in flight finishes, then the loop checkpoints.
        self.signum = signum

    def install(self) -> StopFlag:
        for sig in PREEMPT_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()


def ignore_in_worker(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: workers ignore the preemption signals."""
    for sig in PREEMPT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class signals_blocked:
    """Block the preemption signals while DataLoader workers may be started.

    Worker processes inherit the signal mask of the thread that forks them, so workers
    started inside this block never see SIGUSR1/SIGTERM; the main process gets a signal that
    arrived meanwhile as soon as the block ends.
    """

    def __enter__(self) -> signals_blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, PREEMPT_SIGNALS)
        return self

    def __exit__(self, *exc) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, PREEMPT_SIGNALS)
