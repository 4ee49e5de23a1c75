"""`convert meds`: every MEDS generation -> the same current-MEDS table, checked by the meds package."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import meds
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from convert_fixtures import ROWS, write_meds

from tte_scale.convert import convert_meds
from tte_scale.convert.legacy import detect
from tte_scale.ehr.meds import open_meds, read_parents, read_shard, read_splits
from tte_scale.errors import InputError
from tte_scale.outputs import MARKER

GENERATIONS = ["0.1", "0.2", "0.3", "current"]


def _expected(rename: bool = True):
    rename_map = {"SNOMED/184099003": "MEDS_BIRTH", "SNOMED/419620001": "MEDS_DEATH"}
    out = []
    for sid, t, code, num, text, unit in ROWS:
        out.append((sid, t, rename_map.get(code, code) if rename else code, num, text, unit))
    return sorted(out, key=lambda r: (r[0], r[1] or datetime.min, r[2]))


def _read_all(root) -> list[tuple]:
    rows = []
    for f in sorted((root / "data").rglob("*.parquet")):
        t = pq.read_table(f)
        d = t.to_pydict()
        for i in range(t.num_rows):
            num = d["numeric_value"][i]
            rows.append(
                (
                    d["subject_id"][i],
                    d["time"][i],
                    d["code"][i],
                    None if num is None else round(num, 5),
                    d["text_value"][i],
                    d["unit"][i],
                )
            )
    return sorted(rows, key=lambda r: (r[0], r[1] or datetime.min, r[2]))


@pytest.mark.parametrize("generation", GENERATIONS)
def test_every_generation_converts_to_the_same_current_table(tmp_path, generation):
    src = write_meds(tmp_path / "src", generation)
    assert detect(pq.read_schema(src / "data" / "train" / "0.parquet"), src) == generation
    summary = convert_meds(src, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert summary["generation"] == generation and summary["rows"] == len(ROWS) and summary["subjects"] == 3
    legacy = generation in ("0.1", "0.2")
    assert _read_all(out) == _expected(rename=legacy)
    assert bool(summary["legacy_codes_renamed"]) == legacy
    # Same file layout; each file a valid, sorted MEDS data table (static rows first).
    files = sorted(p.relative_to(out / "data") for p in (out / "data").rglob("*.parquet"))
    assert [str(f) for f in files] == ["held_out/0.parquet", "train/0.parquet"]
    for f in (out / "data").rglob("*.parquet"):
        t = pq.read_table(f)
        meds.DataSchema.validate(t)
        assert t.schema.field("text_value").type == pa.large_string()
        sid = t.column("subject_id").to_numpy()
        us = t.column("time").cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
        assert (np.diff(sid) >= 0).all()
        same = sid[1:] == sid[:-1]
        assert (us[1:][same] >= us[:-1][same]).all()
    codes = pq.read_table(out / "metadata" / "codes.parquet")
    meds.CodeMetadataSchema.validate(codes)
    assert set(codes.column("code").to_pylist()) == {r[2] for r in _expected(rename=legacy)}
    ds = json.loads((out / "metadata" / "dataset.json").read_text())
    meds.DatasetMetadataSchema.validate(ds)
    assert ds["meds_version"] == meds.__version__ and ds["etl_name"] == "tte-scale convert meds"
    assert json.loads((out / MARKER).read_text())["command"] == "convert meds"
    # The labels stage reads it.
    ev = read_shard(out / "data" / "train" / "0.parquet")
    assert ev.subject_ids.tolist() == [1, 2]


def test_keep_legacy_codes(tmp_path):
    src = write_meds(tmp_path / "src", "0.2")
    convert_meds(src, tmp_path / "out", keep_legacy_codes=True, progress=False)
    assert _read_all(tmp_path / "out") == _expected(rename=False)


def test_splits_and_code_metadata_carried_over(tmp_path):
    src = write_meds(tmp_path / "src", "0.3")
    (src / "metadata").mkdir()
    pq.write_table(
        pa.table({"patient_id": [1, 2, 3, 3], "split": ["train", "tuning", "held_out", "held_out"]}),
        src / "metadata" / "patient_splits.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "code": ["ICD10CM/I26.99", "ICD10CM/I26"],
                "description": ["PE", "PE group"],
                "parent_codes": [["ICD10CM/I26"], None],
            }
        ),
        src / "metadata" / "codes.parquet",
    )
    s = convert_meds(src, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    splits = pq.read_table(out / "metadata" / "subject_splits.parquet")
    meds.SubjectSplitSchema.validate(splits)
    assert splits.to_pydict() == {"subject_id": [1, 2, 3], "split": ["train", "tuning", "held_out"]}
    assert s["splits"]["subjects"] == {"train": 1, "tuning": 1, "held_out": 1}
    ds = open_meds(out)
    assert read_splits(ds) == {1: "train", 2: "tuning", 3: "held_out"}
    # The ancestor only the metadata knows keeps its row: the ontology stays connected.
    assert read_parents(ds) == {"ICD10CM/I26.99": ["ICD10CM/I26"]}
    assert s["metadata_codes_not_in_data"] == 1


def test_explicit_split_source_wins(tmp_path):
    src = write_meds(tmp_path / "src", "current")
    split_file = tmp_path / "s.parquet"
    pq.write_table(
        pa.table({"subject_id": [1, 2, 3, 99], "split": ["train", "train", "held_out", "tuning"]}), split_file
    )
    s = convert_meds(src, tmp_path / "out", splits=split_file, progress=False)
    assert s["splits"]["split_subjects_without_data"] == 1 and s["splits"]["data_subjects_without_split"] == 0


def _fails(tmp_path, src, match, **kw):
    with pytest.raises(InputError, match=match):
        convert_meds(src, tmp_path / "out", progress=False, **kw)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial*"))


def test_unknown_schema(tmp_path):
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    pq.write_table(pa.table({"person": [1], "when": [1], "what": ["x"]}), src / "data" / "0.parquet")
    _fails(tmp_path, src, r"0.parquet: unknown MEDS schema \(columns \['person', 'when', 'what'\]\)")


def test_mixed_generations(tmp_path):
    src = write_meds(tmp_path / "src", "0.3", files={"a": [1, 2]})
    write_meds(src, "current", files={"b": [3]})
    _fails(tmp_path, src, r"b.parquet: MEDS 0.3.3\+ / 0.4 .*but .*a.parquet is MEDS 0.3.0-0.3.2")


def test_null_code_names_the_patient(tmp_path):
    rows = [*ROWS[:3], (2, datetime(2020, 1, 1), None, None, None, None)]
    src = write_meds(tmp_path / "src", "0.2", rows=rows, files={"0": [1, 2]})
    _fails(tmp_path, src, r"0.parquet: patient_id 2: null 'code'")


def test_null_subject_names_the_row(tmp_path):
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    t = pa.table(
        {
            "subject_id": pa.array([1, None], pa.int64()),
            "time": pa.array([0, 1], pa.timestamp("us")),
            "code": ["a", "b"],
        }
    )
    pq.write_table(t, src / "data" / "0.parquet")
    _fails(tmp_path, src, r"0.parquet: row 1: null 'subject_id'")


def test_subject_in_two_files(tmp_path):
    src = write_meds(tmp_path / "src", "0.3", files={"a": [1, 2], "b": [2, 3]})
    _fails(tmp_path, src, r"b.parquet: subject 2 also appears in .*a.parquet")


def test_time_zone_refused(tmp_path):
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    t = pa.table({"subject_id": [1], "time": pa.array([0], pa.timestamp("us", tz="UTC")), "code": ["a"]})
    pq.write_table(t, src / "data" / "0.parquet")
    _fails(tmp_path, src, r"0.parquet: column 'time' has time zone 'UTC'")


def test_nanoseconds_refused(tmp_path):
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    t = pa.table({"subject_id": [1], "time": pa.array([1_000_000_001], pa.timestamp("ns")), "code": ["a"]})
    pq.write_table(t, src / "data" / "0.parquet")
    _fails(tmp_path, src, r"sub-microsecond")


def test_bad_split_name_and_subject_in_two_splits(tmp_path):
    src = write_meds(tmp_path / "src", "current")
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"subject_id": [1, 2], "split": ["train", "valid"]}), bad)
    _fails(tmp_path, src, r"bad.parquet: row 1, column 'split': 'valid' is not a split name", splits=bad)
    two = tmp_path / "two.parquet"
    pq.write_table(pa.table({"subject_id": [1, 2, 1], "split": ["train", "train", "held_out"]}), two)
    _fails(
        tmp_path,
        src,
        r"two.parquet: subject 1 is in two splits: 'train' \(row 0\) and 'held_out' \(row 2\)",
        splits=two,
    )


def test_overwrite_only_its_own_output(tmp_path):
    src = write_meds(tmp_path / "src", "current")
    out = tmp_path / "out"
    convert_meds(src, out, progress=False)
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        convert_meds(src, out, progress=False)
    convert_meds(src, out, overwrite=True, progress=False)
    assert (out / "metadata" / "codes.parquet").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not written by `tte-scale convert meds`"):
        convert_meds(src, foreign, overwrite=True, progress=False)
    assert (foreign / "keep.txt").read_text() == "mine"
    with pytest.raises(InputError, match="holds the input"):
        convert_meds(src, tmp_path, overwrite=True, progress=False)


def test_failure_keeps_the_old_output(tmp_path):
    """A conversion that fails half-way leaves the previous output as it was, and no partial folder."""
    src = write_meds(tmp_path / "src", "current", files={"a": [1, 2]})
    out = tmp_path / "out"
    convert_meds(src, out, progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    write_meds(src, "current", files={"b": [2, 3]})  # subject 2 now in two files: found after a.parquet is written
    with pytest.raises(InputError, match="subject 2 also appears"):
        convert_meds(src, out, overwrite=True, progress=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not list(tmp_path.glob(".out.*"))


def _peak_arrow_bytes(src, out) -> int:
    """Peak bytes of Arrow's memory pool while converting, in a fresh process (the peak is per process)."""
    import subprocess
    import sys

    code = (
        "import sys, pyarrow as pa; from tte_scale.convert import convert_meds; "
        "convert_meds(sys.argv[1], sys.argv[2], progress=False); print(pa.default_memory_pool().max_memory())"
    )
    res = subprocess.run([sys.executable, "-c", code, str(src), str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return int(res.stdout.split()[-1])


def test_memory_is_bounded_by_one_file(tmp_path):
    """Streaming: 8 nested input files need about the memory of 2, not 4x (one file in memory at a time)."""
    rng = np.random.default_rng(0)

    def rows(first_subject, n_subjects):
        out = []
        for s in range(first_subject, first_subject + n_subjects):
            for k in range(200):
                out.append(
                    (s, datetime(2000, 1, 1 + k % 28, k % 24), f"LOINC/{rng.integers(500)}", float(k), None, None)
                )
        return out

    peaks = {}
    for n_files in (2, 8):
        files = {f"f{i}": list(range(i * 50, (i + 1) * 50)) for i in range(n_files)}
        src = write_meds(tmp_path / f"src{n_files}", "0.2", rows=rows(0, 50 * n_files), files=files)
        peaks[n_files] = _peak_arrow_bytes(src, tmp_path / f"out{n_files}")
    assert peaks[8] < 1.5 * peaks[2], peaks


def test_code_metadata_with_several_rows_per_code_is_merged_and_counted(tmp_path):
    src = write_meds(tmp_path / "src", "0.3")
    (src / "metadata").mkdir()
    pq.write_table(
        pa.table(
            {
                "code": ["LOINC/2160-0", "LOINC/2160-0", "ICD10CM/I26.99"],
                "description": [None, "Creatinine", "PE"],
                "parent_codes": [["LOINC/A"], ["LOINC/B"], None],
                "unit": ["mg/dL", "umol/L", None],
            }
        ),
        src / "metadata" / "codes.parquet",
    )
    s = convert_meds(src, tmp_path / "out", progress=False)
    codes = {r["code"]: r for r in pq.read_table(tmp_path / "out" / "metadata" / "codes.parquet").to_pylist()}
    assert codes["LOINC/2160-0"]["description"] == "Creatinine"
    assert codes["LOINC/2160-0"]["parent_codes"] == ["LOINC/A", "LOINC/B"]
    assert s["metadata_codes_with_several_rows_merged"] == 1


def test_output_inside_a_flat_input_is_not_read_back(tmp_path):
    """An input without data/ is every *.parquet under it: the output written inside it must not
    become input on a re-run."""
    src = tmp_path / "legacy"
    write_meds(src, "0.3")
    for f in (src / "data").rglob("*.parquet"):  # the files at the top, no data/ folder
        f.rename(src / f"{f.parent.name}_{f.name}")
    shutil.rmtree(src / "data")
    convert_meds(src, src / "converted", progress=False)
    s = convert_meds(src, src / "converted", overwrite=True, progress=False)
    assert s["files"] == 2 and s["rows"] == len(ROWS)
