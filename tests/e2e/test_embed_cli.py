"""`tte-scale embed` in one process (issue 17.3): rows, metadata, both formats, resuming, refusals.

Two ranks are tests/dist/test_embed_ranks.py. Inputs: tests/support/embed_inputs.py (16 scans
in three splits, a 16-wide ViT export); parts of 3 scans, batches of 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from support.embed_inputs import SPLITS, drop_zarr, embed_argv, reference_vectors, write_embed_inputs

from tte_scale.cli import main
from tte_scale.embed.parts import META_KEY
from tte_scale.outputs import MARKER


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed_inputs")
    info = write_embed_inputs(root)
    assert main(embed_argv(root, "--format", "zarr", out="ref")) == 0
    return root, info


@pytest.fixture
def root(inputs, tmp_path):
    """A private copy of the inputs and of the reference output (a test may damage them)."""
    src, _ = inputs
    for name in ("shards", "encoder", "ref"):
        shutil.copytree(src / name, tmp_path / name)
    return tmp_path


def table(path: Path):
    return pq.read_table(path / "embeddings.parquet")


def rows(path: Path):
    """The table without its metadata (what must not depend on ranks or format)."""
    return table(path).replace_schema_metadata(None)


def error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("tte-scale embed:")]
    assert len(err) == 1, err
    return err[0]


def test_rows_are_every_scan_in_manifest_order_with_its_vector(inputs):
    root, info = inputs
    t = table(root / "ref")
    assert t.column("scan_id").to_pylist() == info["scan_ids"]  # write_shards: manifest order = row order
    assert t.column("split").to_pylist() == SPLITS
    assert t.column("subject_id").to_pylist() == list(range(len(SPLITS)))
    assert str(t.schema.field("vector").type) == "fixed_size_list<element: float>[16]"
    vec = np.asarray(t.column("vector").to_pylist(), np.float32)
    np.testing.assert_allclose(vec, reference_vectors(root / "encoder", info["volumes"]), rtol=1e-4, atol=1e-5)
    record = json.loads(t.schema.metadata[META_KEY])
    on_disk = json.loads((root / "ref" / "embed.json").read_text())
    assert on_disk.pop("ranks")[0]["parts_computed"] == 7 and on_disk == record
    assert record["hu_window"] == [-1000.0, 1000.0] and record["dtype"] == "float32"
    assert len(record["encoder"]["weights_sha256"]) == 64 and len(record["shards"]["build_id"]) == 16
    assert record["shards"]["format"] == "zarr" and record["counts"]["scans_embedded"] == len(SPLITS)
    assert sorted(p.name for p in (root / "ref" / "parts").iterdir()) == [f"part-{i:05d}.parquet" for i in range(7)]


def test_webdataset_gives_the_same_rows_as_zarr(root):
    assert main(embed_argv(root, "--format", "wds", out="wds")) == 0
    assert rows(root / "wds").equals(rows(root / "ref"))
    assert json.loads(table(root / "wds").schema.metadata[META_KEY])["shards"]["format"] == "wds"


def test_a_webdataset_only_build_is_read_by_embed_and_eval(root, capsys):
    drop_zarr(root / "shards")
    assert main(embed_argv(root, "--format", "zarr", out="z")) == 2
    assert "hold no zarr output (built with: wds)" in error_line(capsys)
    assert main(embed_argv(root, out="auto")) == 0  # auto: WebDataset when there is no Zarr copy
    assert rows(root / "auto").equals(rows(root / "ref"))

    from tte_scale.eval.embed import embed_shards
    from tte_scale.models import load_pretrained

    emb = embed_shards(load_pretrained(root / "encoder"), root / "shards", ("train", "held_out"), progress=False)
    ref = table(root / "ref").to_pydict()
    for split in ("train", "held_out"):
        want = [v for v, s in zip(ref["vector"], ref["split"]) if s == split]
        np.testing.assert_allclose(emb.features[split], np.asarray(want, np.float32), rtol=1e-5, atol=1e-6)


def test_rerun_keeps_checked_parts_and_recomputes_the_others(root, capsys):
    out = root / "ref"
    parts = out / "parts"
    (out / "embeddings.parquet").unlink()  # as if killed before the merge
    for n in (4, 5, 6):
        (parts / f"part-{n:05d}.parquet").unlink()  # never written
    (parts / "part-00005.parquet.tmp999").write_bytes(b"PAR1 half a file")  # a write cut by the kill
    damaged = parts / "part-00001.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-40])  # truncated by something else
    before = {n: (parts / f"part-{n:05d}.parquet").stat().st_mtime_ns for n in (0, 2, 3)}
    capsys.readouterr()
    assert main(embed_argv(root, "--format", "zarr", out="ref")) == 0
    err = capsys.readouterr().err
    assert "resumed output" in err and err.count("kept (checked)") == 3
    assert "part-00001.parquet: unreadable" in err and "computing it again" in err
    assert {n: (parts / f"part-{n:05d}.parquet").stat().st_mtime_ns for n in (0, 2, 3)} == before
    assert not list(parts.glob("*.tmp*"))
    assert table(out).equals(pq.read_table(root / "ref" / "embeddings.parquet"))
    assert rows(out).num_rows == len(SPLITS)


def test_a_part_with_values_it_cannot_trust_is_recomputed(root, capsys):
    import pyarrow as pa

    out = root / "ref"
    ref = rows(out)
    path = out / "parts" / "part-00003.parquet"
    t = pq.read_table(path)
    vec = np.asarray(t.column("vector").to_pylist(), np.float32)
    vec[1, 3] = np.nan
    col = pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), vec.shape[1])
    pq.write_table(t.set_column(3, t.schema.field("vector"), col), path)  # same metadata, a NaN inside
    capsys.readouterr()
    assert main(embed_argv(root, "--format", "zarr", out="ref")) == 0
    assert "part-00003.parquet: non-finite values in its vectors; computing it again" in capsys.readouterr().err
    assert rows(out).equals(ref)


def test_out_of_another_encoder_or_shards_is_refused_unless_overwrite(root, inputs, capsys):
    from support.eval_inputs import write_encoder

    write_encoder(root / "encoder", seed=5)  # other weights, same architecture
    before = (root / "ref" / "embeddings.parquet").read_bytes()
    assert main(embed_argv(root, "--format", "zarr", out="ref")) == 2
    line = error_line(capsys)
    assert "holds embeddings computed for another encoder" in line and "encoder.weights_sha256" in line
    assert (root / "ref" / "embeddings.parquet").read_bytes() == before
    assert main(embed_argv(root, "--format", "zarr", "--overwrite", out="ref")) == 0
    new, old = rows(root / "ref"), rows(inputs[0] / "ref")
    assert new.column("scan_id").equals(old.column("scan_id")) and not new.column("vector").equals(old.column("vector"))

    shutil.rmtree(root / "shards")  # other shards (another build) into the same folder
    from support.shards import write_shards

    write_shards(root / "shards", n=len(SPLITS), shape=(8, 8, 8), splits=SPLITS, seed=3)
    assert main(embed_argv(root, "--format", "zarr", out="ref")) == 2
    assert "differs in: shards.build_id" in error_line(capsys)


def test_foreign_out_folders_are_refused_untouched(root, capsys):
    mine = root / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("mine")
    assert main(embed_argv(root, "--overwrite", out="notes")) == 2
    assert "not written by `tte-scale embed`" in error_line(capsys)
    assert [p.name for p in mine.iterdir()] == ["todo.txt"]

    other = root / "evalout"
    other.mkdir()
    (other / MARKER).write_text(json.dumps({"command": "eval"}))
    (other / "report.md").write_text("r")
    assert main(embed_argv(root, "--overwrite", out="evalout")) == 2
    assert "written by `tte-scale eval`, not `tte-scale embed`" in error_line(capsys)
    assert (other / "report.md").read_text() == "r"

    assert main(embed_argv(root, out="shards")) == 2
    assert "holds the input" in error_line(capsys)


def test_not_a_shards_folder_is_one_line(root, capsys):
    assert main(embed_argv(root, shards="encoder", out="x")) == 2
    assert "manifest/samples.parquet: not found" in error_line(capsys)
    assert not (root / "x").exists()


def test_unreadable_scans_stop_the_run_or_are_listed(root, inputs, capsys):
    scan = inputs[1]["scan_ids"][12]  # held_out
    (root / "shards" / "zarr" / "volumes" / "c" / "12" / "0" / "0" / "0").unlink()
    assert main(embed_argv(root, "--format", "zarr", out="bad")) == 2
    line = error_line(capsys)
    assert "1 corrupt or missing samples of split 'held_out'" in line and scan in line
    assert len(list((root / "bad" / "parts").glob("part-*.parquet"))) == 7  # the work is kept for a re-run
    assert main(embed_argv(root, "--format", "zarr", "--max-bad-fraction", "0.5", out="bad")) == 0
    assert capsys.readouterr().err.count("kept (checked)") == 7
    got = rows(root / "bad")
    assert got.column("scan_id").to_pylist() == [s for s in inputs[1]["scan_ids"] if s != scan]
    record = json.loads((root / "bad" / "embed.json").read_text())
    assert [(e["scan_id"], e["kind"]) for e in record["excluded"]] == [(scan, "missing")]
    ref = rows(root / "ref").to_pydict()
    want = [v for s, v in zip(ref["scan_id"], ref["vector"]) if s != scan]
    assert got.column("vector").to_pylist() == want


def test_launch_local_runs_embed_on_ranks(root, capsys):
    argv = ["launch", "local", "--nproc", "3", "--dry-run", "--", *embed_argv(root)]
    assert main(argv) == 0
    cmd = capsys.readouterr().out.split()
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3"]
    assert cmd[5:8] == ["-m", "tte_scale.cli", "embed"]
    assert main(["launch", "local", "--dry-run", "--", *embed_argv(root)]) == 2
    assert "give --nproc" in capsys.readouterr().err
    assert main(["launch", "local", "--nproc", "2", "--dry-run", "--", "labels"]) == 2
    assert "tte-scale launch: error: launch local -- labels: only embed, eval run on ranks" in capsys.readouterr().err
    assert main(["launch", "local", "--nproc", "2", "--dry-run", "--", "eval", "--out", "x"]) == 0  # eval runs on ranks
    assert capsys.readouterr().out.split()[5:8] == ["-m", "tte_scale.cli", "eval"]


def test_splits_and_bfloat16_are_recorded_and_close_to_float32(root):
    assert main(embed_argv(root, "--splits", "held_out,train", "--dtype", "bfloat16", out="bf16")) == 0
    got, ref = table(root / "bf16"), table(root / "ref").to_pydict()
    assert got.column("split").to_pylist() == ["held_out"] * 5 + ["train"] * 7
    record = json.loads(got.schema.metadata[META_KEY])
    assert record["dtype"] == "bfloat16" and record["shards"]["splits"] == ["held_out", "train"]
    want = {s: v for s, v in zip(ref["scan_id"], ref["vector"])}
    vec = np.asarray(got.column("vector").to_pylist())
    np.testing.assert_allclose(vec, [want[s] for s in got.column("scan_id").to_pylist()], atol=0.05)
    assert not np.array_equal(vec, [want[s] for s in got.column("scan_id").to_pylist()])
