"""`generate(cfg, out)`: the whole cohort, chunk by chunk in worker processes, then the merge.

Output layout (the input contract of docs/formats.md, plus ground truth kept apart)::

    OUT/data/<split>/<chunk>.parquet     MEDS events (subject_id, time, code, numeric_value)
    OUT/metadata/dataset.json, codes.parquet, subject_splits.parquet
    OUT/scans.parquet                    subject_id, scan_id, prediction_time, image_path, modality
                                         (image paths relative to OUT, so the folder can be moved)
    OUT/images/<chunk>/<scan_id>.nii.gz  int16 HU volumes (and OUT/dicom/<chunk>/<scan_id>/ with dicom)
    OUT/truth/                           latent factors, true log-hazards, labels, model.json
    OUT/synth.json                       config + summary
    OUT/.tte_scale_output.json           owner marker (tte_scale.outputs): --overwrite replaces only such a folder

Memory is bounded by one chunk per worker: the parent holds only per-scan tables.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tte_scale import __version__
from tte_scale.config import to_dict
from tte_scale.errors import InputError
from tte_scale.outputs import mark, remove_own
from tte_scale.synth import sparse
from tte_scale.synth.config import SynthConfig, is_sparse, scanner_for
from tte_scale.synth.model import BENCH_TASKS, OUTCOMES
from tte_scale.synth.vocab import Vocab, build_vocab, codes_table
from tte_scale.synth.worker import run_chunk, to_timestamp_us

__all__ = ["SynthSummary", "generate", "chunk_bounds"]

COMMAND = "synth"
"""Owner name in the ``tte_scale.outputs`` marker of a cohort folder."""
MARKER = "synth.json"
STATE = ".parts/state.json"


@dataclasses.dataclass(kw_only=True, slots=True)
class SynthSummary:
    """What one run produced."""

    out: str
    subjects: int
    scans: int
    events: int
    codes: int
    split_counts: dict[str, int]
    event_rates: dict[str, float]
    """Fraction of positive labels among scans with a label, per benchmark task."""
    oracle_c_index: dict[str, float]
    """Harrell's C of the true log-hazard against the observed time/event, per task."""
    files: int
    seconds: float

    def lines(self) -> list[str]:
        rates = ", ".join(f"{t} {r:.1%}" for t, r in self.event_rates.items())
        cidx = ", ".join(f"{t} {c:.3f}" for t, c in self.oracle_c_index.items())
        return [
            f"wrote {self.out} in {self.seconds:.1f} s: {self.subjects} subjects "
            f"({', '.join(f'{k} {v}' for k, v in self.split_counts.items())}), {self.scans} scans, "
            f"{self.events} events, {self.codes} distinct codes, {self.files} files",
            f"event rates: {rates}",
            f"oracle C-index: {cidx}",
        ]


def chunk_bounds(n: int, chunk_subjects: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges; size depends on n only (never on the worker count)."""
    size = max(1, min(chunk_subjects, -(-n // 16)))
    return [(a, min(n, a + size)) for a in range(0, n, size)]


def _prepare_out(out: Path, cfg: SynthConfig, overwrite: bool, resume: bool) -> None:
    state = out / STATE
    wanted = json.dumps(to_dict(cfg), sort_keys=True)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if resume and (out / MARKER).is_file() and not state.is_file():
            raise InputError(f"--out {out}: already complete; nothing to resume (use --overwrite to redo)")
        if resume and state.is_file():
            if state.read_text() != wanted:
                raise InputError(f"--out {out}: holds a run with another config ({state}); use --overwrite")
            return
        if not overwrite:
            raise InputError(f"--out {out}: not empty; pass --overwrite to replace it (or --resume)")
        remove_own(out, COMMAND)  # only a folder marked as a synth output (tte_scale.outputs)
    (out / ".parts").mkdir(parents=True, exist_ok=True)
    mark(out, COMMAND)  # before the first chunk: an interrupted run is ours to resume or replace
    state.write_text(wanted)


_VOCAB: Vocab | None = None


def _init_worker(vocab: Vocab) -> None:
    global _VOCAB
    _VOCAB = vocab


def _work(args: tuple) -> dict:
    cfg, out, chunk, start, stop = args
    return run_chunk(cfg, _VOCAB, out, chunk, start, stop)


def _metadata(out: Path, cfg: SynthConfig, vocab: Vocab) -> None:
    meta = out / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    extra = sparse.CODE_DESCRIPTIONS if is_sparse(cfg) else {}
    pq.write_table(codes_table(vocab, extra), meta / "codes.parquet")
    try:
        import meds

        meds_version = meds.__version__
    except ImportError:  # meds is a dev dependency only
        meds_version = "0.4.1"
    info = {
        "dataset_name": "tte_scale_synth",
        "dataset_version": f"seed-{cfg.seed}-n-{cfg.subjects}",
        "etl_name": "tte_scale.synth",
        "etl_version": __version__,
        "meds_version": meds_version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "license": "CC0-1.0 (synthetic data)",
    }
    (meta / "dataset.json").write_text(json.dumps(info, indent=2))


# image path columns of the per-chunk scan tables: relative to OUT (the scans table's folder)
PATH_COLUMNS = ("image_path", "nifti_path")


def _read_parts(out: Path, name: str, chunks: int) -> pa.Table:
    return pa.concat_tables([pq.read_table(out / ".parts" / f"{c:05d}" / f"{name}.parquet") for c in range(chunks)])


def _merge(out: Path, cfg: SynthConfig, n_chunks: int) -> tuple[pa.Table, pa.Table]:
    """Concatenate the per-chunk tables (chunk order = subject order) into the final files."""
    scans = _read_parts(out, "scans", n_chunks)
    pq.write_table(
        pa.table(
            {
                "subject_id": scans["subject_id"].cast(pa.int64()),
                "scan_id": scans["scan_id"].cast(pa.string()),
                "prediction_time": to_timestamp_us(scans["prediction_day"].to_numpy()),
                "image_path": scans["image_path"].cast(pa.string()),
                "modality": pa.array(["CT"] * len(scans), pa.string()),
            }
        ),
        out / "scans.parquet",
    )
    subjects = _read_parts(out, "subjects", n_chunks)
    pq.write_table(
        pa.table({"subject_id": subjects["subject_id"].cast(pa.int64()), "split": subjects["split"].cast(pa.string())}),
        out / "metadata" / "subject_splits.parquet",
    )
    truth = out / "truth"
    truth.mkdir(exist_ok=True)
    split_of = dict(zip(subjects["subject_id"].to_pylist(), subjects["split"].to_pylist()))
    bench = _read_parts(out, "bench", n_chunks)
    bench = bench.append_column("split", pa.array([split_of[s] for s in bench["subject_id"].to_pylist()]))
    pq.write_table(bench, truth / "bench.parquet")
    factors = _read_parts(out, "factors", n_chunks)
    # Both part tables list scans in the same (subject, scan) order.
    assert factors["scan_id"].equals(scans["scan_id"])
    for name in scans.column_names:
        if name not in factors.column_names:
            col = scans[name]
            if name in PATH_COLUMNS:  # paths are relative to the folder of the table that holds them
                col = pa.array([f"../{p}" for p in col.to_pylist()], pa.string())
            factors = factors.append_column(name, col)
    pq.write_table(factors, truth / "scans.parquet")
    tasks = sparse.SPARSE_BENCH_TASKS if is_sparse(cfg) else BENCH_TASKS
    model = {
        "outcomes": {k: {"intercept": a, "coef": b} for k, (a, b) in OUTCOMES.items()},
        "bench_tasks": {
            k: {"outcome": o, "codes": list(c), "horizon_days": h, "exclude_prior": e}
            for k, (o, c, h, e) in tasks.items()
        },
        "hazard_unit": "per day",
        "scanner": to_dict(scanner_for(cfg)),
    }
    if is_sparse(cfg):
        # The oracle of the lesion outcomes: log-hazard = intercept + coef * lesion_size
        # (truth/scans.parquet); image factors are all 0, age is not rendered.
        model["latent_model"] = "sparse"
        model["lesion_outcomes"] = {
            k: {"intercept": a, "coef_lesion_size": b, "codes": list(c)}
            for k, (a, b, c, _) in sparse.LESION_OUTCOMES.items()
        }
        model["lesion"] = {
            "prevalence": sparse.LESION_PREVALENCE,
            "diameter_mm_at_size_0_and_1": list(sparse.DIAMETER_MM),
            "growth_per_year": sparse.GROWTH_PER_YEAR,
            "hu": list(sparse.LESION_HU),
        }
        model["image_dependent_codes"] = sorted(sparse.IMAGE_CODES)
    (truth / "model.json").write_text(json.dumps(model, indent=2))
    return scans, bench


def _rates(bench: pa.Table) -> tuple[dict[str, float], dict[str, float]]:
    from tte_scale.eval.concordance import harrell_cindex  # the one C-index; torch only here, not in workers

    rates, cidx = {}, {}
    task = np.asarray(bench["task"].to_pylist(), object)
    # Python values, not pandas (not a runtime dependency: an offline GPU node may lack it); null = unknown.
    label = np.asarray(bench["label"].to_pylist(), object)
    time_, event, logh = (bench[c].to_numpy(zero_copy_only=False) for c in ("time", "event", "log_hazard"))
    for t in dict.fromkeys(task.tolist()):
        lab = [bool(v) for v in label[task == t] if v is not None]
        m = task == t
        rates[t] = float(np.mean(lab)) if lab else float("nan")
        cidx[t] = float(harrell_cindex(time_[m], event[m], logh[m]))
    return rates, cidx


def generate(
    cfg: SynthConfig, out: str | Path, *, overwrite: bool = False, resume: bool = False, progress: bool = True
) -> SynthSummary:
    """Write the synthetic cohort described by ``cfg`` into ``out``; see the module docstring."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(out).resolve()
    _prepare_out(out, cfg, overwrite, resume)
    vocab = build_vocab(cfg.seed, cfg.generic_codes, cfg.noise_code_frac, cfg.generic_zipf_exponent)
    _metadata(out, cfg, vocab)
    bounds = chunk_bounds(cfg.subjects, cfg.chunk_subjects)
    stats: dict[int, dict] = {}
    todo = []
    for c, (a, b) in enumerate(bounds):
        done = out / ".parts" / f"{c:05d}" / "done.json"
        if resume and done.is_file():
            stats[c] = json.loads(done.read_text())
        else:
            todo.append((cfg, out, c, a, b))
    bar = tqdm(
        total=cfg.subjects,
        initial=sum(s["subjects"] for s in stats.values()),
        unit="subj",
        desc="synth",
        disable=not progress,
    )
    if cfg.workers == 1 or len(todo) <= 1:
        _init_worker(vocab)
        results = map(_work, todo)
    else:
        # spawn: workers must not inherit the parent's threads (pyarrow pools) mid-flight.
        pool = mp.get_context("spawn").Pool(min(cfg.workers, len(todo)), _init_worker, (vocab,))
        results = pool.imap_unordered(_work, todo)
    pooled = cfg.workers > 1 and len(todo) > 1
    try:
        for st in results:
            stats[st["chunk"]] = st
            bar.update(st["subjects"])
    except BaseException:
        if pooled:  # do not let queued chunks run on after an error or Ctrl-C; --resume picks up
            pool.terminate()
        raise
    finally:
        bar.close()
    if pooled:
        pool.close()
        pool.join()
    scans, bench = _merge(out, cfg, len(bounds))
    rates, cidx = _rates(bench)
    counts = pq.read_table(out / "metadata" / "subject_splits.parquet")["split"].value_counts().to_pylist()
    summary = SynthSummary(
        out=str(out),
        subjects=cfg.subjects,
        scans=len(scans),
        events=sum(s["events"] for s in stats.values()),
        codes=len(set().union(*(s["codes"] for s in stats.values()))),
        split_counts={d["values"]: d["counts"] for d in counts},
        event_rates=rates,
        oracle_c_index=cidx,
        files=0,
        seconds=0.0,
    )
    shutil.rmtree(out / ".parts")
    summary.files = sum(len(f) for _, _, f in os.walk(out)) + 1
    summary.seconds = time.perf_counter() - t0
    (out / MARKER).write_text(
        json.dumps(
            {"config": to_dict(cfg), "summary": dataclasses.asdict(summary), "software": {"tte_scale": __version__}},
            indent=2,
        )
    )
    return summary
