"""Ray on SLURM for preprocessing: a Ray head on the allocation's first node, workers on the
others, then the sharding job (`tte-scale shard ... --ray-address HEAD:PORT`) against it.

One SLURM task per node. Task 0 starts ``ray start --head --block``, waits until every node
has joined, records them in ``<folder>/<jobid>_ray_nodes.json``, runs the sharding command,
writes ``<folder>/<jobid>_ray_done`` and stops its Ray node; the other tasks run
``ray start --address ... --block`` and leave when that file appears. ``ray start --block`` stops the processes it started on SIGTERM, so ending it
cleans the node without a machine-wide ``ray stop`` (which would also end other users'
Ray instances on a shared node). A sharding re-run resumes (complete shards are kept), so a
failed or timed-out job is simply resubmitted.

Each submission gets its own Ray auth token file (:func:`new_token_file`, a random name in the
submitit folder, 0600), named in the job's config; task 0 removes it when the job ends, so
concurrent submissions to one folder never share, overwrite or delete each other's token.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tte_scale.launch.procs import stop_process
from tte_scale.launch.rendezvous import expand_nodelist, port_for

log = logging.getLogger("launch.ray")


@dataclass
class RayShardJob:
    """The pickled callable run once per node."""

    shard_args: list[str]
    """Arguments of `tte-scale shard` (without --ray-address / --workers)."""
    join_timeout_s: float = 300.0
    """How long the head waits for all nodes to join."""
    token_file: str = ""
    """This job's Ray auth token, shared by every node and the driver (:func:`new_token_file`);
    task 0 removes it when the job ends."""

    def __call__(self) -> int:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.token_file:
            # Ray 2.5x turns token auth on for `ray start --head` when ~/.ray/auth_token exists, but
            # never for an explicit address (driver, `ray start --address`): the driver is then refused
            # (InvalidAuthToken) and retries forever. One explicit per-job token keeps them in step.
            if not Path(self.token_file).is_file():
                raise RuntimeError(
                    f"Ray auth token {self.token_file} is gone (removed when this job ended "
                    "once already?): submit again with `tte-scale launch ray-shard`"
                )
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN_PATH"] = self.token_file
        job_id = os.environ["SLURM_JOB_ID"]
        hosts = expand_nodelist(os.environ["SLURM_JOB_NODELIST"])
        head_ip = socket.gethostbyname(hosts[0])
        address = f"{head_ip}:{port_for(job_id, int(os.environ.get('SLURM_RESTART_COUNT', '0') or 0))}"
        done = Path(os.environ["SUBMITIT_FOLDER"]) / f"{job_id}_ray_done"
        cpus = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE") or "1"
        rank = int(os.environ["SLURM_PROCID"])
        ray_cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--block",
            f"--num-cpus={cpus}",
            "--disable-usage-stats",
        ]
        if rank == 0:
            done.unlink(missing_ok=True)
            host, port = address.split(":")
            ray_cmd += [
                "--head",
                f"--node-ip-address={host}",
                f"--port={port}",
                "--include-dashboard=false",
                f"--temp-dir=/tmp/ray_tte_{job_id}",
            ]
        else:
            # Every node its own temp folder: one shared /tmp (or two jobs on one node) must not
            # mix Ray's session files and sockets.
            ray_cmd += [f"--address={address}", f"--temp-dir=/tmp/ray_tte_{job_id}_{rank}"]
        node = subprocess.Popen(ray_cmd)
        requeued = False
        try:
            if rank == 0:
                nodes = _wait_for_nodes(address, len(hosts), self.join_timeout_s, node)
                write_json(Path(os.environ["SUBMITIT_FOLDER"]) / f"{job_id}_ray_nodes.json", nodes)
                cmd = [
                    sys.executable,
                    "-m",
                    "tte_scale.cli",
                    "shard",
                    *self.shard_args,
                    "--ray-address",
                    address,
                    "--no-progress",
                ]
                log.info("running: %s", shlex.join(cmd))
                code = subprocess.call(cmd)
                done.write_text(str(code))
                if code:
                    raise RuntimeError(f"sharding exited with status {code}; see this log")
                return code
            while not done.exists() and node.poll() is None:
                time.sleep(2)
            return 0
        except SystemExit:
            # submitit's handler of a preemption signal requeues the job, then exits: the
            # requeued run starts with this same config and needs the token file
            requeued = True
            raise
        finally:
            stop_process(node, timeout=60)
            if rank == 0 and not requeued:
                self.remove_token()

    def remove_token(self) -> None:
        """Delete this job's token file (its own path only: other jobs' files are never touched)."""
        if self.token_file:
            Path(self.token_file).unlink(missing_ok=True)


TOKEN_PREFIX = "ray_auth_token-"


def new_token_file(folder: Path) -> Path:
    """Create a fresh Ray auth token file for one submission and return its path.

    The name has a random part and the file is created with O_EXCL, so two submissions to the
    same folder, even at the same moment, get two files; mode 0600, as it is a credential.
    """
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        path = folder / f"{TOKEN_PREFIX}{secrets.token_hex(8)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            continue
    try:
        os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask (a strict one could drop the owner's read bit)
        os.write(fd, secrets.token_hex(32).encode())
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _wait_for_nodes(address: str, expected: int, timeout: float, head: subprocess.Popen) -> list[dict]:
    """Wait until ``expected`` Ray nodes are alive; return them (node id, address, host name, CPUs).

    The list goes to ``<folder>/<jobid>_ray_nodes.json``: with the shard records' ``node_id``
    (``_state/``), it shows which machines did the work.
    """
    import ray

    deadline = time.monotonic() + timeout
    while True:
        if head.poll() is not None:
            raise RuntimeError(f"the Ray head exited with status {head.returncode} before the job started")
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            break
        except (ConnectionError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    try:
        while (alive := sum(n["Alive"] for n in ray.nodes())) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {alive} of {expected} Ray nodes joined within {timeout:.0f} s")
            time.sleep(2)
        nodes = [
            {
                "node_id": n["NodeID"],
                "address": n["NodeManagerAddress"],
                "hostname": n["NodeManagerHostname"],
                "cpus": n["Resources"].get("CPU"),
            }
            for n in ray.nodes()
            if n["Alive"]
        ]
        log.info(
            "Ray cluster at %s: %d nodes (%s), %s CPUs",
            address,
            alive,
            ", ".join(f"{n['hostname']} {n['address']}" for n in nodes),
            ray.cluster_resources().get("CPU"),
        )
        return nodes
    finally:
        ray.shutdown()


def sbatch_parameters(
    nodes: int,
    cpus_per_node: int,
    time_min: int,
    job_name: str = "tte-shard",
    partition: str | None = None,
    account: str | None = None,
    qos: str | None = None,
    constraint: str | None = None,
    mem: str | None = None,
    setup: list[str] | None = None,
) -> dict:
    params = {
        "job_name": job_name,
        "nodes": nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": cpus_per_node,
        "time": time_min,
        "setup": list(setup or []) + ["export RAY_USAGE_STATS_ENABLED=0"],
    }
    for key, value in (
        ("partition", partition),
        ("account", account),
        ("qos", qos),
        ("constraint", constraint),
        ("mem", mem),
    ):
        if value is not None:
            params[key] = value
    return params
