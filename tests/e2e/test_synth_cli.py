"""`tte-scale synth` end to end, as a user runs it (subprocess, 2 worker processes, DICOM)."""

from __future__ import annotations

import subprocess

import pyarrow.parquet as pq
import pydicom


def test_synth_cli_writes_a_cohort_with_dicom(tmp_path, cli_cmd):
    out = tmp_path / "cohort"
    cmd = cli_cmd + [
        "synth",
        "--out",
        str(out),
        "--subjects",
        "6",
        "--seed",
        "5",
        "--workers",
        "2",
        "--dicom",
        "--no-progress",
        "--set",
        "generic_codes=80",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "6 subjects" in res.stdout and "event rates:" in res.stdout and "oracle C-index" in res.stdout
    scans = pq.read_table(out / "scans.parquet")
    folder = out / scans["image_path"][0].as_py()
    assert folder.is_dir(), "with --dicom, image_path is the series folder"
    files = list(folder.glob("*.dcm"))
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "CT" and len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1
    assert (out / "truth" / "bench.parquet").is_file() and (out / "synth.json").is_file()

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr
    bad = subprocess.run(
        cli_cmd + ["synth", "--out", str(tmp_path / "x"), "--set", "subjects=0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "subjects: must be >= 1" in bad.stderr
