"""Rank and world size from the environment, whichever launcher started us.

``deepspeed`` and ``torchrun`` set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT;
a SLURM task has SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID instead (the launcher exports
MASTER_ADDR/PORT). A plain ``python`` or ``tte-scale train`` call is one rank.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from tte_scale.config import ConfigError


@dataclass(frozen=True, slots=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int

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
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def init_distributed(device_type: str) -> None:
    """Initialise torch.distributed through DeepSpeed: NCCL on GPUs, gloo on CPU."""
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo", auto_mpi_discovery=False)
