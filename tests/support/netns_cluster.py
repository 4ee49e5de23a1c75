"""A SLURM cluster of several "machines" on this one, for the multi-node tests: network namespaces.

Each machine is a Linux network namespace with its own address, hostname (a UTS namespace) and
``/etc/hosts``; the filesystem, and with it the checkout, is shared, as on a cluster::

    head   10.213.0.1   slurmctld, munged; the login node: sbatch, squeue, scontrol, ssh, pdsh
    node1  10.213.0.11  slurmd, sshd
    node2  10.213.0.12  slurmd, sshd
    ...

The head's namespace holds a bridge; each node is joined to it by a veth pair. No interface or
address is added to this machine's own namespace, and the namespaces have no route beyond their
subnet, so nothing reaches (or is reachable from) the outside network. munged runs on the head
and is shared through its socket file (every namespace sees the filesystem), so every process of
the cluster lives in one of its namespaces. Host names resolve through the cluster's hosts file
(``<root>/hosts``), which each daemon and client sees as ``/etc/hosts`` in a mount namespace of
its own; on the head, ``<root>/ssh/client`` likewise stands in for ``/etc/ssh`` (this cluster's
key, known hosts, no prompts) and each sshd reads its own config from ``<root>/ssh``. The real
``/etc/hosts``, ``/etc/ssh`` and ``~/.ssh`` are never touched.

:meth:`NetnsCluster.stop` (also run when :meth:`start` fails) cancels the jobs, stops the
daemons, ends whatever still runs in the namespaces (job steps, Ray nodes), deletes the
namespaces (their links go with them). Names carry this
process's id (``ttes<pid>-node1``), so two test sessions never collide, and a session that was
killed before it could clean up is cleaned by the next one (namespaces whose pid is gone).

Root only (namespaces, slurmd). By hand: ``python tests/support/netns_cluster.py DIR`` starts
one and prints how to use it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, when run as a script
from support.local_slurm import LocalSlurm, SlurmUnavailable, _which, slurm_conf, unavailable_reason  # noqa: E402
from support.local_slurm import main as local_slurm_main  # noqa: E402

SUBNET = "10.213.0"
HEAD = "head"
CTLD_PORT, SLURMD_PORT = 6817, 6818  # SLURM's defaults: each namespace has its own ports
_NAME = re.compile(r"^ttes(\d+)-[a-z0-9]+$")


def netns_unavailable_reason() -> str | None:
    """Why the namespace cluster cannot start here, or None when it can."""
    reason = unavailable_reason()
    if reason:
        return reason
    missing = [b for b in ("ip", "nsenter", "unshare", "sshd", "ssh", "ssh-keygen", "pdsh") if _which(b) is None]
    if missing:
        return (
            f"the multi-node test cluster needs {', '.join(missing)} (Debian: iproute2, util-linux, "
            "openssh-server, openssh-client, pdsh; `make test` installs them as root)"
        )
    probe = f"ttes{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode:
        return f"cannot create network namespaces here ({made.stderr.strip()}): the multi-node tests need them"
    _ip("netns", "del", probe, check=False)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([_which("ip"), *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode:
        raise SlurmUnavailable(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _ns_pids(ns: str) -> list[int]:
    out = _ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_namespace(ns: str, timeout: float = 20.0) -> None:
    """End every process still inside ``ns`` (ours: nothing else runs there), then delete it."""
    pids = _ns_pids(ns)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5.0)
        while (pids := _ns_pids(ns)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pids:
            break
    _ip("netns", "del", ns, check=False)


def clean_stale() -> list[str]:
    """Remove the namespaces of test sessions that died without cleaning up."""
    removed = []
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            remove_namespace(name, timeout=5.0)
            removed.append(name)
    return removed


class NetnsCluster(LocalSlurm):
    """``nodes`` SLURM nodes (``node1``...) and a head, each in its own network namespace."""

    cluster_name = "ttescalenet"

    def __init__(self, root: Path, nodes: int = 3, cpus: int = 4, ssh: bool = True) -> None:
        super().__init__(root, cpus=cpus)
        self.nodes = [f"node{i}" for i in range(1, nodes + 1)]
        self.addr = {HEAD: f"{SUBNET}.1", **{n: f"{SUBNET}.{10 + i}" for i, n in enumerate(self.nodes, 1)}}
        self.ns = {host: f"ttes{os.getpid()}-{host}" for host in self.addr}
        self.ssh = ssh
        self.client_prefix = self._on(HEAD, [])
        self._made_sshd_dir = False

    # -- the cluster's commands -------------------------------------------------------------------

    def run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        """Run ``cmd`` on the head (the login node), with the cluster's client environment."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run([*self.client_prefix, *cmd], env={**self._env(), **kw.pop("env", {})}, **kw)

    def start(self, timeout: float = 60.0) -> NetnsCluster:
        reason = netns_unavailable_reason()
        if reason:
            raise SlurmUnavailable(reason)
        clean_stale()
        try:
            self._network()
            self._hosts_file()
            if self.ssh:
                self._ssh_setup()
            super().start(timeout)
            if self.ssh:
                self._start_sshd(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        super().stop()
        for ns in self.ns.values():
            remove_namespace(ns)
        if self._made_sshd_dir:
            try:
                Path("/run/sshd").rmdir()
            except OSError:
                pass

    # -- set-up ---------------------------------------------------------------------------------

    def _on(self, host: str | None, cmd: list[str]) -> list[str]:
        host = host or HEAD
        # Join the host's network namespace, then a mount and a UTS namespace of the command's own:
        # the cluster's hosts file (and, on the head, ssh client config) mounted over /etc/hosts
        # (/etc/ssh) there only, and the host's name, which resolves to its address (srun, gloo and
        # Ray look themselves up by it). Not `ip netns exec`: it remounts /sys, hiding the cgroup
        # mounts slurmd needs.
        ssh_dir = str(self.root / "ssh" / "client") if host == HEAD and self.ssh else ""
        return [
            _which("nsenter"),
            f"--net=/run/netns/{self.ns[host]}",
            "--",
            _which("unshare"),
            "--mount",
            "--uts",
            "--",
            "sh",
            "-c",
            'mount --bind "$1" /etc/hosts && { [ -z "$2" ] || mount --bind "$2" /etc/ssh; } '
            '&& hostname "$0" && shift 2 && exec "$@"',
            host,
            str(self.root / "hosts"),
            ssh_dir,
            *cmd,
        ]

    def _slurm_conf(self) -> str:
        nodes = [(n, self.addr[n]) for n in self.nodes]
        return slurm_conf(
            self.root, CTLD_PORT, SLURMD_PORT, self.cpus, (HEAD, self.addr[HEAD]), nodes, self.cluster_name
        )

    def _network(self) -> None:
        head = self.ns[HEAD]
        for ns in self.ns.values():
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", head, "link", "add", "br0", "type", "bridge")
        _ip("-n", head, "addr", "add", f"{self.addr[HEAD]}/24", "dev", "br0")
        _ip("-n", head, "link", "set", "br0", "up")
        for i, node in enumerate(self.nodes, 1):
            # Both ends are created inside the namespaces: no name is ever taken in this one.
            _ip("link", "add", "eth0", "netns", self.ns[node], "type", "veth", "peer", "name", f"v{i}", "netns", head)
            _ip("-n", head, "link", "set", f"v{i}", "master", "br0", "up")
            _ip("-n", self.ns[node], "addr", "add", f"{self.addr[node]}/24", "dev", "eth0")
            _ip("-n", self.ns[node], "link", "set", "eth0", "up")

    def _hosts_file(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        hosts = "127.0.0.1 localhost\n" + "".join(f"{addr} {host}\n" for host, addr in self.addr.items())
        (self.root / "hosts").write_text(hosts)

    def _ssh_setup(self) -> None:
        d = self.root / "ssh"
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        keygen = _which("ssh-keygen")
        for name in ("client_key", "host_key"):
            if not (d / name).exists():
                subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True, timeout=30)
        (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
        host_pub = (d / "host_key.pub").read_text().split()[:2]
        (d / "known_hosts").write_text(
            "".join(f"{n},{self.addr[n]} {' '.join(host_pub)}\n" for n in self.nodes + [HEAD])
        )
        for node in self.nodes:
            (d / f"sshd_config.{node}").write_text(
                f"ListenAddress {self.addr[node]}\nPort 22\nHostKey {d}/host_key\n"
                f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                f"PidFile {self.root}/run/sshd.{node}.pid\nPrintMotd no\nPrintLastLog no\nX11Forwarding no\n"
            )
        client = d / "client"
        client.mkdir(exist_ok=True)
        (client / "ssh_config").write_text(
            f"Host *\n    IdentityFile {d}/client_key\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {d}/known_hosts\n    StrictHostKeyChecking yes\n    BatchMode yes\n"
            "    ConnectTimeout 10\n    LogLevel ERROR\n"
        )
        if not Path("/run/sshd").exists():  # sshd's privilege separation folder (Debian's service makes it)
            Path("/run/sshd").mkdir(mode=0o755)
            self._made_sshd_dir = True

    def _start_sshd(self, timeout: float) -> None:
        for node in self.nodes:
            cmd = [_which("sshd"), "-D", "-e", "-f", str(self.root / "ssh" / f"sshd_config.{node}")]
            self._spawn(f"sshd.{node}", self._on(node, cmd))
        ssh = _which("ssh")
        self._wait(
            lambda: all(self.run([ssh, n, "true"], timeout=30).returncode == 0 for n in self.nodes),
            "ssh into every node",
            timeout,
        )


def main(argv: list[str] | None = None) -> int:
    """Start a cluster in DIR and keep it up until Ctrl-C (for trying the launcher by hand)."""
    return local_slurm_main(argv, NetnsCluster)


if __name__ == "__main__":
    sys.exit(main())
