"""`tte-scale convert {meds,ontology,inspect}` through the CLI: output, and one line + exit 2 for bad input."""

from __future__ import annotations

import pytest
from convert_fixtures import (
    ANCESTORS,
    CONCEPTS,
    RELATIONSHIPS,
    default_studies,
    write_athena,
    write_meds,
    write_release,
)

from tte_scale.cli import main


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("converter", ["meds", "ontology", "inspect"])
def test_help_has_an_example(converter, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["convert", converter, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: tte-scale convert {converter}" in out and f"tte-scale convert {converter} --" in out


def test_walkthrough_commands(tmp_path, capsys):
    release = write_release(tmp_path / "release")
    assert (
        main(["convert", "inspect", "--release", str(release), "--out", str(tmp_path / "cohort"), "--no-progress"]) == 0
    )
    out = capsys.readouterr().out
    assert "INSPECT: 6 of 6 studies, 4 subjects" in out and "mortality_12m: 1 true, 5 false, 0 censored" in out
    assert f"--bench-labels {tmp_path / 'cohort'}/bench_labels.parquet" in out
    src = write_meds(tmp_path / "ehr", "0.1")
    split = tmp_path / "cohort" / "subject_splits.parquet"
    rc = main(
        [
            "convert",
            "meds",
            "--input",
            str(src),
            "--out",
            str(tmp_path / "meds"),
            "--splits",
            str(split),
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "converted 2 files of MEDS 0.1" in out and "renamed SNOMED/419620001 -> MEDS_DEATH: 1 rows" in out
    athena = write_athena(tmp_path / "athena", CONCEPTS, ANCESTORS, RELATIONSHIPS)
    assert (
        main(["convert", "ontology", "--meds", str(tmp_path / "meds"), "--athena", str(athena), "--no-progress"]) == 0
    )
    out = capsys.readouterr().out
    assert "5 of 9 codes mapped, 5 ancestor codes added" in out and "no_vocabulary_prefix" in out


def test_bad_inputs_give_one_line_and_exit_2(tmp_path, capsys):
    studies = default_studies()
    studies[0].labels["1_month_mortality"] = "yes"
    release = write_release(tmp_path / "release", studies)
    rc = main(["convert", "inspect", "--release", str(release), "--out", str(tmp_path / "c"), "--no-progress"])
    assert rc == 2
    line = _err_line(capsys)
    assert (
        line.startswith("tte-scale convert: error: ")
        and "labels_20250611.tsv: line 2, column '1_month_mortality'" in line
    )
    assert not (tmp_path / "c").exists()

    rc = main(["convert", "meds", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "m"), "--no-progress"])
    assert rc == 2 and "nope: MEDS folder not found" in _err_line(capsys)

    src = write_meds(tmp_path / "ehr", "current")
    rc = main(["convert", "ontology", "--meds", str(src), "--athena", str(tmp_path), "--no-progress"])
    assert rc == 2 and "not written by `tte-scale convert meds`" in _err_line(capsys)

    rc = main(
        ["convert", "inspect", "--release", str(release), "--out", str(tmp_path / "c"), "--set", "studies.scans=x"]
    )
    assert rc == 2 and "studies.scans: unknown key (did you mean 'scan'?)" in _err_line(capsys)
