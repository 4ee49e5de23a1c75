"""`tte-scale bench`: help, a real tiny stage run, its files, and the user errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from tte_scale.benchmarks import STAGES, select
from tte_scale.cli import EXIT_USER_ERROR, main
from tte_scale.errors import InputError

TINY_LOSS = "--methods eager --batch 2 --tasks 64 --rank 16 --warmup 1 --repeats 2"


def test_help_lists_every_stage(cli_cmd):
    res = subprocess.run(cli_cmd + ["bench", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for name in (*STAGES, "all", "summary", "--full", "--device", "--out"):
        assert name in res.stdout


def test_quick_loss_stage_writes_stage_and_summary_files(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(["bench", "loss", "--out", str(out), "--machine", "test box", f"--script-args={TINY_LOSS}"])
    assert rc == 0, capsys.readouterr().err
    for name in ("loss.json", "loss.md", "summary.json", "summary.md"):
        assert (out / name).is_file(), name
    loss = json.loads((out / "loss.json").read_text())
    assert loss["machine"] == "test box" and [(r["B"], r["K"]) for r in loss["rows"]] == [(2, 64)]
    assert loss["rows"][0]["eager"]["ms"] > 0 and loss["meta"]["cpu_count"] >= 1
    summary = json.loads((out / "summary.json").read_text())
    (stage,) = summary["stages"]
    assert stage["stage"] == "loss" and stage["status"] == "ok"
    assert "tte_scale.benchmarks.bench_loss" in stage["command"] and "--methods eager" in stage["command"]
    assert stage["headlines"][0]["figure"].startswith("eager loss fwd+bwd")
    assert summary["meta"]["software"]["torch"]
    md = (out / "summary.md").read_text()
    assert "| loss | eager loss fwd+bwd" in md and "[loss.md](loss.md)" in md
    # No curve in a loss-only run, so no chart.
    assert not (out / "scaling.png").exists()

    # `summary` rebuilds the same table from the results on disk without running anything.
    (out / "summary.md").unlink()
    assert main(["bench", "summary", "--out", str(out)]) == 0
    assert "| loss | eager loss fwd+bwd" in (out / "summary.md").read_text()


def test_unknown_stage_is_a_clear_user_error(tmp_path, capsys):
    assert main(["bench", "loss", "nosuch", "--out", str(tmp_path)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "unknown stage(s) 'nosuch'" in err and "loader" in err
    assert not any(tmp_path.iterdir())  # nothing ran


def test_script_args_need_a_single_stage(tmp_path, capsys):
    assert main(["bench", "loss", "model", "--out", str(tmp_path), "--script-args=--batch 2"]) == EXIT_USER_ERROR
    assert "exactly one stage" in capsys.readouterr().err


def test_summary_of_an_empty_folder_is_an_error(tmp_path, capsys):
    assert main(["bench", "summary", "--out", str(tmp_path)]) == EXIT_USER_ERROR
    assert "no <stage>.json results" in capsys.readouterr().err


def test_a_missing_baseline_library_names_the_extra(monkeypatch, tmp_path):
    from tte_scale.benchmarks.suite import load_script

    (tmp_path / "bench_needs_x.py").write_text("import no_such_baseline_lib\ndef main(argv=None):\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    stage = dataclasses.replace(STAGES["eval"], module="bench_needs_x")
    with pytest.raises(InputError, match=r"needs 'no_such_baseline_lib': install the dev extra"):
        load_script(stage)


def _fake_stage(monkeypatch, root: Path, body: str) -> None:
    """Point the eval stage at a module written into ``root`` (on sys.path for this test)."""
    root.mkdir(parents=True)
    (root / "bench_fake_eval.py").write_text(body)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(__import__("sys").modules, "bench_fake_eval", raising=False)
    monkeypatch.setitem(STAGES, "eval", dataclasses.replace(STAGES["eval"], module="bench_fake_eval"))


def test_a_failing_stage_is_reported_and_the_suite_exits_nonzero(tmp_path, capsys, monkeypatch):
    _fake_stage(monkeypatch, tmp_path / "repo", "def main(argv=None):\n    raise SystemExit('eval went wrong')\n")
    out = tmp_path / "out"
    assert main(["bench", "eval", "--out", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"][0]["status"] == "failed"
    assert "**failed**" in (out / "summary.md").read_text()
    assert "failed stage(s): eval" in capsys.readouterr().err


def test_a_stage_that_ignores_out_is_reported(tmp_path, capsys, monkeypatch):
    # An older-style script: main() reads sys.argv and accepts --out, but writes nothing there.
    body = (
        "import argparse\n"
        "def main():\n"
        "    ap = argparse.ArgumentParser(); ap.add_argument('--out'); ap.add_argument('--machine')\n"
        "    ap.add_argument('--max-n'); ap.add_argument('--repeat'); ap.parse_args()\n"
    )
    _fake_stage(monkeypatch, tmp_path / "repo", body)
    out = tmp_path / "out"
    assert main(["bench", "eval", "--out", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert "wrote no" in summary["stages"][0]["error"]


def test_registry_arguments():
    assert select(["all"])[0].name == "synth" and [s.name for s in select(["eval", "loss"])] == ["loss", "eval"]
    loss = STAGES["loss"]
    assert loss.argv("cuda", False)[:2] == ["--device", "cuda"] and "8192" in loss.argv("cuda", False)
    assert loss.argv("cpu", True) == ["--device", "cpu"]
    assert "--device" not in STAGES["labels"].argv("cuda", False)  # CPU-only stages ignore --device
    assert STAGES["train"].argv("cpu", True).count("--zero") == 1
    with pytest.raises(InputError, match="name a stage"):
        select([])
