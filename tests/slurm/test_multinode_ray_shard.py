"""`tte-scale launch ray-shard --nodes 2` on the namespace cluster: the Ray head on node 1, a worker
on node 2, scan tasks on both (the shard records name the Ray node of every scan), and the same
bytes as an in-process `tte-scale shard --workers 0`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psutil
import pytest
from slurm_jobs import cli, logs, submitted_id, wait_for
from support.cohort import SHARD_SET, make_cohort

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(420)]


def _tree(root: Path) -> dict[str, str]:
    # _state/ holds resume bookkeeping (per-run), not part of the shards contract.
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "_state"
    }


def _ray_processes(job_id: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if f"ray_tte_{job_id}" in cmd:
            found.append(f"{proc.info['pid']}: {cmd[:200]}")
    return found


def test_ray_shard_on_two_nodes_matches_local_shard(cluster, tmp_path):
    scans, labels = make_cohort(tmp_path / "cohort", n_subjects=6)
    sets = [a for s in SHARD_SET for a in ("--set", s)]
    common = ["--scans", str(scans), "--labels", str(labels), "--no-progress", *sets]

    local = tmp_path / "local"
    proc = cli("shard", *common, "--out", str(local), "--workers", "0")
    assert proc.returncode == 0, proc.stderr + proc.stdout

    out = tmp_path / "ray"
    launch = ["launch", "ray-shard", "--nodes", "2", "--cpus-per-node", "1", "--time", "10", "--"]
    job_id = submitted_id(cli(*launch, *common, "--out", str(out), cluster=cluster))
    folder = out.with_name(out.name + ".slurm")
    try:
        info = wait_for(cluster, job_id, lambda i: i["JobState"] == "COMPLETED", "completion", timeout=360)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(folder, job_id)[-8000:]}") from None
    text = logs(folder, job_id)
    assert info["ExitCode"] == "0:0" and info["NodeList"] == "node[1-2]", text[-8000:]
    assert (folder / f"{job_id}_ray_done").read_text() == "0"
    assert not list(folder.glob("ray_auth_token-*")), "the job must remove its own Ray auth token"
    assert "--ray-address" in text

    # The head on node 1, a worker on node 2, each at its own address; scan tasks ran on both.
    nodes = json.loads((folder / f"{job_id}_ray_nodes.json").read_text())
    assert sorted((n["hostname"], n["address"]) for n in nodes) == [("node1", "10.213.0.11"), ("node2", "10.213.0.12")]
    ran = {row["node_id"] for rec in (out / "_state").glob("wds-*.json") for row in json.loads(rec.read_text())["rows"]}
    assert ran == {n["node_id"] for n in nodes}, (ran, nodes)

    want, got = _tree(local), _tree(out)
    assert any(name.endswith(".tar") for name in want) and any(name.startswith("manifest") for name in want), want
    assert got == want

    # `ray start --block` ends its processes on SIGTERM; the job must leave none behind, on any node.
    left = _ray_processes(job_id)
    assert not left, "\n".join(left)
