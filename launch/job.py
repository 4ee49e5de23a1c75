"""What runs inside each SLURM task: rendezvous, train, and on a preemption signal, requeue.

The preemption protocol holds on every rank, not only on rank 0 (submitit calls its own
checkpoint hook on global rank 0 only, submitit issue #9, so a hook-based save would be
half a checkpoint):

1. The stop flag is installed first thing in every task, before the slow imports; SLURM's
   warning signal (``--signal=USR1@<s>``, or ``scancel --signal=USR1``) only sets it.
2. The loop all-reduces the flag at the next step boundary, so all ranks stop after the same
   step; every rank writes its part of the checkpoint; rank 0 adds the completion marker
   and moves ``latest`` after a barrier (``tte_scale.train.checkpoint``).
3. Rank 0 then runs ``scontrol requeue`` and every rank leaves with ``SystemExit``:
   submitit writes no result for it, so the job is not "done" to submitit's client.
4. The requeued job (same id, ``SLURM_RESTART_COUNT`` + 1) resumes from the newest complete
   checkpoint; a half-written folder is skipped.

SIGTERM (preemption with ``PreemptMode=REQUEUE``, or ``scancel``) also checkpoints at the step
boundary, but does not requeue: SLURM itself requeues a preempted job, and a cancelled job
must stay cancelled. A signal that arrives before the flag is installed reaches submitit's
own handler (the sbatch script sets ``SUBMITIT_PREEMPT_SIGNAL`` to the same signal), which
requeues from rank 0 through :meth:`TrainJob.checkpoint`; nothing newer than the last
checkpoint exists then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from tte_scale.launch.rendezvous import torch_env
from tte_scale.train.signals import EXIT_REQUEUE, StopFlag

log = logging.getLogger("launch.job")


@dataclass
class TrainJob:
    """The pickled callable submitit runs once per task (one task per GPU)."""

    config: dict[str, Any]
    """The resolved ``PretrainConfig`` as plain data (``to_dict``), frozen at submission."""
    requeue_signal: str = "USR1"
    """Signal name (without SIG) that means "checkpoint and requeue me"."""
    max_requeues: int = 20
    """Stop requeueing after this many restarts (``SLURM_RESTART_COUNT``)."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """Set in every task before training (e.g. NCCL settings)."""

    def __call__(self) -> dict[str, Any]:
        stop = StopFlag().install()
        node = os.environ.get("SLURMD_NODENAME") or os.uname().nodename
        rank = os.environ.get("SLURM_PROCID", "?")
        try:
            os.environ.update(self.extra_env)
            os.environ.update(torch_env(os.environ))
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            logging.getLogger("submitit").propagate = False  # it has its own handler: no doubled lines
            cfg = self._resolve_config()
            restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
            # `tte-scale launch status` reads this line (launch.status.START): rank -> node, restart,
            # and the digest that shows every rank runs the one config frozen at submission.
            log.info(
                "rank %s/%s on node %s (restart %d, config %s): master %s:%s, resume=%s",
                os.environ["RANK"],
                os.environ["WORLD_SIZE"],
                node,
                restarts,
                config_digest(self.config),
                os.environ["MASTER_ADDR"],
                os.environ["MASTER_PORT"],
                cfg.checkpoint.resume,
            )
            from tte_scale.train import train

            code = train(cfg, stop=stop)
        except Exception as exc:
            # One line naming the rank and node (launch.status.FAILED): the traceback that follows
            # in this log, and srun's own report, do not say which machine it was.
            log.error("rank %s on node %s failed: %s: %s", rank, node, type(exc).__name__, exc)
            raise
        finally:
            stop.uninstall()
        if code == EXIT_REQUEUE:
            self._leave_for_requeue(stop.signum, restarts)
        return {"rank": int(os.environ["RANK"]), "exit_code": code, "restarts": restarts}

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's hook (rank 0, signal before training started): requeue with the same job."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def _resolve_config(self):
        """The submitted config, with ``checkpoint.resume`` on when a complete checkpoint exists."""
        from tte_scale.config import from_dict
        from tte_scale.train import PretrainConfig
        from tte_scale.train.checkpoint import CheckpointManager

        cfg = from_dict(PretrainConfig, self.config)
        ckpts = CheckpointManager(cfg.out_dir / "checkpoints", cfg.checkpoint.keep_last)
        cfg.checkpoint.resume = ckpts.newest_complete() is not None
        return cfg

    def _leave_for_requeue(self, signum: int | None, restarts: int) -> None:
        """Every rank has saved. Rank 0 requeues (for the warning signal only), then all exit."""
        import torch.distributed as dist

        from tte_scale.train.dist import leave_process_group

        wanted = getattr(signal, f"SIG{self.requeue_signal}")
        rank = int(os.environ["RANK"])
        if rank == 0:
            if signum != wanted:
                log.warning(
                    "checkpointed after %s: not requeueing (SLURM requeues a preempted job itself; "
                    "a cancelled job stays cancelled)",
                    _name(signum),
                )
            elif restarts >= self.max_requeues:
                log.error(
                    "checkpointed, but not requeueing: %d restarts reached max_requeues=%d; resume by hand "
                    "(see README, 'Launching on a cluster')",
                    restarts,
                    self.max_requeues,
                )
            else:
                _requeue(os.environ["SLURM_JOB_ID"])
        if dist.is_initialized():
            # Keep the other ranks alive until the requeue call has returned: srun must not
            # see the whole step end (and the batch script finish) before SLURM knows.
            dist.barrier()
        leave_process_group()  # train() kept it for this barrier
        sys.exit(EXIT_REQUEUE)


def config_digest(config: dict[str, Any]) -> str:
    """A short digest of the frozen config, logged by every rank (same digest = same config)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum is not None else "no signal"


def _requeue(job_id: str) -> None:
    proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        log.error(
            "scontrol requeue %s failed (%s); resume by hand with --resume",
            job_id,
            (proc.stderr or proc.stdout).strip(),
        )
    else:
        log.warning("requeued job %s: it restarts from the checkpoint just written", job_id)
