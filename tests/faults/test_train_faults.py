"""Run-level faults of `tte-scale train` (issues #16 and #24), each through the real command.

The shards are built by the real sharding job from a small NIfTI cohort (volumes 12x24x24, K = 6
tasks, a labels fingerprint in build.json); every run is one CPU rank, a 1-block ViT, seconds of
training. One finished run (`finished`) is copied into each test's own out_dir, so the tests
are independent and only the runs a case needs are started.

Each case failed on the code before its fix (a second run into a used out_dir started anyway; a
resume took the highest step; a step folder was rewritten under its old marker; metrics repeated
steps; labels of another cohort trained silently; another K, a missing CUDA or Zarr store gave
tracebacks; model.img_size was not checked; data.max_bad_fraction was an unknown key).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "dist"))

from support.cohort import SHARD_SET, make_cohort, write_labels  # noqa: E402
from train_launch import DEMO, REPO, logs, run  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.dist, pytest.mark.timeout(900)]

SHAPE = [12, 24, 24]  # SHARD_SET's canonical volume


def _sets(shards: Path, labels: Path, out: Path) -> list[str]:
    return [
        f"out_dir={out}",
        f"data.shards_dir={shards}",
        f"data.labels_dir={labels}",
        "data.format=zarr",
        "data.num_workers=0",
        "data.shuffle_window=4",
        "model.img_size=null",  # follows the shards
        "model.patch_size=[4,8,8]",
        "model.embed_dim=16",
        "model.depth=1",
        "model.num_heads=2",
        "model.stem=patch",
        "head.rank=4",
        "head.bias_prefit=false",
        "optim.global_batch_size=2",
        "optim.lr=0.01",
        "optim.warmup_steps=1",
        "max_steps=4",
        "eval.every_steps=0",
        "eval.max_batches=1",
        "checkpoint.every_steps=2",
        "checkpoint.keep_last=10",
        "telemetry.progress_bar=false",
        "telemetry.tensorboard=false",
        "zero.stage=2",
        "zero.precision=fp32",
        "device=cpu",
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real shards (both formats, and a WebDataset-only build) of a 12-subject cohort, its labels,
    and one finished 4-step run (checkpoints at steps 2 and 4)."""
    from tte_scale.config import load_config
    from tte_scale.sharding.config import ShardConfig
    from tte_scale.sharding.job import build

    root = tmp_path_factory.mktemp("train_faults")
    scans, labels = make_cohort(root / "cohort", n_subjects=12, broken=False)
    shards = root / "shards"
    build(scans, labels, shards, load_config(ShardConfig, None, SHARD_SET), workers=0, progress=False)
    wds_only = root / "shards_wds"
    build(
        scans, labels, wds_only, load_config(ShardConfig, None, [*SHARD_SET, "format=wds"]), workers=0, progress=False
    )
    finished = root / "finished"
    codes = run(1, _sets(shards, labels, finished), root / "finished")
    assert codes == [0], logs(root / "finished", 1)
    return {
        "root": root,
        "scans": scans,
        "labels": labels,
        "shards": shards,
        "wds_only": wds_only,
        "finished": finished,
    }


def _copy_run(data, out: Path) -> Path:
    shutil.copytree(data["finished"], out)
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _other_labels(data, tmp_path: Path, K: int = 6, seed: int = 1) -> Path:
    """A labels folder for the same scans with other values (another cohort's labels, or another K)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(data["labels"] / "rows.parquet").to_pydict()
    return write_labels(
        tmp_path / f"labels_k{K}_s{seed}", rows["scan_id"], rows["subject_id"], rows["split"], K=K, seed=seed
    )


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- #16.2: a run never starts on top of another ---------------------------------------------------


def test_second_run_into_a_used_out_dir_is_refused_and_nothing_changes(data, tmp_path):
    out = _copy_run(data, tmp_path / "run")
    before = _tree(out)
    codes = run(1, _sets(data["shards"], data["labels"], out), tmp_path / "again")
    text = logs(tmp_path / "again", 1)
    assert codes == [2], text
    assert "already holds a training run" in text and "--resume" in text and "--overwrite" in text
    assert _tree(out) == before


def test_overwrite_removes_only_the_runs_own_files(data, tmp_path):
    out = _copy_run(data, tmp_path / "run")
    (out / "notes.txt").write_text("mine")
    (out / "slurm").mkdir()
    (out / "slurm" / "123_0_log.out").write_text("launcher log")
    old_run_id = _records(out)[0]["run_id"]
    sets = _sets(data["shards"], data["labels"], out) + ["max_steps=2"]
    codes = run(1, sets, tmp_path / "over", extra_args=("--overwrite",))
    assert codes == [0], logs(tmp_path / "over", 1)
    assert (out / "notes.txt").read_text() == "mine" and (out / "slurm" / "123_0_log.out").exists()
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_00000002"]
    recs = _records(out)
    assert [r["kind"] for r in recs if r["kind"] == "start"] == ["start"]
    assert {r["run_id"] for r in recs if r["kind"] == "start"} != {old_run_id}
    assert max(r["step"] for r in recs) == 2 and all(r["attempt"] == 1 for r in recs)


def test_overwrite_refuses_a_folder_without_the_train_marker(data, tmp_path):
    out = _copy_run(data, tmp_path / "run")
    (out / ".tte_scale_output.json").unlink()  # a run from before owner markers, or somebody else's files
    before = _tree(out)
    codes = run(1, _sets(data["shards"], data["labels"], out), tmp_path / "over", extra_args=("--overwrite",))
    text = logs(tmp_path / "over", 1)
    assert codes == [2] and "refusing to delete it" in text, text
    assert _tree(out) == before


def test_resume_follows_latest_not_the_highest_step(data, tmp_path):
    """An old run's higher step folder (complete, with its marker) beside this run's: `latest` wins."""
    out = _copy_run(data, tmp_path / "run")
    ckpts = out / "checkpoints"
    stale = ckpts / "step_00000030"
    shutil.copytree(ckpts / "step_00000004", stale)
    marker = json.loads((stale / "COMPLETE.json").read_text())
    (stale / "COMPLETE.json").write_text(json.dumps({**marker, "step": 30}))
    assert (ckpts / "latest").read_text() == "step_00000004"
    codes = run(
        1, _sets(data["shards"], data["labels"], out) + ["max_steps=6"], tmp_path / "res", extra_args=("--resume",)
    )
    text = logs(tmp_path / "res", 1)
    assert codes == [0], text
    assert f"resumed from {ckpts / 'step_00000004'} at step 4" in text
    assert (ckpts / "latest").read_text() == "step_00000006"


# -- #16.14: metrics after a resume ----------------------------------------------------------------


def test_metrics_after_a_resume_keep_the_resumed_runs_records(data, tmp_path):
    """The newest checkpoint is damaged, so the resume falls back to step 2 and does steps 3-4 again:
    metrics.jsonl then holds steps 3 and 4 twice; the records say which attempt wrote them and the
    readers (the trainer's read_metrics, eval's loss curve) keep the resumed run's."""
    from tte_scale.eval import read_loss_curve

    out = _copy_run(data, tmp_path / "run")
    model = out / "checkpoints" / "step_00000004" / "mp_rank_00_model_states.pt"
    model.write_bytes(model.read_bytes()[:100])
    codes = run(
        1, _sets(data["shards"], data["labels"], out) + ["optim.lr=0.05"], tmp_path / "res", extra_args=("--resume",)
    )
    assert codes == [0], logs(tmp_path / "res", 1)
    raw = [r for r in _records(out) if r["kind"] == "train"]
    assert [r["step"] for r in raw] == [1, 2, 3, 4, 3, 4]
    assert [r["attempt"] for r in raw] == [1, 1, 1, 1, 2, 2]
    curve = read_loss_curve(out / "metrics.jsonl")
    assert [s for s, _ in curve] == [1, 2, 3, 4]
    assert [loss for _, loss in curve] == [r["loss"] for r in raw[:2] + raw[4:]]


# -- #24.3: a step folder rewritten under an old marker ---------------------------------------------

_KILL_AFTER_MODEL_STATES = """
import sys
import deepspeed.runtime.engine as engine

def _killed(self, *args, **kwargs):
    raise SystemExit("injected kill: model states written, optimizer states not")

engine.DeepSpeedEngine._save_zero_checkpoint = _killed
from tte_scale.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_while_rewriting_a_step_leaves_no_checkpoint_the_check_accepts(data, tmp_path):
    """Resume falls back past step 4 (its model states are damaged), trains steps 3-4 with another
    learning rate, and is killed between the model-state and the optimizer-state writes of step 4:
    step 4 then holds new model states beside old optimizer states, which must not pass for complete."""
    import os

    from tte_scale.train.checkpoint import CheckpointManager, check_complete

    out = _copy_run(data, tmp_path / "run")
    step4 = out / "checkpoints" / "step_00000004"
    model = step4 / "mp_rank_00_model_states.pt"
    model.write_bytes(model.read_bytes()[:100])
    cmd = [sys.executable, "-c", _KILL_AFTER_MODEL_STATES, "train", "--config", str(DEMO), "--resume"]
    for s in _sets(data["shards"], data["labels"], out) + ["optim.lr=0.05"]:
        cmd += ["--set", s]
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "injected kill" in proc.stderr, proc.stderr[-3000:]
    assert model.stat().st_size > 100  # the model states of step 4 were rewritten before the kill
    assert not check_complete(step4)[0]
    found = CheckpointManager(out / "checkpoints", keep_last=10).resume_point()
    assert found.step == 2


# -- #16.6 / #16.10: inputs that do not belong together ---------------------------------------------


def test_labels_of_another_cohort_are_refused_naming_both_fingerprints(data, tmp_path):
    from tte_scale.provenance import labels_fingerprint

    other = _other_labels(data, tmp_path)
    codes = run(1, _sets(data["shards"], other, tmp_path / "run"), tmp_path / "lab")
    text = logs(tmp_path / "lab", 1)
    assert codes == [2], text
    built = json.loads((data["shards"] / "manifest" / "build.json").read_text())["labels_fingerprint"]
    assert labels_fingerprint(other)[:16] in text and built[:16] in text
    assert "Traceback" not in text and not (tmp_path / "run" / "checkpoints").exists()


def test_labels_with_another_number_of_tasks_is_one_clear_line(data, tmp_path):
    other = _other_labels(data, tmp_path, K=4)
    codes = run(1, _sets(data["shards"], other, tmp_path / "run"), tmp_path / "k")
    text = logs(tmp_path / "k", 1)
    assert codes == [2], text
    assert "K=4" in text and "K=6" in text and "Traceback" not in text


def test_zarr_format_on_a_webdataset_only_build_is_one_clear_line(data, tmp_path):
    codes = run(1, _sets(data["wds_only"], data["labels"], tmp_path / "run"), tmp_path / "fmt")
    text = logs(tmp_path / "fmt", 1)
    assert codes == [2], text
    assert "data.format=zarr" in text and "wds" in text and "Traceback" not in text


def test_cuda_without_cuda_is_one_clear_line(data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    codes = run(1, _sets(data["shards"], data["labels"], tmp_path / "run") + ["device=cuda"], tmp_path / "dev")
    text = logs(tmp_path / "dev", 1)
    assert codes == [2], text
    assert "device: cuda" in text and "Traceback" not in text


# -- #16.9: the volume shape ------------------------------------------------------------------------


def test_img_size_other_than_the_shards_is_refused(data, tmp_path):
    codes = run(
        1, _sets(data["shards"], data["labels"], tmp_path / "run") + ["model.img_size=[16,32,32]"], tmp_path / "img"
    )
    text = logs(tmp_path / "img", 1)
    assert codes == [2], text
    assert "model.img_size: [16, 32, 32]" in text and str(SHAPE) in text


def test_img_size_null_follows_the_shards_into_the_export(data):
    cfg = json.loads((data["finished"] / "encoder" / "config.json").read_text())
    assert cfg["config"]["img_size"] == SHAPE


# -- #16.11: the loader's integrity settings from the training config ------------------------------


def test_max_bad_fraction_is_settable_and_replacements_are_reported(data, tmp_path):
    """One damaged volume among the 8 train samples is more than the default limit (1%);
    `--set data.max_bad_fraction=0.5` lets the run finish, and metrics.jsonl counts the replacement."""
    import tarfile

    import pyarrow.parquet as pq

    shards = tmp_path / "shards"
    shutil.copytree(data["shards"], shards)
    samples = pq.read_table(shards / "manifest" / "samples.parquet").to_pylist()
    first = next(s for s in samples if s["split"] == "train" and s["status"] == "ok")
    tar_path = shards / "wds" / f"shard-{first['wds_shard']:06d}.tar"
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".volume.bin"))
    blob = bytearray(tar_path.read_bytes())
    blob[member.offset_data + member.size // 2] ^= 0xFF  # the manifest's volume_crc32c no longer matches
    tar_path.write_bytes(bytes(blob))

    out = tmp_path / "run"
    sets = _sets(shards, data["labels"], out) + ["data.format=wds", "data.max_bad_fraction=0.5"]
    codes = run(1, sets, tmp_path / "bad")
    assert codes == [0], logs(tmp_path / "bad", 1)
    data_recs = [r for r in _records(out) if r["kind"] == "data"]
    assert data_recs and data_recs[-1]["replaced_corrupt"] >= 1
