"""A real one-node SLURM cluster for the session (munged + slurmctld + slurmd on free ports).

`make test` installs Debian's slurm-wlm and munge when it runs as root (launch/testing/
slurm_setup.sh); this fixture only starts and stops the daemons. Not root, or no binaries:
the tests that need the cluster skip and say why.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from launch.testing.local_slurm import LocalSlurm, SlurmUnavailable, unavailable_reason

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dist"))  # train_data: tiny shards + config


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    try:
        cluster = LocalSlurm(root / "cluster").start()
    except SlurmUnavailable as exc:
        pytest.fail(f"the local SLURM cluster did not start:\n{exc}")
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "TTE_SCALE_JOB_INDEX")}
    os.environ.update(cluster.client_env())
    os.environ["TTE_SCALE_JOB_INDEX"] = str(root / "jobs.jsonl")
    try:
        yield cluster
    finally:
        cluster.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
