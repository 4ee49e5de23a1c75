"""Rank and world size from the environment, whichever launcher started us.

``deepspeed`` and ``torchrun`` set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT;
a SLURM task has SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID instead (the launcher exports
MASTER_ADDR/PORT). A plain ``python`` or ``tte-scale train`` call is one rank.

Timeouts: the process group's collectives time out after ``dist.timeout_minutes`` (DeepSpeed's
own default is 10 minutes). Work that rank 0 does alone while the others wait (universal
checkpoint conversion on resume, the encoder export, clearing a replaced run) can take longer
for 1B+ models, so the ranks wait for it on a separate gloo group (:func:`wait_group`) whose
timeout is ``dist.rank0_work_timeout_minutes``: a gloo barrier on CPU tensors leaves no NCCL
work pending, so NCCL's watchdog has nothing to time out meanwhile.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from datetime import timedelta

from tte_scale.config import ConfigError


@dataclass(frozen=True, slots=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int = 1
    """Ranks on this node (LOCAL_WORLD_SIZE from torchrun / our launchers, else SLURM's
    tasks per node, else 1): they share the node's /dev/shm."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dist_env(environ: dict[str, str] | None = None) -> DistEnv:
    """Read (and complete, for SLURM or a single process) the torch.distributed variables."""
    env = os.environ if environ is None else environ
    if "RANK" not in env and "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("RANK", "0")
    env.setdefault("WORLD_SIZE", "1")
    env.setdefault("LOCAL_RANK", "0")
    rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"])
    if not 0 <= rank < world:
        raise ConfigError(f"environment: RANK={rank} is outside WORLD_SIZE={world}")
    if world == 1:
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(_free_port()))
    elif "MASTER_ADDR" not in env or "MASTER_PORT" not in env:
        raise ConfigError("environment: WORLD_SIZE > 1 needs MASTER_ADDR and MASTER_PORT (set by the launcher)")
    return DistEnv(rank=rank, world_size=world, local_rank=local, local_world_size=_local_world_size(env))


def _local_world_size(env) -> int:
    if env.get("LOCAL_WORLD_SIZE", "").isdigit():
        return max(1, int(env["LOCAL_WORLD_SIZE"]))
    m = re.match(r"(\d+)", env.get("SLURM_NTASKS_PER_NODE", ""))  # e.g. "4" or "4(x2)"
    return max(1, int(m.group(1))) if m else 1


def cuda_device_index(local_rank: int, visible: int) -> int:
    """The CUDA device this rank uses, among the ``visible`` ones.

    Launchers either show every GPU of the node to every rank (torchrun, deepspeed: index =
    LOCAL_RANK) or bind one GPU per task (SLURM ``--gpus-per-task=1`` / ``gpu-bind``: each
    rank's CUDA_VISIBLE_DEVICES holds one id, so the only valid index is 0).
    """
    if visible < 1:
        raise ConfigError("device: cuda, but no CUDA device is visible (CUDA_VISIBLE_DEVICES?)")
    if visible == 1:
        return 0
    if local_rank >= visible:
        raise ConfigError(
            f"device: cuda, but LOCAL_RANK={local_rank} and only {visible} CUDA device(s) are visible; "
            "start at most one rank per GPU"
        )
    return local_rank


def init_distributed(device_type: str, timeout_minutes: float = 30.0) -> None:
    """Initialise torch.distributed through DeepSpeed: NCCL on GPUs, gloo on CPU; collectives
    time out after ``timeout_minutes``."""
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        deepspeed.init_distributed(
            dist_backend="nccl" if device_type == "cuda" else "gloo",
            auto_mpi_discovery=False,
            timeout=timedelta(minutes=timeout_minutes),
        )


def leave_process_group() -> None:
    """Destroy the process group (and every group made from it), if there is one. A process that
    exits with its gloo group still alive can abort in the interpreter's finalization (SIGABRT,
    "terminate called without an active exception", pytorch/pytorch#190489), turning a run that
    finished into a failed exit; every rank calls this at the same point, with nothing in flight."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wait_group(timeout_minutes: float):
    """A new gloo group over all ranks with its own timeout: for the object exchanges of the set-up
    and for waiting while rank 0 works alone (all ranks must call it, in the same order)."""
    import torch.distributed as dist

    return dist.new_group(backend="gloo", timeout=timedelta(minutes=timeout_minutes))
