"""`tte-scale shard` end to end on Ray: 1 vs 2 workers byte-identical; kill mid-way + re-run."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.cohort import SHARD_SET, make_cohort
from support.phantoms import FAKE_PHI

pytestmark = [pytest.mark.slow, pytest.mark.dist]


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "_state"
    }


def shard_cmd(cli_cmd, scans, labels, out, workers, executor="tasks"):
    args = [
        *cli_cmd,
        "shard",
        "--scans",
        str(scans),
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--no-progress",
        "--set",
        f"executor={executor}",
    ]
    for s in SHARD_SET:
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("e2e"), n_subjects=16, dicom_phi=True)


def test_one_and_two_workers_byte_identical_with_kill_and_resume(cohort, cli_cmd, tmp_path):
    """Ray tasks with 1 worker, this process without Ray, and a Ray Data pipeline with 2 workers
    killed mid-way then re-run: all three shards folders are byte-identical (3 Ray start-ups keep
    this under ~2 min)."""
    from tte_scale.config import load_config
    from tte_scale.sharding.config import ShardConfig
    from tte_scale.sharding.job import build

    scans, labels = cohort
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    one = tmp_path / "one"
    res = subprocess.run(
        shard_cmd(cli_cmd, scans, labels, one, 1), capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "failed 1" in res.stdout and "1 not labelled" in res.stdout
    for phi in FAKE_PHI:  # the DICOM series of the cohort is full of fake PHI: none in the logs
        assert phi not in res.stdout + res.stderr
    local = tmp_path / "local"
    build(scans, labels, local, load_config(ShardConfig, None, SHARD_SET), workers=0, progress=False)
    assert tree(local) == tree(one)

    # 2 workers: kill the whole job (driver and its Ray processes) once the first shard is complete
    two = tmp_path / "two"
    proc = subprocess.Popen(
        shard_cmd(cli_cmd, scans, labels, two, 2, "data"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(list((two / "_state").glob("wds-*.json"))) >= 1:
            break
        time.sleep(0.02)
    was_running = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert was_running, "the job finished before it could be killed"
    assert not (two / "manifest" / "samples.parquet").exists()
    res = subprocess.run(
        shard_cmd(cli_cmd, scans, labels, two, 2, "data"), capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # Ray Data's own log lines (plan, progress-bar warning, "execution finished") stay out of the console
    assert "Dataset" not in res.stderr and "WARNING" not in res.stderr and "INFO" not in res.stderr, res.stderr[-3000:]
    assert "complete shard(s) kept" in res.stdout and "0 complete shard(s)" not in res.stdout
    assert tree(two) == tree(one)
    assert not list(two.rglob("*.tmp-*")) and not list(two.rglob("*.partial"))


def test_synth_labels_shard_cli_no_phi(cli_cmd, tmp_path):
    """The real stages: `tte-scale synth --dicom` -> (move the cohort folder) -> `labels` ->
    `shard`; the moved cohort still shards (image paths are relative), no header PHI in the output."""
    import shutil

    import pyarrow.parquet as pq
    import pydicom

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    cohort, labels, out = tmp_path / "moved" / "cohort", tmp_path / "labels", tmp_path / "shards"
    res = subprocess.run(
        [*cli_cmd, "synth", "--out", str(tmp_path / "cohort"), "--subjects", "5", "--dicom", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    cohort.parent.mkdir()
    shutil.move(tmp_path / "cohort", cohort)
    steps = [
        [
            "labels",
            "--meds",
            str(cohort),
            "--scans",
            str(cohort / "scans.parquet"),
            "--out",
            str(labels),
            "--tasks",
            "16",
            "--no-progress",
        ],
        [
            "shard",
            "--scans",
            str(cohort / "scans.parquet"),
            "--labels",
            str(labels),
            "--out",
            str(out),
            "--config",
            "configs/shard/demo.yaml",
            "--workers",
            "0",
        ],
    ]
    logs = ""
    for step in steps:
        res = subprocess.run(
            [*cli_cmd, *step],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert res.returncode == 0, res.stderr[-3000:]
        logs += res.stdout + res.stderr if step[0] == "shard" else ""
    samples = pq.read_table(out / "manifest" / "samples.parquet").to_pylist()
    assert samples and all(s["status"] == "ok" for s in samples)
    dicom_dirs = [
        cohort / p
        for p in pq.read_table(cohort / "scans.parquet").column("image_path").to_pylist()
        if (cohort / p).is_dir()
    ]
    assert dicom_dirs
    ds = pydicom.dcmread(sorted(dicom_dirs[0].iterdir())[0])
    phi = {
        str(ds.get(k))
        for k in (
            "PatientName",
            "PatientID",
            "InstitutionName",
            "PatientBirthDate",
            "AccessionNumber",
            "StudyInstanceUID",
            "SeriesInstanceUID",
        )
        if ds.get(k)
    }
    assert phi
    blobs = [p.read_bytes() for p in out.rglob("*") if p.is_file()] + [logs.encode()]
    for value in phi:
        assert not any(value.encode() in b for b in blobs), "header value leaked"
