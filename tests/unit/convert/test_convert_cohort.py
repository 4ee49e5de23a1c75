"""`convert inspect`: an INSPECT-shaped release -> scans.parquet, the release's labels, splits; every
bad input one clear error naming file, line and column, with nothing written."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from convert_fixtures import COLUMN_OF, LABEL_COLUMNS, default_studies, image_id, write_release, write_tsv

from tte_scale.config import ConfigError
from tte_scale.convert import convert_cohort, load_map
from tte_scale.ehr.config import load_task_set
from tte_scale.ehr.meds import read_scans
from tte_scale.ehr.precomputed import PRECOMPUTED_SCHEMA
from tte_scale.errors import InputError
from tte_scale.outputs import MARKER

TASKS = load_task_set("configs/tasks/inspect.yaml")


def run(tmp_path, release=None, overrides=None, map_path=None, **kw):
    release = release or write_release(tmp_path / "release")
    cmap = load_map(map_path or "configs/convert/inspect.yaml", overrides)
    return convert_cohort(release, tmp_path / "out", cmap=cmap, task_set=TASKS, progress=False, **kw)


def fails(tmp_path, match, studies=None, release=None, **kw):
    release = release or write_release(tmp_path / "release", studies)
    with pytest.raises(InputError, match=match):
        run(tmp_path, release, **kw)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_default_map_converts_the_release(tmp_path):
    s = run(tmp_path)
    out = tmp_path / "out"
    scans = read_scans(out / "scans.parquet")  # what `tte-scale labels` reads
    tab = pq.read_table(out / "scans.parquet").to_pydict()
    studies = {st.scan: st for st in default_studies()}
    assert sorted(tab["scan_id"]) == sorted(studies) and len(scans) == 6
    for sid, scan, t, path, mod in zip(*tab.values(), strict=True):
        st = studies[scan]
        assert sid == st.subject and mod == "CT"
        assert t == datetime.fromisoformat(st.time)
        assert Path(path).is_absolute() and Path(path).is_file()
        assert Path(path).name == f"{image_id(st)}.nii.gz"
    bench = pq.read_table(out / "bench_labels.parquet")
    assert bench.schema.equals(PRECOMPUTED_SCHEMA, check_metadata=True)
    got = {(r["scan_id"], r["task"]): r["label"] for r in bench.to_pylist()}
    assert len(got) == 6 * 8
    meaning = {"TRUE": True, "FALSE": False, "Censored": None}
    for scan, st in studies.items():
        for task, col in COLUMN_OF.items():
            assert got[(scan, task)] is meaning[st.labels[col]], (scan, task)
    assert bench.column("time").null_count == bench.num_rows  # no time columns in the default map
    splits = pq.read_table(out / "subject_splits.parquet").to_pydict()
    assert splits == {"subject_id": [1, 2, 3, 4], "split": ["train", "train", "tuning", "held_out"]}
    assert s["scans_per_split"] == {"train": 3, "tuning": 1, "held_out": 2}
    assert s["labels"]["mortality_6m"] == {"true": 0, "false": 5, "censored": 1, "time_from_label_file": False}
    assert pq.read_table(out / "excluded.parquet").num_rows == 0
    assert json.loads((out / MARKER).read_text())["command"] == "convert inspect"
    assert json.loads((out / "summary.json").read_text())["files"]["labels"]["name"] == "labels_20250611.tsv"


def test_missing_column_names_file_and_column(tmp_path):
    release = write_release(tmp_path / "release")
    path = release / "labels_20250611.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line.replace("12_month_PH", "12_month_ph") for line in lines) + "\n")
    fails(
        tmp_path,
        r"labels_20250611.tsv: no column '12_month_PH' \(label of task ph_12m\) \(a column '12_month_ph' exists",
        release=release,
    )


def test_unexpected_label_value(tmp_path):
    studies = default_studies()
    studies[3].labels["6_month_mortality"] = "True"
    fails(
        tmp_path,
        r"labels_20250611.tsv: line 5, column '6_month_mortality': unexpected label value 'True' "
        r"\(expected one of \['Censored', 'FALSE', 'TRUE'\]",
        studies,
    )
    studies[3].labels["6_month_mortality"] = None
    fails(tmp_path, r"line 5, column '6_month_mortality': unexpected label value None", studies)


def test_study_without_image(tmp_path):
    studies = default_studies()
    studies[2].write_image = False
    fails(
        tmp_path, r"study_mapping_20250611.tsv: line 4: study '1003': image .*CTPA/PE000003eb.nii.gz not found", studies
    )
    s = run(tmp_path, write_release(tmp_path / "r2", studies), allow_missing_images=True)
    excl = pq.read_table(tmp_path / "out" / "excluded.parquet").to_pylist()
    assert excl == [{"scan_id": "1003", "subject_id": 2, "line": 4, "reason": "image_not_found"}]
    assert s["scans"] == 5 and s["excluded"] == {"image_not_found": 1}
    assert "1003" not in pq.read_table(tmp_path / "out" / "bench_labels.parquet").column("scan_id").to_pylist()
    # The subject keeps its split (its EHR still belongs to train).
    assert 2 in pq.read_table(tmp_path / "out" / "subject_splits.parquet").column("subject_id").to_pylist()


def test_image_id_with_extension_gets_a_hint(tmp_path):
    studies = default_studies()
    for st in studies:
        st.image = f"PE{int(st.scan):08x}.nii.gz"
    release = write_release(tmp_path / "release", studies)
    for f in (release / "CTPA").iterdir():  # the files are PE<hex>.nii.gz, as the image ids say
        f.rename(f.with_name(f.name.removesuffix(".nii.gz")))
    fails(tmp_path, r"already ends in .nii/.nii.gz: set images.path to '\{image\}'", release=release)
    assert run(tmp_path, release, overrides=["images.path='{image}'"])["scans"] == 6


def test_subject_in_two_splits(tmp_path):
    studies = default_studies()
    studies[1].split = "test"
    fails(
        tmp_path,
        r"splits_20250611.tsv: subject 1 is in two splits: study '1001' in 'train' \(line 2\) and "
        r"study '1002' in 'held_out' \(line 3\)",
        studies,
    )


def test_unknown_split_value(tmp_path):
    studies = default_studies()
    studies[0].split = "validation"
    fails(tmp_path, r"splits_20250611.tsv: line 2, column 'split': unexpected split 'validation'", studies)


def test_missing_time(tmp_path):
    studies = default_studies()
    studies[4].time = None
    fails(tmp_path, r"study_mapping_20250611.tsv: line 6, column 'procedure_DATETIME': empty procedure time", studies)
    s = run(tmp_path, write_release(tmp_path / "r2", studies), allow_missing_times=True)
    assert s["excluded"] == {"no_prediction_time": 1}


@pytest.mark.parametrize(
    "value, match",
    [
        ("yesterday", r"line 3, column 'procedure_DATETIME': 'yesterday' is not a date/time"),
        ("2200-01-01 00:00:00", r"line 3, column 'procedure_DATETIME': '2200-01-01 00:00:00' is outside 1900-2099"),
        ("2019-01-01T00:00:00+01:00", r"line 3, column 'procedure_DATETIME': .* has a time zone"),
    ],
)
def test_bad_times(tmp_path, value, match):
    studies = default_studies()
    studies[1].time = value
    fails(tmp_path, match, studies)


def test_bad_person_id(tmp_path):
    studies = default_studies()
    studies[0].subject = "P17"
    fails(tmp_path, r"line 2, column 'person_id': 'P17' is not an integer", studies)


def test_study_missing_from_labels(tmp_path):
    release = write_release(tmp_path / "release")
    path = release / "labels_20250611.tsv"
    path.write_text("".join(line for line in path.read_text().splitlines(True) if not line.startswith("1004\t")))
    fails(
        tmp_path,
        r"labels_20250611.tsv: no row for study '1004' \(studies table study_mapping_20250611.tsv line 5\)",
        release=release,
    )


def test_repeated_rows(tmp_path):
    release = write_release(tmp_path / "release")
    path = release / "splits_20250611.tsv"
    path.write_text(path.read_text() + "1002\ttrain\n")
    s = run(tmp_path, release)
    assert s["repeated_identical_rows"]["splits"] == 1 and s["scans"] == 6
    shutil.rmtree(tmp_path / "out")
    path.write_text(path.read_text() + "1002\ttest\n")
    fails(
        tmp_path,
        r"splits_20250611.tsv: study '1002' has two different rows: line 3 and line 9 differ in column 'split'",
        release=release,
    )


def test_ambiguous_and_missing_files(tmp_path):
    release = write_release(tmp_path / "release")
    (release / "labels_20250303.tsv").write_text("x\n")
    fails(tmp_path, r"2 files match 'labels_\*.tsv' \(label table, map labels.file\)", release=release)
    (release / "labels_20250303.tsv").unlink()
    (release / "splits_20250611.tsv").unlink()
    fails(tmp_path, r"no file matches 'splits_\*.tsv'", release=release)


def test_overwrite_only_its_own_output(tmp_path):
    run(tmp_path)
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        run(tmp_path, tmp_path / "release")
    run(tmp_path, tmp_path / "release", overwrite=True)
    (tmp_path / "out" / MARKER).unlink()
    with pytest.raises(InputError, match="not written by `tte-scale convert inspect`"):
        run(tmp_path, tmp_path / "release", overwrite=True)
    assert (tmp_path / "out" / "scans.parquet").is_file()


# --- the map: another cohort, laid out differently -----------------------------------------


OTHER_MAP = "configs/convert/example_one_table.yaml"  # the documented example map


def _other_cohort(tmp_path, times=("10", "400", "20")):
    root = tmp_path / "other"
    write_tsv(
        root / "cohort.csv",
        ["accession", "mrn", "exam_time", "fold"],
        [["A1", 7, "2020-01-01 10:00", "dev"], ["A2", 8, "2020-02-01 10:00", "val"], ["A3", 9, "2020-03-01", "eval"]],
        delimiter=",",
    )
    write_tsv(
        root / "outcomes.csv",
        ["accession", "death_30d", "days_to_death", "death_censored"],
        [["A1", "1", times[0], "0"], ["A2", "0", times[1], "1"], ["A3", "NA", times[2], "1"]],
        delimiter=",",
    )
    for sid, acc in ((7, "A1"), (8, "A2"), (9, "A3")):
        (root / "dicom" / str(sid) / acc).mkdir(parents=True)  # a DICOM series folder
    return root


def test_map_serves_a_cohort_laid_out_differently(tmp_path):
    root = _other_cohort(tmp_path)
    s = run(tmp_path, root, map_path=OTHER_MAP)
    scans = pq.read_table(tmp_path / "out" / "scans.parquet").to_pydict()
    assert scans["scan_id"] == ["A1", "A2", "A3"] and scans["subject_id"] == [7, 8, 9]
    assert [Path(p).relative_to(root) for p in scans["image_path"]] == [
        Path("dicom/7/A1"),
        Path("dicom/8/A2"),
        Path("dicom/9/A3"),
    ]
    bench = pq.read_table(tmp_path / "out" / "bench_labels.parquet").to_pydict()
    assert bench["task"] == ["mortality_1m"] * 3
    assert bench["label"] == [True, False, None]
    assert bench["time"] == [10.0, 400.0, 20.0] and bench["event"] == [True, False, False]
    assert s["time_label_checks"] == {"mortality_1m": {"inconsistent": 0, "of": 3}}
    assert pq.read_table(tmp_path / "out" / "subject_splits.parquet").column("split").to_pylist() == [
        "train",
        "tuning",
        "held_out",
    ]


def test_time_unit_checked_against_the_labels(tmp_path):
    """A label TRUE at 30 days whose time reads 14,400 (minutes read as days) is a contradiction."""
    root = _other_cohort(tmp_path, times=("14400", "576000", "28800"))
    with pytest.raises(
        InputError,
        match=r"outcomes.csv: line 2: task mortality_1m: 'days_to_death' = 14400 days.*contradicts 'death_30d' = 1 at the 30-day horizon; 2 of 3 studies disagree",
    ):
        run(tmp_path, root, map_path=OTHER_MAP)
    assert not (tmp_path / "out").exists()
    s = run(tmp_path, root, map_path=OTHER_MAP, overrides=["labels.time_unit=minutes"])
    assert s["time_label_checks"]["mortality_1m"]["inconsistent"] == 0


def test_map_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"studies.subjects: unknown key \(did you mean 'subject'\?\)"):
        load_map("configs/convert/inspect.yaml", ["studies.subjects=x"])
    with pytest.raises(ConfigError, match=r"splits.values: \['validation'\] are not split names"):
        load_map("configs/convert/inspect.yaml", ["splits.values={train: train, valid: validation}"])
    with pytest.raises(ConfigError, match=r"labels.true_values\[0\]: expected a string, got True"):
        load_map("configs/convert/inspect.yaml", ["labels.true_values=[TRUE]"])
    with pytest.raises(ConfigError, match=r"images.path: unknown placeholder\(s\) \['study'\]"):
        load_map("configs/convert/inspect.yaml", ["images.path='{study}.nii.gz'"])
    with pytest.raises(ConfigError, match="labels.time_unit: tasks .* have a time column"):
        load_map(
            "configs/convert/inspect.yaml",
            ["labels.tasks.pe={label: pe_positive_nlp, time: t, censored: c}"],
        )
    with pytest.raises(ConfigError, match=r"labels.tasks.death: not a task of the bench task file"):
        run(tmp_path, overrides=["labels.tasks.death={label: 1_month_mortality}"])


def test_label_columns_cover_the_bench_tasks():
    cmap = load_map()
    assert {n: t.label for n, t in cmap.labels.tasks.items()} == COLUMN_OF
    assert set(COLUMN_OF) == set(TASKS.names) and set(COLUMN_OF.values()) == set(LABEL_COLUMNS)
