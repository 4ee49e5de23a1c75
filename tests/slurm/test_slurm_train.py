"""Training through the real submitit SlurmExecutor on a one-node SLURM: finish, preempt, requeue, resume.

Both jobs are the same 2-task CPU run (gloo), submitted with `tte-scale launch slurm`. The
reference runs to the end; the other gets `scancel --signal=USR1` mid-run, which every
process of the step receives (DataLoader workers included: they must ignore it). It has no
periodic checkpoints, so the only checkpoint it can resume from is the one the preemption
protocol writes; it must requeue, resume and end at the same step with every step logged
exactly once and the losses of the reference (bit for bit through the first step after the
resume).
"""

from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path

import pytest

from slurm_jobs import cli, job_info, wait_for
from train_data import config_overrides, make_data

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(600)]

STEPS = 20
LAUNCH = ["launch", "slurm", "--config", "configs/pretrain/demo.yaml", "--nodes", "1", "--gpus-per-node", "0",
          "--tasks-per-node", "2", "--cpus-per-task", "1", "--time", "15", "--signal-delay-s", "60",
          "--job-name", "tte-test"]


def _overrides(root: Path, out: Path, workers: int, ckpt_every: int) -> list[str]:
    shards, labels = root / "data" / "shards", root / "data" / "labels"
    sets = config_overrides(shards, labels, out) + [
        f"max_steps={STEPS}", "eval.every_steps=0", "telemetry.log_every=1", f"data.num_workers={workers}",
        f"checkpoint.every_steps={ckpt_every}", "checkpoint.export_encoder=false", "zero.stage=3"]
    return [a for s in sets for a in ("--set", s)]


def _submit(args: list[str]) -> str:
    proc = cli(*LAUNCH, *args)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    first = proc.stdout.splitlines()[0]
    assert first.startswith("submitted job "), proc.stdout
    return first.split()[2].rstrip(":")


def _train_records(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


def _logs(folder: Path, job_id: str) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(folder.glob(f"{job_id}_*_log.*")))


@pytest.fixture(scope="module")
def reference(slurm_cluster, tmp_path_factory):
    """The uninterrupted job (also the 'tiny job finishes' test's subject)."""
    root = tmp_path_factory.mktemp("slurm_train")
    make_data(root / "data")
    out = root / "reference"
    job_id = _submit(_overrides(root, out, workers=1, ckpt_every=10))
    info = wait_for(job_id, lambda i: i["JobState"] == "COMPLETED", "completion")
    return root, out, job_id, info


def test_two_task_job_finishes_with_all_steps(reference):
    root, out, job_id, info = reference
    folder = out / "slurm"
    assert info["ExitCode"] == "0:0", _logs(folder, job_id)[-6000:]
    assert [r["step"] for r in _train_records(out)] == list(range(1, STEPS + 1))
    # submitit wrote one result per task (rank): both ranks ran, in one 2-rank world.
    results = [pickle.loads((folder / f"{job_id}_{t}_result.pkl").read_bytes()) for t in (0, 1)]
    assert [r[0] for r in results] == ["success", "success"], results
    assert sorted(r[1]["rank"] for r in results) == [0, 1]
    assert all(r[1]["exit_code"] == 0 and r[1]["restarts"] == 0 for r in results)
    assert (out / "checkpoints" / f"step_{STEPS:08d}" / "COMPLETE.json").is_file()
    memory = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "memory"]
    assert memory and memory[0]["world_size"] == 2

    status = cli("launch", "status", job_id, "--lines", "5")
    assert status.returncode == 0, status.stderr
    assert "JobState=COMPLETED" in status.stdout and f"{job_id}_0_log.out" in status.stdout


def test_usr1_preemption_requeues_and_resumes_exactly(reference, tmp_path):
    root, ref_out, _, _ = reference
    out = tmp_path / "preempted"
    # No periodic checkpoint: the resume can only come from the preemption checkpoint.
    job_id = _submit(_overrides(root, out, workers=1, ckpt_every=0))
    wait_for(job_id, lambda i: len(_train_records(out)) >= 3, "step 3")
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
    wait_for(job_id, lambda i: int(i.get("Restarts", 0)) >= 1, "the requeue")
    info = wait_for(job_id, lambda i: i["JobState"] == "COMPLETED", "completion after the requeue")
    logs = _logs(out / "slurm", job_id)
    assert info["ExitCode"] == "0:0" and info["Restarts"] == "1", logs[-6000:]
    assert "requeued job" in logs and "resumed from" in logs, logs[-6000:]

    got = _train_records(out)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1)), "lost or repeated steps"
    stops = sorted(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*"))
    assert len(stops) == 2 and stops[1] == STEPS, stops  # the one checkpoint the signal caused, and the last
    stop = stops[0]
    ref = {r["step"]: r for r in _train_records(ref_out)}
    # The resumed run replays the reference bit for bit: same batches, same drop-path draws (the
    # loader keeps its own RNG, so worker start-up does not shift the global one), same optimizer state.
    for r in got:
        assert r["loss"] == ref[r["step"]]["loss"], (r["step"], stop)
    assert job_info(job_id)["JobState"] == "COMPLETED"
