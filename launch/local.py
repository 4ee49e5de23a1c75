"""One machine (torchrun) or several without SLURM (DeepSpeed's launcher and a hostfile).

Both start ``tte-scale train`` (or the command after ``--``: ``embed ...``) once per device; the trainer reads RANK/WORLD_SIZE/LOCAL_RANK
and MASTER_ADDR/PORT from whichever launcher set them, so the command after the launcher is
the same as for a single process.

* ``--nproc N`` alone: ``python -m torch.distributed.run --standalone --nproc_per_node N``
  (torchrun's rendezvous on a free local port; nothing to configure).
* ``--hostfile FILE``: ``deepspeed --hostfile FILE --no_local_rank --module tte_scale.cli``;
  DeepSpeed reaches the hosts over passwordless ssh (pdsh) and runs the same command on
  each. Lines look like ``node1 slots=8``; with ``--nproc N`` every host uses N slots.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from tte_scale.launch.slurm import LaunchError


def read_hostfile(path: Path) -> list[tuple[str, int]]:
    """``host slots=N`` lines (comments and blanks skipped); an error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise LaunchError(f"hostfile {path}: not found")
    hosts = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(\S+)\s+slots\s*=\s*(\d+)", line)
        if m is None or int(m.group(2)) < 1:
            raise LaunchError(f"hostfile {path} line {n}: expected 'HOST slots=N' with N >= 1, got {line!r}")
        hosts.append((m.group(1), int(m.group(2))))
    if not hosts:
        raise LaunchError(f"hostfile {path}: no hosts")
    return hosts


def train_args(config: str, overrides: list[str], resume: bool) -> list[str]:
    args = ["train", "--config", config]
    for o in overrides:
        args += ["--set", o]
    return args + (["--resume"] if resume else [])


def local_command(
    nproc: int,
    config: str,
    overrides: list[str],
    resume: bool = False,
    hostfile: Path | None = None,
    master_port: int | None = None,
    *,
    cli_args: list[str] | None = None,
) -> list[str]:
    """The launcher command line (``--dry-run`` prints it). ``cli_args``: another ``tte-scale``
    command run on every rank instead of ``train`` (``embed ...``)."""
    if nproc < 1:
        raise LaunchError(f"--nproc {nproc}: must be >= 1")
    args = train_args(config, overrides, resume) if cli_args is None else list(cli_args)
    if hostfile is None:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "tte_scale.cli",
            *args,
        ]
    read_hostfile(hostfile)  # fail here, not on the remote hosts
    deepspeed = shutil.which("deepspeed") or str(Path(sys.executable).with_name("deepspeed"))
    cmd = [deepspeed, "--hostfile", str(hostfile), "--no_local_rank"]
    if nproc:
        cmd += ["--num_gpus", str(nproc)]
    if master_port is not None:
        cmd += ["--master_port", str(master_port)]
    return cmd + ["--module", "tte_scale.cli", *args]
