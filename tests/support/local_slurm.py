"""A one-node SLURM cluster on this machine, for tests: munged + slurmctld + slurmd in a temp folder.

Everything lives under one folder (config, munge key and socket, state, spool, logs) and
uses free TCP ports, so it neither needs nor touches /etc/slurm or a system munged. The
daemons run as root (SLURM only lets root start slurmd), in the foreground, as children
of the test process; :meth:`LocalSlurm.stop` ends exactly those processes.

The configuration is the smallest one that runs batch jobs without cgroups or accounting
(containers often have neither): ``proctrack/linuxproc``, ``task/none``, no accounting
storage. ``SlurmdParameters=config_overrides`` lets the node advertise more CPUs than the
machine has, so a 2-task job fits on a 2-core runner next to other work.

Usage (also ``python tests/support/local_slurm.py DIR`` to start one by hand)::

    cluster = LocalSlurm(tmp_dir).start()
    os.environ.update(cluster.client_env())   # sbatch/squeue/scontrol find it through SLURM_CONF
    ...
    cluster.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tte_scale.launch.procs import stop_process

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")


class SlurmUnavailable(RuntimeError):
    """This machine cannot host the test cluster (not root, or binaries missing); the reason says why."""


def _which(name: str) -> str | None:
    # Debian installs the daemons in /usr/sbin, which is not on every PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def unavailable_reason() -> str | None:
    """Why a local cluster cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "the local SLURM test cluster needs root (slurmd runs jobs as their user); run `make test` as root"
    missing = [b for b in DAEMONS + CLIENTS if _which(b) is None]
    if missing:
        return (
            f"SLURM/munge binaries not found: {', '.join(missing)} "
            "(install with `apt-get install -y slurm-wlm munge`; `make test` does it as root)"
        )
    return None


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def node_name() -> str:
    return socket.gethostname().split(".")[0]


def slurm_conf(
    root: Path,
    ctld_port: int,
    slurmd_port: int,
    cpus: int,
    controller: tuple[str, str],
    nodes: list[tuple[str, str]],
    cluster_name: str = "ttescaletest",
) -> str:
    """The whole slurm.conf of a test cluster: ``controller`` and each of ``nodes`` are (name, address).

    The per-node files (spool, pid, log) carry the node name (``%n``), so several slurmd sharing
    one filesystem (the namespace cluster of tests/support/netns_cluster.py) keep theirs apart.
    """
    ctl_name, ctl_addr = controller
    node_lines = "\n".join(
        f"NodeName={name} NodeAddr={addr} CPUs={cpus} RealMemory=4096 State=UNKNOWN" for name, addr in nodes
    )
    return f"""\
ClusterName={cluster_name}
SlurmctldHost={ctl_name}({ctl_addr})
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
SlurmdParameters=config_overrides
PropagateResourceLimits=NONE
KillWait=30
MinJobAge=3600
InactiveLimit=0
JobRequeue=1
{node_lines}
PartitionName=debug Nodes={",".join(name for name, _ in nodes)} Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """One node (this machine), one partition ``debug``, daemons started and stopped here.

    Subclasses place the controller and the nodes elsewhere (tests/support/netns_cluster.py: one
    network namespace each) through :meth:`_on` (the command prefix that runs a daemon on a host)
    and :attr:`client_prefix` (where sbatch/squeue/scontrol run).
    """

    cluster_name = "ttescaletest"

    def __init__(self, root: Path, cpus: int = 8) -> None:
        self.root = Path(root).resolve()
        self.cpus = cpus
        self.node = node_name()
        self.nodes = [self.node]
        self.conf = self.root / "slurm.conf"
        self.client_prefix: list[str] = []
        self._procs: dict[str, subprocess.Popen] = {}

    def client_env(self) -> dict[str, str]:
        """Environment for sbatch/squeue/scontrol (and the jobs they start) to reach this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def log(self, daemon: str) -> str:
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        reason = unavailable_reason()
        if reason:
            raise SlurmUnavailable(reason)
        for sub in ("munge", "state", "spool", "run", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            (self.root / "spool" / node).mkdir(exist_ok=True)
        # munged refuses group/world-writable key or socket folders.
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        self.conf.write_text(self._slurm_conf())
        try:
            m = self.root / "munge"
            # munged runs beside slurmctld; the daemons reach it through its socket file, which
            # every network namespace sees.
            self._spawn(
                "munged",
                self._on(
                    None,
                    [
                        _which("munged"),
                        "--foreground",
                        "--force",
                        f"--socket={m}/munge.socket",
                        f"--key-file={key}",
                        f"--log-file={self.root}/log/munged.log",
                        f"--pid-file={m}/munged.pid",
                        f"--seed-file={m}/munged.seed",
                    ],
                ),
            )
            self._wait(lambda: (m / "munge.socket").exists(), "munged socket", timeout)
            self._spawn("slurmctld", self._on(None, [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)]))
            self._wait(self._ctld_up, "slurmctld to answer", timeout)
            for node in self.nodes:
                self._spawn(
                    f"slurmd.{node}", self._on(node, [_which("slurmd"), "-D", "-N", node, "-f", str(self.conf)])
                )
            self._wait(self._nodes_idle, f"nodes {', '.join(self.nodes)} to be idle", timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons in reverse order (only the ones started here)."""
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            try:
                self._query("scancel", "--full", "--partition=debug")
            except subprocess.TimeoutExpired:
                pass  # the daemons are stopped below either way
        for name in reversed(list(self._procs)):
            proc = self._procs.pop(name)
            if proc.poll() is None:
                stop_process(proc, timeout=20)

    # -- where things run (overridden by the namespace cluster) -------------------------------

    def _slurm_conf(self) -> str:
        ctld_port, slurmd_port = _free_ports(2)
        local = (self.node, "127.0.0.1")
        return slurm_conf(self.root, ctld_port, slurmd_port, self.cpus, local, [local], self.cluster_name)

    def _on(self, host: str | None, cmd: list[str]) -> list[str]:
        """``cmd`` run on ``host`` (None: the controller's host)."""
        return cmd

    # -- helpers ------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.client_env()}

    def _spawn(self, name: str, cmd: list[str]) -> None:
        with open(self.root / "log" / f"{name}.stdout", "w") as out:
            self._procs[name] = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True
            )

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [n for n, p in self._procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{dead[0]} exited with status {self._procs[dead[0]].returncode}" if dead else "timed out"
                logs = "\n".join(
                    f"--- {n} ---\n{self.log(n)[-3000:]}"
                    f"{(self.root / 'log' / f'{n}.stdout').read_text(errors='replace')[-2000:]}"
                    for n in self._procs
                )
                raise SlurmUnavailable(f"waiting for {what}: {why}\n{logs}")
            time.sleep(0.3)

    def _query(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.client_prefix, _which(cmd[0]), *cmd[1:]], env=self._env(), capture_output=True, text=True, timeout=30
        )

    def _ctld_up(self) -> bool:
        return self._query("scontrol", "ping").stdout.count("UP") > 0

    def _nodes_idle(self) -> bool:
        out = self._query("sinfo", "--noheader", "--Node", "--format=%N %t", f"--nodes={','.join(self.nodes)}").stdout
        states = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
        return all(states.get(n, "").startswith("idle") for n in self.nodes)


def main(argv: list[str] | None = None, cluster_cls: type[LocalSlurm] | None = None) -> int:
    """Start a cluster in DIR and keep it up until Ctrl-C (for trying the launcher by hand)."""
    cluster_cls = cluster_cls or LocalSlurm
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python {sys.argv[0]} DIR", file=sys.stderr)
        return 2
    cluster = cluster_cls(Path(args[0])).start()
    print(f"export SLURM_CONF={cluster.conf}", flush=True)
    if getattr(cluster, "client_prefix", None):
        print(f"then run commands on the login node: {' '.join(cluster.client_prefix)} <command>", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
