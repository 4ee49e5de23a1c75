"""`launch slurm` refuses, before sbatch, what would fail hours later in the queue (no cluster needed).

Each refusal is exit status 2 with one line per problem; a dry run refuses the config problems
and lists the data problems under "checks before submission".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from slurm_jobs import cli
from train_data import config_overrides, make_data

DEMO = ["launch", "slurm", "--config", "configs/pretrain/demo.yaml", "--gpus-per-node", "0", "--tasks-per-node", "2"]


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    make_data(root)
    return root


def _job(data: Path, out: Path, *extra: str) -> list[str]:
    return [*DEMO, *_sets(config_overrides(data / "shards", data / "labels", out) + list(extra))]


def test_unknown_model_name_is_refused_even_in_a_dry_run(tmp_path):
    """#16 item 15: only registry names reach the job (the sbatch paths are quoted anyway)."""
    proc = cli(*DEMO, "--set", "model.name=vit3d_tiny;echo hi", "--set", f"out_dir={tmp_path}", "--dry-run")
    assert proc.returncode == 2, proc.stdout
    assert "model.name: unknown model 'vit3d_tiny;echo hi'" in proc.stderr and "vit3d_base" in proc.stderr
    assert proc.stdout == ""  # no script printed


def test_missing_data_folders_refuse_the_submission(tmp_path):
    proc = cli(*DEMO, "--set", f"out_dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].endswith("data.shards_dir: not set (--set data.shards_dir=FOLDER); the job would stop at start")
    assert lines[1].startswith("data.labels_dir: not set") and len(lines) == 2, lines
    assert not (tmp_path / "run").exists()  # nothing written: refused before submitit made its folder

    dry = cli(*DEMO, "--set", f"out_dir={tmp_path / 'run'}", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "  would refuse: data.shards_dir: not set" in dry.stdout


def test_incomplete_builds_are_refused(data, tmp_path):
    shards, labels = tmp_path / "shards", tmp_path / "labels"
    shutil.copytree(data / "shards", shards)
    shutil.copytree(data / "labels", labels)
    sets = config_overrides(shards, labels, tmp_path / "run")
    ok = cli(*DEMO, *_sets(sets), "--dry-run")
    assert ok.returncode == 0 and "  all passed" in ok.stdout, ok.stdout + ok.stderr

    listed = [r for r in pq.read_table(shards / "manifest" / "shards.parquet").to_pylist() if r["format"] == "wds"]
    tar = shards / listed[1]["path"]
    tar.write_bytes(tar.read_bytes()[:1000])  # a copy cut short
    shutil.rmtree(labels / "tte.zarr")
    proc = cli(*DEMO, *_sets(sets))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert f"data.shards_dir: {tar} has 1000 bytes, manifest/shards.parquet says {listed[1]['bytes']}" in lines[0]
    assert lines[1] == f"data.labels_dir: {labels} has no tte.zarr (incomplete `tte-scale labels` output?)", lines

    (shards / "manifest" / "samples.parquet").unlink()
    proc = cli(*DEMO, *_sets(sets))
    assert proc.returncode == 2 and "samples.parquet: manifest table not found" in proc.stderr, proc.stderr


def test_frozen_config_describes_the_job_that_runs():
    """`--nodes 2 --gpus-per-node 4` is the job: not the YAML's `cluster: {nodes: 8, gpus_per_node: 8}`."""
    proc = cli(
        "launch", "slurm", "--config", "configs/pretrain/vit_1b_64gpu.yaml", "--nodes", "2", "--gpus-per-node", "4",
        "--set", "optim.global_batch_size=64", "--dry-run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    frozen = json.loads(proc.stdout.split("# training config (frozen into the job at submission)\n", 1)[1])
    assert frozen["cluster"]["nodes"] == 2 and frozen["cluster"]["gpus_per_node"] == 4


def test_model_over_the_gpu_memory_is_refused():
    one_gpu = ["launch", "slurm", "--config", "configs/pretrain/vit_1b_64gpu.yaml", "--nodes", "1",
               "--gpus-per-node", "1", "--set", "optim.grad_accum_steps=1", "--set", "zero.stage=3", "--dry-run"]  # fmt: skip
    proc = cli(*one_gpu, "--gpu-mem", "16")
    assert proc.returncode == 2, proc.stderr
    assert "--gpu-mem 16: model vit3d_1b needs 17.4 GiB of model states per GPU (ZeRO-3 over 1 x 1 GPUs" in proc.stderr
    # a labels folder that is not on this machine (a dry run on a laptop): K from head.num_tasks
    proc = cli(*one_gpu, "--gpu-mem", "16", "--set", "data.labels_dir=/nonexistent/labels")
    assert proc.returncode == 2 and "needs 17.4 GiB" in proc.stderr, proc.stderr
    # the same model split over 64 GPUs fits
    proc = cli(*one_gpu[:4], "--nodes", "8", "--gpus-per-node", "8", "--dry-run", "--gpu-mem", "16")
    assert proc.returncode == 0, proc.stderr


def test_time_shorter_than_a_checkpoint_interval_is_refused(data, tmp_path):
    job = _job(data, tmp_path / "run", "checkpoint.every_steps=500")
    proc = cli(*job, "--time", "60", "--step-time-s", "30", "--dry-run")
    assert proc.returncode == 2, proc.stderr
    assert (
        "--time 60 min is shorter than one checkpoint interval (checkpoint.every_steps=500 x 30 s/step = "
        "250.0 min) plus --signal-delay-s 120: give at least 252 min" in proc.stderr
    )
    assert cli(*job, "--time", "4:12:00", "--step-time-s", "30", "--dry-run").returncode == 0

    # On --resume the run's own step time (metrics.jsonl) is used.
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_00000004"
    ckpt.mkdir(parents=True)
    from tte_scale.train.checkpoint import write_marker

    write_marker(ckpt, 4, 2)
    records = [{"kind": "train", "step": s, "step_s": 12.0} for s in range(1, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = cli(*job, "--time", "60", "--resume")
    assert proc.returncode == 2 and "x 12 s/step = 100.0 min" in proc.stderr, proc.stderr


def test_refuses_labels_of_another_build(tmp_path):
    from support.cohort import SHARD_SET, make_cohort

    scans, labels = make_cohort(tmp_path / "cohort", n_subjects=4)
    shards = tmp_path / "shards"
    built = cli("shard", "--scans", str(scans), "--labels", str(labels), "--out", str(shards), "--workers", "0",
                "--no-progress", *_sets(SHARD_SET))  # fmt: skip
    assert built.returncode == 0, built.stderr
    other = tmp_path / "other_labels"
    shutil.copytree(labels, other)
    import zarr

    time = zarr.open_group(str(other / "tte.zarr"), mode="r+")["time"]
    time[0, 0] = float(time[0, 0]) + 1.0  # another cohort's labels: same shape, other values
    sets = [f"data.shards_dir={shards}", f"data.labels_dir={other}", f"out_dir={tmp_path / 'run'}", "data.format=wds"]
    proc = cli(*DEMO, *_sets(sets), "--dry-run")
    assert "would refuse: data.labels_dir" in proc.stdout and "fingerprint" in proc.stdout, proc.stdout


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def test_status_names_each_rank_its_node_and_the_failure(tmp_path):
    """Per node, each rank's state and last step from the task logs; a dead rank named with its node."""
    from tte_scale.launch.status import rank_states, ranks_text

    start = "2026-01-01 00:00:00,000 INFO launch.job: rank {r}/4 on node {n} (restart {k}, config abc123): master x"
    step = "2026-01-01 00:00:01,000 INFO tte_scale.train.loop: rank {r}: step {s} done"
    for r, node in enumerate(["gpu1", "gpu1", "gpu2", "gpu2"]):
        lines = [start.format(r=r, n="old", k=0), step.format(r=r, s=3)]  # the run before the requeue
        lines += [start.format(r=r, n=node, k=1), step.format(r=r, s=7 if r != 3 else 5)]
        if r == 1:
            lines.append(
                "2026-01-01 ERROR launch.job: rank 1 on node gpu1 failed: RuntimeError: Connection closed by peer [10.0.0.2]:5012"
            )
        if r == 0:
            lines += ["srun: error: gpu2: task 3: Killed", "srun: error: gpu1: task 1: Exited with exit code 1"]
        _write(tmp_path / f"77_{r}_log.err", lines)
        _write(tmp_path / f"77_{r}_log.out", ["submitit INFO - Starting"])
    states = rank_states(tmp_path, "77", "RUNNING")
    text = "\n".join(ranks_text(states))
    assert "restart 1; config abc123" in text
    assert "node gpu1: 1/2 running" in text and "node gpu2: 1/2 running" in text, text
    assert "rank 0 running, step 7" in text and "rank 2 running, step 7" in text
    assert "failure: rank 3 on node gpu2: Killed (srun)" in text
    assert "failure: rank 1 on node gpu1: RuntimeError: Connection closed" in text
    assert text.index("failure: rank 3") < text.index("failure: rank 1")  # the cause before its consequences
    _write(tmp_path / "77_2_log.out", ["submitit INFO - Job completed successfully"])
    assert "rank 2 done, step 7" in "\n".join(ranks_text(rank_states(tmp_path, "77", "COMPLETING")))
