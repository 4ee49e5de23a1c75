"""Rendezvous from SLURM's environment: who is rank 0, which port, which rank am I.

Pure functions of the environment, so every task of a job computes the same answer with no
communication: the master address is the first node of the allocation, the port is a
function of the job id (and of the restart count, so a requeued job never races its own
previous incarnation's socket in TIME_WAIT).
"""

from __future__ import annotations

import re

from tte_scale.errors import TteScaleError

# Away from the ephemeral range Linux hands out (32768-60999) and from well-known services.
PORT_BASE = 15000
PORT_SPAN = 15000


class RendezvousError(TteScaleError):
    """The SLURM environment lacks what the rendezvous needs."""


def expand_nodelist(nodelist: str) -> list[str]:
    """``"gpu[01-03,07],login1"`` -> ``["gpu01", "gpu02", "gpu03", "gpu07", "login1"]`` (order kept).

    SLURM's compressed host list: comma-separated groups, each a prefix with an optional
    bracketed list of numbers and ranges (zero padding kept), then an optional suffix.
    """
    hosts: list[str] = []
    for group in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,\[]*", nodelist):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", group)
        if m is None:
            hosts.append(group)
            continue
        prefix, ranges, suffix = m.groups()
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise RendezvousError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot read the range {part!r}")
            width = len(lo)
            for n in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{n:0{width}d}{suffix}")
    return hosts


def port_for(job_id: str, restart_count: int = 0) -> int:
    """A port every task derives alike from the job id ("123" or array "123_4") and restart count."""
    digits = [int(d) for d in re.findall(r"\d+", job_id)]
    if not digits:
        raise RendezvousError(f"job id {job_id!r} has no digits")
    key = digits[0] * 7919 + (digits[1] if len(digits) > 1 else 0) * 104729 + restart_count * 31
    return PORT_BASE + key % PORT_SPAN


def torch_env(slurm: dict[str, str]) -> dict[str, str]:
    """RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE/MASTER_ADDR/MASTER_PORT for one SLURM task.

    ``slurm`` is the task's environment (``os.environ``). The values override whatever the
    submitting shell exported, since sbatch passes the submitter's environment through.
    """
    need = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST")
    missing = [k for k in need if k not in slurm]
    if missing:
        raise RendezvousError(f"not inside a SLURM task: {', '.join(missing)} unset")
    job_id = slurm["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in slurm and "SLURM_ARRAY_TASK_ID" in slurm:
        job_id = f"{slurm['SLURM_ARRAY_JOB_ID']}_{slurm['SLURM_ARRAY_TASK_ID']}"
    hosts = expand_nodelist(slurm["SLURM_JOB_NODELIST"])
    world = int(slurm["SLURM_NTASKS"])
    nodes = max(1, int(slurm.get("SLURM_JOB_NUM_NODES", len(hosts))))
    return {
        "RANK": slurm["SLURM_PROCID"],
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": slurm["SLURM_LOCALID"],
        "LOCAL_WORLD_SIZE": str(world // nodes),
        "MASTER_ADDR": hosts[0],
        "MASTER_PORT": str(port_for(job_id, int(slurm.get("SLURM_RESTART_COUNT", "0") or 0))),
    }
