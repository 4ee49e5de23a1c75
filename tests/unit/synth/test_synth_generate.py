"""The whole generator: MEDS conformance, contracts, determinism across worker counts, resume."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tte_scale.errors import InputError
from tte_scale.synth import SynthConfig, generate
from tte_scale.synth.generate import chunk_bounds

N = 10


def _cfg(**kw):
    return SynthConfig(subjects=N, seed=11, generic_codes=100, **kw)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    one = generate(_cfg(workers=1), base / "w1", progress=False)
    two = generate(_cfg(workers=2), base / "w2", progress=False)
    return base / "w1", base / "w2", one, two


def _data(out):
    return pa.concat_tables(pq.read_table(p) for p in sorted((out / "data").rglob("*.parquet")))


def test_meds_conformance(cohorts):
    meds = pytest.importorskip("meds")
    out = cohorts[0]
    files = sorted((out / "data").rglob("*.parquet"))
    assert len(files) >= 3 and {p.parent.name for p in files} <= {"train", "tuning", "held_out"}
    for p in files:
        meds.DataSchema.validate(pq.read_table(p))
    meds.CodeMetadataSchema.validate(pq.read_table(out / "metadata" / "codes.parquet"))
    splits = pq.read_table(out / "metadata" / "subject_splits.parquet")
    meds.SubjectSplitSchema.validate(splits)
    assert splits.num_rows == N and set(splits["split"].to_pylist()) <= {"train", "tuning", "held_out"}
    meds.DatasetMetadataSchema.validate(json.loads((out / "metadata" / "dataset.json").read_text()))
    data = _data(out)
    known = set(pq.read_table(out / "metadata" / "codes.parquet")["code"].to_pylist())
    assert set(data["code"].to_pylist()) <= known
    # Subjects live in one file each, and rows are not time-sorted (readers must sort).
    per_file = [set(pq.read_table(p)["subject_id"].to_pylist()) for p in files]
    assert sum(len(s) for s in per_file) == len(set().union(*per_file)) == N
    t = pq.read_table(files[0])["time"].to_numpy()
    t = t[~np.isnat(t)]
    assert not np.all(t[1:] >= t[:-1])


def test_scans_table_and_truth(cohorts):
    out, _, summary, _ = cohorts
    scans = pq.read_table(out / "scans.parquet")
    assert scans.schema == pa.schema(
        [
            ("subject_id", pa.int64()),
            ("scan_id", pa.string()),
            ("prediction_time", pa.timestamp("us")),
            ("image_path", pa.string()),
            ("modality", pa.string()),
        ]
    )
    assert set(scans["modality"].to_pylist()) == {"CT"} and scans.num_rows == summary.scans
    assert len(set(scans["scan_id"].to_pylist())) == scans.num_rows
    # paths relative to the table's folder, so a cohort folder can be moved whole
    paths = scans["image_path"].to_pylist()
    assert all(not Path(p).is_absolute() and p.startswith("images/") for p in paths)
    img = nib.load(out / paths[0])
    assert img.get_data_dtype() == np.int16
    data = _data(out)
    for sid, pt in zip(scans["subject_id"].to_pylist()[:5], scans["prediction_time"].to_pylist()[:5]):
        times = [t for s, t in zip(data["subject_id"].to_pylist(), data["time"].to_pylist()) if s == sid and t]
        assert min(times) < pt < max(times), "history before and follow-up after each prediction time"
    bench = pq.read_table(out / "truth" / "bench.parquet")
    assert bench.num_rows == 8 * scans.num_rows
    assert np.isfinite(bench["log_hazard"].to_numpy()).all()
    truth_scans = pq.read_table(out / "truth" / "scans.parquet")
    assert truth_scans["scan_id"].to_pylist() == scans["scan_id"].to_pylist()
    assert all(
        (out / "truth" / p).resolve() == (out / q).resolve()
        for p, q in zip(truth_scans["nifti_path"].to_pylist(), paths)
    )
    assert "emphysema" in truth_scans.column_names and (out / "truth" / "model.json").is_file()
    assert summary.codes > 50 and summary.events == data.num_rows


def test_same_output_whatever_the_worker_count(cohorts):
    w1, w2, s1, s2 = cohorts
    files1 = sorted(p.relative_to(w1) for p in (w1 / "data").rglob("*.parquet"))
    assert files1 == sorted(p.relative_to(w2) for p in (w2 / "data").rglob("*.parquet"))
    for rel in files1:
        assert pq.read_table(w1 / rel).equals(pq.read_table(w2 / rel))
    for name in ("metadata/codes.parquet", "metadata/subject_splits.parquet", "truth/bench.parquet"):
        assert pq.read_table(w1 / name).equals(pq.read_table(w2 / name))
    a, b = pq.read_table(w1 / "scans.parquet"), pq.read_table(w2 / "scans.parquet")
    assert a.equals(b)  # image paths too: they are relative to each cohort's folder
    for p in a["image_path"].to_pylist():
        i1, i2 = nib.load(w1 / p), nib.load(w2 / p)
        assert np.array_equal(np.asarray(i1.dataobj), np.asarray(i2.dataobj))
        assert np.array_equal(i1.affine, i2.affine)
    assert s1.event_rates == s2.event_rates


def test_refuses_non_empty_out_and_overwrites_its_own(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        generate(_cfg(workers=1, chunk_subjects=5), tmp_path, progress=False)
    with pytest.raises(InputError, match="refusing to delete"):
        generate(_cfg(workers=1), tmp_path, overwrite=True, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_overwrite_trusts_the_owner_marker_not_a_file_name(tmp_path):
    from tte_scale.outputs import MARKER, mark, read_marker

    (tmp_path / "synth.json").write_text("{}")  # a file of that name proves nothing
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match=f"no {MARKER}"):
        generate(_cfg(workers=1), tmp_path, overwrite=True, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    (tmp_path / "labels_out").mkdir()
    mark(tmp_path / "labels_out", "labels")
    with pytest.raises(InputError, match="written by `tte-scale labels`"):
        generate(_cfg(workers=1), tmp_path / "labels_out", overwrite=True, progress=False)
    out = tmp_path / "c"
    generate(_cfg(workers=1), out, progress=False)
    assert read_marker(out)["command"] == "synth"
    generate(_cfg(workers=1), out, overwrite=True, progress=False)


def test_resume_redoes_only_unfinished_chunks(tmp_path):
    cfg = SynthConfig(subjects=4, seed=2, generic_codes=60, workers=1, chunk_subjects=1)
    out = tmp_path / "c"
    full = generate(cfg, out, progress=False)
    ref = _data(out)
    generate(cfg, out, overwrite=True, progress=False)
    # Simulate an interruption: state + finished parts of chunks 0-1 only.
    import shutil

    from tte_scale.config import to_dict
    from tte_scale.outputs import mark

    shutil.rmtree(out)
    (out / ".parts").mkdir(parents=True)
    mark(out, "synth")
    (out / ".parts" / "state.json").write_text(json.dumps(to_dict(cfg), sort_keys=True))
    with pytest.raises(InputError, match="another config"):
        generate(SynthConfig(subjects=5, seed=2, generic_codes=60, workers=1), out, resume=True, progress=False)
    again = generate(cfg, out, resume=True, progress=False)
    assert again.events == full.events and _data(out).equals(ref)
    with pytest.raises(InputError, match="already complete"):
        generate(cfg, out, resume=True, progress=False)


def test_chunks_depend_on_n_only():
    assert chunk_bounds(10, 100) == [(i, i + 1) for i in range(10)]
    b = chunk_bounds(20_000, 100)
    assert b[0] == (0, 100) and b[-1][1] == 20_000 and len(b) == 200
