"""A real multi-node SLURM cluster for the session: network namespaces on this machine.

`make test` installs Debian's slurm-wlm, munge, openssh-server and pdsh when it runs as root
(tests/support/slurm_setup.sh); the fixture starts a head and three nodes, each in its own
network namespace (tests/support/netns_cluster.py), and removes everything when the session
ends, also after a failure. Not root, no binaries, or no namespaces: the tests that need the
cluster skip and say why.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from support.local_slurm import SlurmUnavailable
from support.netns_cluster import NetnsCluster, netns_unavailable_reason

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dist"))  # train_data: tiny shards + config


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    c = NetnsCluster(root / "cluster", nodes=3, cpus=4)
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "TTE_SCALE_JOB_INDEX")}
    # A SIGTERM (a CI timeout, `timeout`) ends the session through pytest's interrupt path, which
    # runs this fixture's teardown; by default it would leave the daemons and namespaces behind.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            c.start()
        except SlurmUnavailable as exc:
            pytest.fail(f"the namespace SLURM cluster did not start:\n{exc}")
        os.environ.update(c.client_env())
        os.environ["TTE_SCALE_JOB_INDEX"] = str(root / "jobs.jsonl")
        yield c
    finally:
        c.stop()
        signal.signal(signal.SIGTERM, previous)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
