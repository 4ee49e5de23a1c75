"""`tte-scale eval` on damaged inputs and re-used folders (issues 16 and 24).

Each case runs the CLI entry point in-process on a tiny complete input (tests/support/eval_inputs.py):
a damaged volume is never embedded as if it were a scan (excluded and reported, or, past the training
loader's `max_bad_fraction`, a clear error naming the scan), damaged weights are one clear line, the
report folder replaces only an earlier eval's, and a cached embedding is used only for exactly the
encoder and input it was computed from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.eval_inputs import SPLITS, eval_argv, write_encoder, write_eval_inputs

from tte_scale.cli import main
from tte_scale.outputs import MARKER

HELD_OUT_ROW = SPLITS.index("held_out") + 1  # one held-out scan


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_inputs")
    info = write_eval_inputs(root)
    return root, info


@pytest.fixture
def root(inputs, tmp_path):
    """A private copy of the inputs (a test may damage them)."""
    src, _ = inputs
    for name in ("shards", "labels", "encoder", "tasks.yaml"):
        (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, tmp_path / name)
    return tmp_path


def error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("tte-scale eval:")]
    assert len(err) == 1, err
    return err[0]


def zarr_volume_file(root: Path, row: int) -> Path:
    return root / "shards" / "zarr" / "volumes" / "c" / str(row) / "0" / "0" / "0"


def summary(root: Path, out="eval") -> dict:
    return json.loads((root / out / "summary.json").read_text())


# -- 16.3: what eval reads is verified like the training loader's reads ------------------------


def test_missing_volume_chunk_is_never_embedded(root, inputs, capsys):
    scan = inputs[1]["scan_ids"][HELD_OUT_ROW]
    zarr_volume_file(root, HELD_OUT_ROW).unlink()  # reads back as the fill value
    assert main(eval_argv(root)) == 2  # 1 of 10 held-out scans: more than max_bad_fraction=0.01
    line = error_line(capsys)
    assert "corrupt or missing samples of split 'held_out'" in line and "max_bad_fraction=0.01" in line
    assert scan in line and "volume is only fill value" in line
    # Accepted knowingly: excluded, and said so in the report and the summary.
    assert main(eval_argv(root, "--max-bad-fraction", "0.2")) == 0
    s = summary(root)
    assert s["scans_excluded"] == {"held_out": {"missing": 1}} and s["scans_evaluated"]["held_out"] == 9
    assert [e["scan_id"] for e in s["excluded"]] == [scan]
    report = (root / "eval" / "report.md").read_text()
    assert "## Excluded scans" in report and scan in report


def test_flipped_zarr_byte_names_the_scan(root, inputs, capsys):
    scan = inputs[1]["scan_ids"][HELD_OUT_ROW]
    f = zarr_volume_file(root, HELD_OUT_ROW)
    data = bytearray(f.read_bytes())
    data[len(data) // 3] ^= 0xFF
    f.write_bytes(bytes(data))
    assert main(eval_argv(root)) == 2
    line = error_line(capsys)
    assert scan in line and "zarr read failed" in line


# -- 16.10: damaged weights -------------------------------------------------------------------


def test_truncated_safetensors_is_one_clear_line(root, capsys):
    w = root / "encoder" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    assert main(eval_argv(root)) == 2
    line = error_line(capsys)
    assert f"{w}: cannot load the encoder weights" in line
    assert not (root / "eval").exists()


# -- 16.1: the report folder --------------------------------------------------------------------


def test_out_must_not_be_someone_elses_folder(root, capsys):
    (root / "eval").mkdir()
    (root / "eval" / "report.md").write_text("my own notes")
    assert main(eval_argv(root)) == 2
    assert "not written by `tte-scale eval`" in error_line(capsys)
    assert (root / "eval" / "report.md").read_text() == "my own notes"


def test_out_must_not_hold_an_input(root, capsys):
    bench = (root / "labels" / "bench.parquet").read_bytes()
    assert main(eval_argv(root, out="labels")) == 2
    assert "holds the input" in error_line(capsys)
    assert sorted(p.name for p in (root / "labels").iterdir()) == ["bench.parquet"]
    assert (root / "labels" / "bench.parquet").read_bytes() == bench


# -- 24.2: cached embeddings are keyed by everything they depend on ------------------------------


def test_reused_out_with_another_encoder_never_reuses_its_embeddings(root):
    assert main(eval_argv(root, "--baseline", "random")) == 0
    # Another width: its random baseline is another model, whatever the seed.
    write_encoder(root / "encoder", seed=1, embed_dim=24)
    assert main(eval_argv(root, "--baseline", "random")) == 0  # re-uses --out (an eval folder)
    assert main(eval_argv(root, "--baseline", "random", out="fresh")) == 0
    reused, fresh = (json.loads((root / o / "results.json").read_text()) for o in ("eval", "fresh"))
    assert reused["random_init"]["rows"] == fresh["random_init"]["rows"]
    assert reused["tte"]["rows"] == fresh["tte"]["rows"]
    cached = sorted(p.name for p in (root / "eval" / "embeddings").glob("random_init-*.npz"))
    assert len(cached) == 2  # one per encoder, never shared
    assert json.loads((root / "eval" / MARKER).read_text())["command"] == "eval"
