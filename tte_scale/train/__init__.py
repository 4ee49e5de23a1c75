"""DeepSpeed ZeRO pretraining: config, loop, checkpoints, telemetry (``tte-scale train``).

* ``PretrainConfig`` (``configs/pretrain/*.yaml``) and ``train(cfg) -> exit status``.
* ``EXIT_REQUEUE``: the exit status after a preemption signal (SIGUSR1/SIGTERM) once the run
  has checkpointed; launchers requeue the job when they see it.
* ``estimate_memory(cfg)``: DeepSpeed's model-state memory estimate for a config.

Heavy imports (deepspeed) happen inside the functions that need them.
"""

from tte_scale.train.config import PretrainConfig, resolve_batch
from tte_scale.train.signals import EXIT_REQUEUE

__all__ = ["EXIT_REQUEUE", "PretrainConfig", "resolve_batch", "train", "estimate_memory"]


def train(cfg: PretrainConfig, parts=None, stop=None) -> int:
    """See :func:`tte_scale.train.loop.train`."""
    from tte_scale.train.loop import train as _train

    return _train(cfg, parts, stop)


def estimate_memory(cfg: PretrainConfig) -> dict:
    """See :func:`tte_scale.train.memory.estimate_memory`."""
    from tte_scale.train.memory import estimate_memory as _estimate

    return _estimate(cfg)
