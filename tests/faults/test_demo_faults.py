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


def test_demo_cohort_from_is_checked_before_any_stage(tmp_path, capsys):
    src, out = tmp_path / "first", tmp_path / "second"
    assert main(["demo", "--out", str(src), *SMALL]) == 0
    capsys.readouterr()
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    # labels and shards of the source never ran: refused, naming the stage
    assert main(["demo", "--out", str(out), "--set", f"cohort_from={src}", *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its labels stage has not finished" in err[0], err
    # pretend they did: a cohort made with other settings is refused by its synth record
    for stage in ("labels", "shard"):
        (src / ".stages" / f"{stage}.json").write_text(json.dumps({"digest": "x", "seconds": 1.0, "argv": []}))
    (src / "labels" / "bins.json").parent.mkdir()
    (src / "labels" / "bins.json").write_text("{}")
    (src / "shards" / "manifest").mkdir(parents=True)
    (src / "shards" / "manifest" / "build.json").write_text("{}")
    bigger = ["--set", "subjects=21", "--set", "workers=1", "--until", "synth"]
    assert main(["demo", "--out", str(out), "--set", f"cohort_from={src}", *bigger]) == 2
    err = capsys.readouterr().err
    assert "its synth stage ran `tte-scale synth" in err and "--subjects 20" in err and "--subjects 21" in err, err
    assert main(["demo", "--out", str(src / "inner"), "--set", f"cohort_from={src}", *SMALL]) == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--set", "cohort_from=" + str(tmp_path / "nowhere"), *SMALL]) == 2
    assert "not a `tte-scale demo` output folder" in capsys.readouterr().err
    written = {"labels", "labels/bins.json", "shards", "shards/manifest", "shards/manifest/build.json"}
    written |= {".stages/labels.json", ".stages/shard.json"}  # the test's own stand-ins
    assert sorted(p.relative_to(src) for p in src.rglob("*") if str(p.relative_to(src)) not in written) == sorted(
        p for p in before if str(p) not in written
    )  # the source folder: untouched by the refused runs


def test_demo_cohort_from_under_another_name_is_accepted(tmp_path, capsys):
    """The folder's records name the path it was made with; a link to it is the same cohort."""
    from tte_scale.commands.demo import DATA_STAGES, DemoConfig, _digest, _stage_files, _stages

    src = tmp_path / "first"
    cfg = DemoConfig(subjects=20, workers=1)
    (src / ".stages").mkdir(parents=True)
    mark(src, "demo")
    for name, argv, done in _stages(cfg, src):
        if name in DATA_STAGES:
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text("{}")
            rec = {"digest": _digest(argv, _stage_files(cfg, name)), "seconds": 1.0, "argv": argv}
            (src / ".stages" / f"{name}.json").write_text(json.dumps(rec))
    (tmp_path / "alias").symlink_to(src)
    out = tmp_path / "second"
    sets = ["--set", "subjects=20", "--set", "workers=1", "--set", f"cohort_from={tmp_path / 'alias'}"]
    assert main(["demo", "--out", str(out), *sets, "--until", "shard"]) == 0
    assert capsys.readouterr().out.count(f"from {tmp_path / 'alias'}") == 3
    assert not (out / "cohort").exists() and not (out / ".stages" / "synth.json").exists()
