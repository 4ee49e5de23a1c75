"""The run folder: when a run may start, what --overwrite removes, attempts; the metrics reader."""

from __future__ import annotations

import json

import pytest

from tte_scale.errors import InputError
from tte_scale.outputs import mark, read_marker
from tte_scale.train.metrics_log import MetricsWriter, read_metrics
from tte_scale.train.run_dir import plan_start, start_run


def _plan(out, **kw):
    return plan_start(out, **{"resume": False, "overwrite": False, "has_checkpoint": False, **kw})


def _fake_run(out):
    (out / "checkpoints" / "step_00000002").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 1.0}\n')
    mark(out, "train", run_id="r1", attempts=1)


def test_new_run_only_where_no_run_is(tmp_path):
    assert _plan(tmp_path / "absent") == "new"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    (tmp_path / "foreign" / "checkpoints").mkdir()  # empty: no run
    assert _plan(tmp_path / "foreign") == "new"
    _fake_run(tmp_path / "used")
    with pytest.raises(InputError, match="already holds a training run"):
        _plan(tmp_path / "used")
    assert _plan(tmp_path / "used", resume=True) == "resume"
    assert _plan(tmp_path / "used", overwrite=True) == "replace"


def test_out_dir_of_another_command_or_inside_an_input_is_refused(tmp_path):
    (tmp_path / "shards").mkdir()
    mark(tmp_path / "shards", "shard")
    with pytest.raises(InputError, match="written by `tte-scale shard`"):
        _plan(tmp_path / "shards")
    with pytest.raises(InputError, match="lies inside the input"):
        _plan(tmp_path / "labels" / "run", inputs=[tmp_path / "labels"])
    _fake_run(tmp_path / "run")
    (tmp_path / "run" / "encoder").mkdir()
    with pytest.raises(InputError, match="holds the input"):
        _plan(tmp_path / "run", overwrite=True, inputs=[tmp_path / "run" / "encoder"])  # fine-tuning from it


def test_a_requeued_slurm_job_without_checkpoint_starts_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    out = tmp_path / "run"
    assert start_run(out, "new").attempt == 1
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 1.0}\n')
    assert _plan(out) == "replace"  # the same job, killed before its first checkpoint
    with pytest.raises(InputError, match="already holds"):
        _plan(out, has_checkpoint=True)  # with a checkpoint the launcher resumes instead
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    with pytest.raises(InputError, match="already holds"):
        _plan(out)  # another job: never


def test_start_run_counts_attempts_and_replace_removes_only_run_entries(tmp_path):
    out = tmp_path / "run"
    first = start_run(out, "new")
    _fake_run(out)
    mark(out, "train", run_id=first.run_id, attempts=1)
    (out / "notes.txt").write_text("mine")
    again = start_run(out, "resume")
    assert again.run_id == first.run_id and again.attempt == 2
    fresh = start_run(out, "replace")
    assert fresh.run_id != first.run_id and fresh.attempt == 1
    assert sorted(p.name for p in out.iterdir()) == [".tte_scale_output.json", "notes.txt"]
    assert read_marker(out)["run_id"] == fresh.run_id
    copied = tmp_path / "copied"
    assert start_run(copied, "resume", run_id="from-ckpt").run_id == "from-ckpt"


def test_read_metrics_keeps_the_resumed_runs_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    w = MetricsWriter(tmp_path, enabled=True, tensorboard=False, attempt=1)
    w.write({"kind": "start", "step": 0})
    for s in (1, 2, 3):
        w.write({"kind": "train", "step": s, "loss": float(s)})
    w.write({"kind": "eval", "step": 3, "val_loss": 9.0})
    w.close()
    with open(path, "a") as fh:
        fh.write('{"kind": "train", "step": 4, "lo')  # killed mid-line
    w = MetricsWriter(tmp_path, enabled=True, tensorboard=False, attempt=2)
    w.write({"kind": "start", "step": 2})  # resumed from the step-2 checkpoint
    w.write({"kind": "train", "step": 3, "loss": 30.0})
    w.close()
    train = read_metrics(path, kind="train")
    assert [(r["step"], r["loss"], r["attempt"]) for r in train] == [(1, 1.0, 1), (2, 2.0, 1), (3, 30.0, 2)]
    assert read_metrics(path, kind="eval") == []  # the eval of step 3 belonged to the abandoned attempt
    assert [r["attempt"] for r in read_metrics(path, kind="start")] == [1, 2]
    lines = path.read_text().splitlines()
    assert lines[5] == '{"kind": "train", "step": 4, "lo' and json.loads(lines[6])["kind"] == "start"


def test_read_metrics_refuses_a_damaged_line_that_no_restart_explains(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 1.0}\nnot json\n{"kind": "train", "step": 2, "loss": 1.0}\n')
    with pytest.raises(InputError, match="line 2 is not JSON"):
        read_metrics(path)
