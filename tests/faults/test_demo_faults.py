"""`tte-scale demo` (and --fresh) writes and replaces only inside a folder it made itself (issue 16)."""

from __future__ import annotations

import json

from tte_scale.cli import main
from tte_scale.outputs import MARKER, mark

SMALL = ["--set", "subjects=20", "--set", "workers=1", "--until", "synth"]


def test_demo_refuses_a_foreign_out_before_any_stage(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path), "--fresh", *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a `tte-scale demo` output" in err[0] and f"no {MARKER}" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_demo_refuses_to_clear_a_training_folder_it_never_wrote(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "pretrain" / "checkpoints").mkdir(parents=True)
    (out / "pretrain" / "checkpoints" / "step_5.pt").write_text("someone's run")
    mark(out, "demo")
    assert main(["demo", "--out", str(out), "--fresh", *SMALL]) == 2
    assert "not written by this demo's training stage" in capsys.readouterr().err
    assert (out / "pretrain" / "checkpoints" / "step_5.pt").is_file()
    assert not (out / "cohort").exists()


def test_demo_marks_its_folder_and_stamps_a_stage_before_it_runs(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *SMALL]) == 0
    assert json.loads((out / MARKER).read_text())["command"] == "demo"
    assert json.loads((out / ".stages" / "synth.json").read_text())["digest"]
    assert main(["demo", "--out", str(out), "--fresh", *SMALL]) == 0  # its own folder: replaced stage by stage
