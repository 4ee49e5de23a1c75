"""`tte-scale shard` under bad inputs and faults (issues 16 and 24): each case failed before its fix.

Values that cannot be trusted are quarantined with a reason code, never passed on as `ok`
(NaN voxels, degenerate or non-CT images); a stray file does not reject a DICOM series; inputs
outside the cohort folder are reported and can be refused; a re-run checks what it keeps;
`--overwrite` deletes only a build marked as the command's own; an interrupted Ray run exits 130
and leaves no Ray process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from support.cohort import SHARD_SET, make_cohort, phantom_nifti, scans_cohort
from support.phantoms import axial_geometry, hu_at, write_series

from tte_scale.cli import main
from tte_scale.config import load_config
from tte_scale.errors import InputError
from tte_scale.sharding.config import ShardConfig
from tte_scale.sharding.job import build

CFG = load_config(ShardConfig, None, SHARD_SET)


def shard(root: Path, images: dict[str, str], sets=(), out=None) -> tuple[dict, dict]:
    """Build ``images`` in-process; return (samples by scan id, build.json)."""
    scans, labels = scans_cohort(root, images)
    out = out or root / "out"
    build(scans, labels, out, load_config(ShardConfig, None, [*SHARD_SET, *sets]), workers=0, progress=False)
    samples = pq.read_table(out / "manifest" / "samples.parquet").to_pylist()
    return {s["scan_id"]: s for s in samples}, json.loads((out / "manifest" / "build.json").read_text())


def nifti(path: Path, data: np.ndarray, spacing=(12.0, 12.0, 12.0)) -> str:
    """Write ``data`` centred on the origin; return its image_path relative to the cohort root."""
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = -(np.asarray(data.shape) - 1) / 2 * np.asarray(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, aff), str(path))
    return f"{path.parent.name}/{path.name}"


def phantom_hu(shape=(24, 24, 16), spacing=(12.0, 12.0, 12.0)) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    ras = (idx - (np.asarray(shape) - 1) / 2) * np.asarray(spacing)
    return hu_at(-ras[..., 0], -ras[..., 1], ras[..., 2]).astype(np.float32)


# -- issue 16.4: NaN voxels ---------------------------------------------------------------------
def test_nan_voxels_are_quarantined_not_zero(tmp_path):
    half_nan = phantom_hu()
    half_nan[:12] = np.nan
    samples, build_json = shard(
        tmp_path, {"nan": nifti(tmp_path / "img" / "nan.nii.gz", half_nan), "good": phantom_nifti_rel(tmp_path)}
    )
    assert samples["good"]["status"] == "ok"
    assert (samples["nan"]["status"], samples["nan"]["reason"]) == ("failed", "nonfinite_voxels")
    failure = next(f for f in build_json["failures"] if f["scan_id"] == "nan")
    assert "img/nan.nii.gz" in failure["detail"] and "4608 of 9216" in failure["detail"]
    assert "nonfinite_voxels" in build_json["reason_codes"]


def test_dicom_rescale_slope_nan_is_quarantined(tmp_path):
    iop, ipps, ps = axial_geometry(n=20, step=10.0, size=32, ps=10.0)
    folder = write_series(tmp_path / "img" / "slope_nan", iop, ipps, ps, size=32, phi=False)
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ds.RescaleSlope = "NaN"
        ds.save_as(f)
    samples, _ = shard(tmp_path, {"slope": "img/slope_nan"})
    assert (samples["slope"]["status"], samples["slope"]["reason"]) == ("failed", "bad_rescale")


def test_a_few_nan_voxels_filled_only_when_asked_and_counted(tmp_path):
    few = phantom_hu()
    few[0, 0, :3] = np.nan  # three voxels in a corner (air)
    images = {"few": nifti(tmp_path / "img" / "few.nii.gz", few)}
    scans, labels = scans_cohort(tmp_path, images)
    strict = load_config(ShardConfig, None, SHARD_SET)
    build(scans, labels, tmp_path / "strict", strict, workers=0, progress=False)
    assert pq.read_table(tmp_path / "strict" / "manifest" / "samples.parquet").column("reason").to_pylist() == [
        "nonfinite_voxels"
    ]
    filled = load_config(ShardConfig, None, [*SHARD_SET, "imaging.nonfinite_fill_hu=-1024"])
    build(scans, labels, tmp_path / "filled", filled, workers=0, progress=False)
    rows = pq.read_table(tmp_path / "filled" / "manifest" / "samples.parquet").to_pylist()
    assert rows[0]["status"] == "ok"
    notes = json.loads((tmp_path / "filled" / "manifest" / "build.json").read_text())["notes"]
    assert notes["nonfinite_filled"] == [{"row": 0, "scan_id": "few", "detail": "3 voxel(s) set to -1024 HU"}]


def phantom_nifti_rel(root: Path) -> str:
    phantom_nifti(root / "img" / "good.nii.gz")
    return "img/good.nii.gz"


# -- issue 16.5: degenerate images --------------------------------------------------------------
def test_degenerate_images_are_quarantined_with_reason_codes(tmp_path):
    tiny = phantom_hu((2, 2, 2), (1.0, 1.0, 1.0))
    three_slices = phantom_hu((24, 24, 3), (12.0, 12.0, 2.0))  # 6 mm of 144: ~96% padding
    strip = phantom_hu((24, 2, 16))  # 24 mm wide of 288: covers 8% of the canonical volume
    mr_like = np.clip((phantom_hu() + 1000) / 2000, 0, 1)  # intensities 0-1, no air in HU
    images = {
        "tiny": nifti(tmp_path / "img" / "tiny.nii.gz", tiny, (1.0, 1.0, 1.0)),
        "three": nifti(tmp_path / "img" / "three.nii.gz", three_slices, (12.0, 12.0, 2.0)),
        "strip": nifti(tmp_path / "img" / "strip.nii.gz", strip),
        "mr": nifti(tmp_path / "img" / "mr.nii.gz", mr_like.astype(np.float32)),
        "good": phantom_nifti_rel(tmp_path),
    }
    samples, build_json = shard(tmp_path, images)
    got = {sid: (s["status"], s["reason"]) for sid, s in samples.items()}
    assert got == {
        "tiny": ("failed", "too_small"),
        "three": ("failed", "too_small"),
        "strip": ("failed", "low_coverage"),
        "mr": ("failed", "implausible_hu"),
        "good": ("ok", None),
    }
    details = {f["scan_id"]: f["detail"] for f in build_json["failures"]}
    assert "2.0 x 2.0 x 2.0 mm" in details["tiny"] and "min_extent_mm" in details["tiny"]
    assert "min_coverage" in details["strip"] and "min_air_fraction" in details["mr"]
    assert set(build_json["reason_codes"]) == {"too_small", "low_coverage", "implausible_hu"}


def test_plausibility_checks_can_be_relaxed_knowingly(tmp_path):
    mr_like = np.clip((phantom_hu() + 1000) / 2000, 0, 1).astype(np.float32)
    images = {"mr": nifti(tmp_path / "img" / "mr.nii.gz", mr_like)}
    samples, _ = shard(tmp_path, images, sets=["imaging.min_air_fraction=0"])
    assert samples["mr"]["status"] == "ok"


# -- issue 16.12: a stray file in a DICOM folder ------------------------------------------------
def test_stray_non_dicom_file_is_ignored_and_recorded(tmp_path):
    iop, ipps, ps = axial_geometry(n=20, step=10.0, size=32, ps=10.0)
    folder = write_series(tmp_path / "img" / "series", iop, ipps, ps, size=32, phi=False)
    (folder / "README.txt").write_text("exported by the PACS on Monday\n")
    damaged = write_series(tmp_path / "img" / "damaged", iop, ipps, ps, size=32, phi=False)
    first = sorted(damaged.iterdir())[0]
    first.write_bytes(first.read_bytes()[:-100])  # a DICOM file cut short is still an error, not ignored
    samples, build_json = shard(tmp_path, {"series": "img/series", "damaged": "img/damaged"})
    assert samples["series"]["status"] == "ok"
    assert (samples["damaged"]["status"], samples["damaged"]["reason"]) == ("failed", "pixel_decode_failed")
    assert build_json["notes"]["ignored_files"] == [
        {"row": 0, "scan_id": "series", "detail": "not DICOM, ignored: img/series/README.txt"}
    ]


# -- issue 16.13: inputs outside the cohort folder ----------------------------------------------
def shard_argv(scans, labels, out, *extra):
    argv = ["shard", "--scans", str(scans), "--labels", str(labels), "--out", str(out), "--workers", "0"]
    argv += ["--no-progress", *extra]
    for s in SHARD_SET:
        argv += ["--set", s]
    return argv


@pytest.fixture
def scattered(tmp_path):
    """A cohort folder whose table names one image inside it, one through `../` and one by an
    absolute path elsewhere, plus one through a symlink inside the folder that leads outside."""
    cohort, elsewhere, absolute = tmp_path / "cohort", tmp_path / "elsewhere", tmp_path / "abs" / "deep"
    phantom_nifti(cohort / "img" / "in.nii.gz")
    phantom_nifti(elsewhere / "up.nii.gz")
    phantom_nifti(absolute / "abs.nii.gz")
    (cohort / "img" / "link.nii.gz").symlink_to(absolute / "abs.nii.gz")
    images = {
        "in": "img/in.nii.gz",
        "up": "../elsewhere/up.nii.gz",
        "abs": str(absolute / "abs.nii.gz"),
        "link": "img/link.nii.gz",
    }
    scans, labels = scans_cohort(cohort, images)
    return cohort, scans, labels


def test_inputs_outside_the_cohort_folder_are_reported(scattered, tmp_path, capsys):
    cohort, scans, labels = scattered
    assert main(shard_argv(scans, labels, tmp_path / "out")) == 0
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "inputs:" in ln)
    assert f"1 of 4 scan(s) under the scans table's folder {cohort.resolve()}" in line, line
    assert f"3 elsewhere, under {tmp_path.resolve()}" in line and "--image-root" in line, line


def test_image_root_refuses_paths_outside_it_before_any_work(scattered, tmp_path, capsys):
    cohort, scans, labels = scattered
    out = tmp_path / "out"
    assert main(shard_argv(scans, labels, out, "--image-root", str(cohort))) == 2
    err = capsys.readouterr().err
    assert "row 1" in err and "'../elsewhere/up.nii.gz'" in err and "--image-root" in err, err
    assert "3 of 4" in err  # how many are outside, not only the first
    assert not out.exists()
    # the symlink resolves outside too: allowing the other two folders leaves it refused
    assert (
        main(shard_argv(scans, labels, out, "--image-root", str(cohort), "--image-root", str(tmp_path / "elsewhere")))
        == 2
    )
    assert "row 2" in capsys.readouterr().err
    allowed = [
        "--image-root",
        str(cohort),
        "--image-root",
        str(tmp_path / "elsewhere"),
        "--image-root",
        str(tmp_path / "abs"),
    ]
    assert main(shard_argv(scans, labels, out, *allowed)) == 0


# -- issue 16.7: a re-run checks what it keeps ---------------------------------------------------
def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "_state"
    }


def test_resume_verifies_kept_shards_by_checksum(tmp_path):
    scans, labels = make_cohort(tmp_path, n_subjects=4, broken=False)
    out = tmp_path / "out"
    build(scans, labels, out, CFG, workers=0, progress=False)
    before = tree(out)
    for victim in (sorted((out / "wds").glob("*.tar"))[1], out / "zarr" / "volumes" / "c" / "1" / "0" / "0" / "0"):
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x40  # same size, one flipped bit
        victim.write_bytes(bytes(data))
    s = build(scans, labels, out, CFG, workers=0, progress=False)
    assert tree(out) == before  # both damaged shards rewritten
    assert s["resumed"] and s["processed"] > 0 and s["damaged_shards"] == 2


def test_resume_of_a_build_by_another_resampler_is_refused(tmp_path):
    """A plan recorded before CANONICAL_VERSION (NIfTI voxels may differ by 1 HU) is not resumed."""
    scans, labels = make_cohort(tmp_path, n_subjects=2, broken=False)
    out = tmp_path / "out"
    build(scans, labels, out, CFG, workers=0, progress=False)
    plan = out / "_state" / "plan.json"
    old = json.loads(plan.read_text())
    plan.write_text(json.dumps({"fingerprint": old["fingerprint"]}))  # what a build before version 2 wrote
    with pytest.raises(InputError, match=r"another resampler \(canonical_version 1, this tte-scale writes 2\)"):
        build(scans, labels, out, CFG, workers=0, progress=False)
    assert json.loads(plan.read_text()) == {"fingerprint": old["fingerprint"]}  # nothing rewritten


def test_resume_rereads_a_failed_input_that_changed(tmp_path):
    scans, labels = make_cohort(tmp_path, n_subjects=4, broken=True, corrupt=True)
    out = tmp_path / "out"
    first = build(scans, labels, out, CFG, workers=0, progress=False)
    assert first["failed"] == 2
    phantom_nifti(tmp_path / "img" / "corrupt.nii.gz")  # the user fixes the file in place
    second = build(scans, labels, out, CFG, workers=0, progress=False)
    assert second["resumed"] and second["failed"] == 1 and second["ok"] == first["ok"] + 1
    assert second["changed_inputs"] == 1
    third = build(scans, labels, out, CFG, workers=0, progress=False)  # nothing changed since: all kept
    assert third["processed"] == 0 and third["failed"] == 1


# -- issue 16.1: --overwrite deletes only a build the command marked as its own ------------------
def test_overwrite_refuses_an_unmarked_folder_and_keeps_everything(tmp_path, capsys):
    scans, labels = make_cohort(tmp_path / "c", n_subjects=3)
    out = tmp_path / "out"
    for d in ("wds", "manifest"):  # looks like shard outputs, but nothing says `shard` wrote them
        (out / d).mkdir(parents=True)
        (out / d / "mine.txt").write_text("keep me")
    assert main(shard_argv(scans, labels, out, "--overwrite")) == 2
    assert "tte_scale_output" in capsys.readouterr().err
    assert (out / "wds" / "mine.txt").read_text() == "keep me" and (out / "manifest" / "mine.txt").exists()


def test_overwrite_refuses_a_folder_holding_an_input(tmp_path, capsys):
    root = tmp_path / "c"
    scans, labels = make_cohort(root, n_subjects=3)
    assert main(shard_argv(scans, labels, root)) == 0  # a build into the cohort folder itself
    assert main(shard_argv(scans, labels, root, "--overwrite")) == 2
    assert "holds the input" in capsys.readouterr().err
    assert (root / "wds").is_dir() and scans.is_file()


def test_overwrite_replaces_its_own_build_and_keeps_foreign_files(tmp_path):
    scans, labels = make_cohort(tmp_path / "c", n_subjects=3)
    out = tmp_path / "out"
    assert main(shard_argv(scans, labels, out)) == 0
    (out / "notes.txt").write_text("the user's own file")
    assert main(shard_argv(scans, labels, out, "--overwrite", "--set", "imaging.hu_max=2000")) == 0
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert json.loads((out / "manifest" / "build.json").read_text())["config"]["imaging"]["hu_max"] == 2000
    assert json.loads((out / ".tte_scale_output.json").read_text())["command"] == "shard"


# -- issue 24.1: Ctrl-C of a Ray run --------------------------------------------------------------
def process_tree_watch(pid: int, stop):
    """Every process that is ever a descendant of ``pid`` until ``stop`` is set (Ray's agents are
    started late, by the raylet, and outlive it when orphaned)."""
    import psutil

    seen: dict[int, psutil.Process] = {}
    while not stop.is_set():
        try:
            for child in psutil.Process(pid).children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.Error:
            pass
        time.sleep(0.02)
    return seen


def running(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.timeout(600)
def test_sigint_while_ray_starts_exits_130_and_leaves_no_ray_process(tmp_path, cli_cmd):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    scans, labels = make_cohort(tmp_path / "c", n_subjects=6)
    cmd = [*cli_cmd, *shard_argv(scans, labels, tmp_path / "out")]
    cmd[cmd.index("--workers") + 1] = "2"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        watch = pool.submit(process_tree_watch, proc.pid, stop)
        try:
            deadline = time.monotonic() + 120
            # the moment that left Ray's agents behind: the raylet is up, ray.init not yet returned
            while not any(p.name() == "raylet" for p in psutil.Process(proc.pid).children(recursive=True)):
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
        seen = list(watch.result().values())
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err
    assert len(seen) >= 2  # gcs_server, raylet, ...
    deadline = time.monotonic() + 20
    left = seen
    while left and time.monotonic() < deadline:
        left = [p for p in seen if running(p)]
        time.sleep(0.2)
    names = [(p.pid, p.name()) for p in left]
    for p in left:
        p.kill()
    assert not names, f"Ray processes left after the interrupted run: {names}"
