"""One work unit (a chunk of consecutive subjects): simulate, render, write its own files.

A chunk writes ``data/<split>/<chunk>.parquet`` (MEDS events of its subjects), its images, and
its part tables under ``.parts/<chunk>/``; ``done.json`` is written last, so a chunk without it
is redone on resume. Nothing here is shared with other workers.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tte_scale.formats.units import US_PER_DAY
from tte_scale.synth import sparse
from tte_scale.synth.config import SynthConfig, is_sparse, scanner_for
from tte_scale.synth.ehr import SPLITS, SubjectRecord, simulate_subject
from tte_scale.synth.geometry import sample_geometry
from tte_scale.synth.phantom import blob_center, render_phantom, sample_patient
from tte_scale.synth.truth import BENCH_SCHEMA, bench_rows, factor_rows
from tte_scale.synth.vocab import Vocab
from tte_scale.synth.writers import fake_identity, write_dicom_series, write_nifti

__all__ = ["run_chunk", "DATA_SCHEMA", "to_timestamp_us"]

DATA_SCHEMA = pa.schema(
    [("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string()), ("numeric_value", pa.float32())]
)
_EPOCH = datetime.datetime(1970, 1, 1)


def to_timestamp_us(days: np.ndarray) -> pa.Array:
    """Float days since 1970 (NaN = null) -> timestamp[us]."""
    days = np.asarray(days, np.float64)
    us = np.where(np.isnan(days), 0, np.rint(days * US_PER_DAY)).astype(np.int64)
    return pa.array(us, pa.int64(), mask=np.isnan(days)).cast(pa.timestamp("us"))


def _as_datetime(day: float) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(microseconds=int(round(day * US_PER_DAY)))


def _write_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _event_rows(rec: SubjectRecord, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The subject's rows in file order: shuffled (default) or by time with static rows first."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(rec.index, 2)))
    order = (
        rng.permutation(len(rec.time_E))
        if cfg.shuffle_rows
        else np.argsort(np.nan_to_num(rec.time_E, nan=-np.inf), kind="stable")
    )
    return rec.time_E[order], rec.code_E[order], rec.value_E[order]


def _images(rec: SubjectRecord, cfg: SynthConfig, out: Path, chunk: int) -> list[dict]:
    """Render and write every scan of the subject; one scanner/geometry row per scan."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(rec.index, 1)))
    sc = scanner_for(cfg)
    scale = float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.25))
    fat = float(rng.uniform(5.0, 40.0))
    identity = fake_identity(rng, rec.subject_id, _as_datetime(rec.birth_day).date())
    rows = []
    sparse_cohort = is_sparse(cfg)
    # Distractors: their own stream, so that they cannot correlate with anything in the EHR.
    drng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(rec.index, 4)))
    for s, scan_id in enumerate(rec.scan_ids):
        geom = sample_geometry(rng, sc)
        # The sparse profile renders no age (the aorta widens with it): only the lesion is image-visible.
        age_z = 0.0 if sparse_cohort else float(rec.X_SK[s, -3])
        pat = sample_patient(rng, scale, fat * rng.uniform(0.9, 1.1), age_z)
        extra: dict = {}
        blobs: list = []
        if sparse_cohort:
            lesion = sparse.lesion_blob(rec.lesion, s)
            distractors = sparse.draw_distractors(drng)
            blobs = ([lesion] if lesion is not None else []) + distractors
            extra = {
                # NaN without a lesion (a list column of one type in every chunk)
                "lesion_center_ras": [
                    float(v) for v in (blob_center(pat, lesion) + pat.origin if lesion is not None else [np.nan] * 3)
                ],
                "distractor_centers_ras": [[float(v) for v in blob_center(pat, b) + pat.origin] for b in distractors],
                "distractor_radii_mm": [[float(v) for v in b.radii_mm] for b in distractors],
            }
        vol = render_phantom(geom, pat, rec.x_SF[s], rng, blobs=tuple(blobs))
        nifti = out / "images" / f"{chunk:05d}" / f"{scan_id}.nii.gz"
        nifti.parent.mkdir(parents=True, exist_ok=True)
        write_nifti(nifti, vol, geom)
        path = nifti
        if cfg.dicom:
            path = out / "dicom" / f"{chunk:05d}" / scan_id
            write_dicom_series(
                path,
                vol,
                geom,
                scan_id=scan_id,
                subject_id=rec.subject_id,
                when=_as_datetime(rec.scan_days[s]),
                identity=identity,
                sex="M" if rec.male else "F",
                seed=cfg.seed,
                rng=rng,
            )
        rows.append(
            {
                "scan_id": scan_id,
                "subject_id": rec.subject_id,
                "prediction_day": float(rec.scan_days[s]),
                "image_path": path.relative_to(out).as_posix(),
                "nifti_path": nifti.relative_to(out).as_posix(),
                "shape": list(geom.shape),
                "spacing_mm": list(geom.spacing),
                "orientation": geom.orientation(),
                "feet_first": geom.feet_first,
                "noise_hu": geom.noise_hu,
                "patient_origin_ras": [float(v) for v in pat.origin],
                "body_scale": scale,
                **extra,
            }
        )
    return rows


def run_chunk(cfg: SynthConfig, vocab: Vocab, out: Path, chunk: int, start: int, stop: int) -> dict:
    """Generate subjects [start, stop) into ``out``; returns the chunk's small statistics."""
    parts = out / ".parts" / f"{chunk:05d}"
    data: dict[str, list] = {sp: [] for sp in SPLITS}
    scans, bench, factors, subjects = [], {}, {}, {"subject_id": [], "split": []}
    codes: set[str] = set()
    n_events = 0
    for i in range(start, stop):
        rec = simulate_subject(i, cfg, vocab)
        t, c, v = _event_rows(rec, cfg)
        data[rec.split].append((np.full(len(t), rec.subject_id, np.int64), t, c, v))
        n_events += len(t)
        codes.update(c.tolist())
        subjects["subject_id"].append(rec.subject_id)
        subjects["split"].append(rec.split)
        scans.extend(_images(rec, cfg, out, chunk))
        for dst, rows in ((bench, bench_rows(rec)), (factors, factor_rows(rec))):
            for k, col in rows.items():
                dst.setdefault(k, []).extend(col)
    for split, items in data.items():
        if not items:
            continue
        sid, t, c, v = (np.concatenate(x) for x in zip(*items))
        table = pa.table(
            [
                pa.array(sid, pa.int64()),
                to_timestamp_us(t),
                pa.array(c.tolist(), pa.string()),
                pa.array(v, pa.float32(), mask=np.isnan(v)),
            ],
            schema=DATA_SCHEMA,
        )
        _write_parquet(table, out / "data" / split / f"{chunk}.parquet")
    _write_parquet(pa.Table.from_pylist(scans), parts / "scans.parquet")
    _write_parquet(pa.table(bench, schema=BENCH_SCHEMA), parts / "bench.parquet")
    _write_parquet(pa.table(factors), parts / "factors.parquet")
    _write_parquet(pa.table(subjects), parts / "subjects.parquet")
    stats = {"chunk": chunk, "subjects": stop - start, "events": n_events, "codes": sorted(codes)}
    tmp = parts / "done.json.tmp"
    tmp.write_text(json.dumps(stats))
    os.replace(tmp, parts / "done.json")
    return stats
