"""The sparse profile: the lesion is where truth says, distractors and everything but the
lesion outcome codes are independent of what the image shows."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tte_scale.synth import SynthConfig, generate, sparse
from tte_scale.synth.ehr import simulate_subject
from tte_scale.synth.vocab import build_vocab

REPO = Path(__file__).resolve().parents[3]
N = 12


def _cfg(**kw):
    return SynthConfig(subjects=N, seed=5, generic_codes=100, workers=1, profile="sparse", **kw)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("sparse") / "c"
    generate(_cfg(), out, progress=False)
    return out


def _data(out: Path) -> pa.Table:
    t = pa.concat_tables(pq.read_table(p) for p in sorted((out / "data").rglob("*.parquet")))
    return t.sort_by([("subject_id", "ascending"), ("time", "ascending"), ("code", "ascending")])


def test_bench_tasks_match_the_task_config():
    tasks = yaml.safe_load((REPO / "configs" / "tasks" / "sparse.yaml").read_text())["tasks"]
    lesion_tasks = [k for k, v in sparse.SPARSE_BENCH_TASKS.items() if v[0] in sparse.LESION_OUTCOMES]
    assert [t["name"] for t in tasks] == lesion_tasks
    for t in tasks:
        _, codes, horizon, exclude_prior = sparse.SPARSE_BENCH_TASKS[t["name"]]
        assert list(codes) == t["codes"] and horizon == t["horizon_days"] and exclude_prior == t["exclude_prior"]


def test_lesion_is_where_truth_says(cohort):
    truth = pq.read_table(cohort / "truth" / "scans.parquet").to_pylist()
    checked = 0
    for row in truth:
        img = nib.load(cohort / "truth" / row["nifti_path"])
        vol = np.asarray(img.dataobj)
        inv = np.linalg.inv(img.affine)
        center = np.array(row["lesion_center_ras"])
        if not row["lesion_present"]:
            assert np.isnan(center).all() and row["lesion_size"] == 0.0
            continue
        # The voxel nearest to the centre lies inside the lesion when its radius exceeds the
        # half-diagonal of a voxel (<= 4.4 mm for the compact grid).
        if row["lesion_diameter_mm"] / 2 <= 0.5 * np.linalg.norm(row["spacing_mm"]):
            continue
        ijk = np.rint(inv[:3, :3] @ center + inv[:3, 3]).astype(int)
        assert np.all((ijk >= 0) & (ijk < vol.shape)), row["scan_id"]
        hu = float(vol[tuple(ijk)])
        assert sparse.LESION_HU[0] - 5 * row["noise_hu"] < hu < sparse.LESION_HU[1] + 5 * row["noise_hu"], (
            row["scan_id"],
            hu,
        )
        checked += 1
    assert checked >= 2  # the fixture must exercise the check


def test_lesion_size_sets_the_true_hazard_of_its_outcomes(cohort):
    size = dict(
        zip(*pq.read_table(cohort / "truth" / "scans.parquet", columns=["scan_id", "lesion_size"]).to_pydict().values())
    )
    bench = pq.read_table(cohort / "truth" / "bench.parquet").to_pylist()
    model = json.loads((cohort / "truth" / "model.json").read_text())
    assert model["latent_model"] == "sparse"
    for row in bench:
        outcome = sparse.SPARSE_BENCH_TASKS[row["task"]][0]
        if outcome in sparse.LESION_OUTCOMES:
            lo = model["lesion_outcomes"][outcome]
            assert row["log_hazard"] == pytest.approx(lo["intercept"] + lo["coef_lesion_size"] * size[row["scan_id"]])
    assert {r["task"] for r in bench} == set(sparse.SPARSE_BENCH_TASKS)


def test_distractors_drive_nothing(cohort, tmp_path, monkeypatch):
    """Other distractors (here: none) change the images and nothing else."""
    monkeypatch.setattr(sparse, "draw_distractors", lambda rng: [])
    out = tmp_path / "no_distractors"
    generate(_cfg(), out, progress=False)
    assert _data(out).equals(_data(cohort))
    assert pq.read_table(out / "truth" / "bench.parquet").equals(pq.read_table(cohort / "truth" / "bench.parquet"))
    a = pq.read_table(cohort / "truth" / "scans.parquet")["nifti_path"].to_pylist()[0]
    vol_a = np.asarray(nib.load(cohort / "truth" / a).dataobj)
    vol_b = np.asarray(nib.load(out / "truth" / a).dataobj)
    assert not np.array_equal(vol_a, vol_b)  # the distractors were really drawn into the images


def test_distractors_look_like_the_lesion():
    rng = np.random.default_rng(0)
    blobs = [b for _ in range(50) for b in sparse.draw_distractors(rng)]
    hu = np.array([b.hu for b in blobs])
    assert sparse.LESION_HU[0] <= hu.min() and hu.max() <= sparse.LESION_HU[1]
    long_axis = np.array([b.radii_mm.max() * 2 for b in blobs])
    lo, hi = sparse.DIAMETER_MM
    assert (long_axis >= lo).mean() > 0.9 and long_axis.min() < hi  # overlapping sizes


def test_only_lesion_codes_depend_on_the_image(monkeypatch):
    """Every event but the lesion outcome codes is identical whatever the lesion; those codes
    are <= 5% of the codes that occur."""
    cfg = SynthConfig(subjects=60, seed=2, profile="sparse")
    vocab = build_vocab(cfg.seed, cfg.generic_codes, cfg.noise_code_frac)
    real = sparse.draw_lesion

    def rec_with(size0):
        def forced(rng, scan_days):
            les = real(rng, scan_days)
            years = (scan_days - scan_days[0]) / 365.25
            return dataclasses.replace(les, present=True, size_S=sparse.lesion_sizes(True, size0, years))

        monkeypatch.setattr(sparse, "draw_lesion", forced)
        return [simulate_subject(i, cfg, vocab) for i in range(cfg.subjects)]

    small, large = rec_with(0.0), rec_with(1.0)
    codes_seen: set[str] = set()
    image_events = [0, 0]
    for a, b in zip(small, large):
        keep_a = ~np.isin(a.code_E, list(sparse.IMAGE_CODES))
        keep_b = ~np.isin(b.code_E, list(sparse.IMAGE_CODES))
        np.testing.assert_array_equal(a.code_E[keep_a], b.code_E[keep_b])
        np.testing.assert_array_equal(a.time_E[keep_a], b.time_E[keep_b])
        assert a.lesion.size_S[0] == 0.0 and b.lesion.size_S[0] == 1.0
        np.testing.assert_array_equal(a.X_SK, b.X_SK)
        image_events[0] += int((~keep_a).sum())
        image_events[1] += int((~keep_b).sum())
        codes_seen.update(a.code_E.tolist())
        codes_seen.update(b.code_E.tolist())
    assert image_events[1] > 2 * image_events[0] > 0  # a larger lesion: many more lesion outcome events
    frac = len(codes_seen & sparse.IMAGE_CODES) / len(codes_seen)
    assert 0 < frac <= 0.05


def test_image_factors_are_zero_and_lesions_vary(cohort):
    truth = pq.read_table(cohort / "truth" / "scans.parquet")
    from tte_scale.synth.model import FACTORS

    for f in FACTORS:
        assert set(truth[f].to_pylist()) == {0.0}
    assert set(truth["lesion_present"].to_pylist()) == {True, False}
