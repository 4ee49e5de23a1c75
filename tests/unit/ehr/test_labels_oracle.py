"""Labels equal the brute-force pandas oracle exactly, on randomized small cohorts."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meds_fixture import random_cohort, small_config, small_tasks, write_meds, write_scans

from tte_scale.benchmarks.pandas_labels import reference_labels
from tte_scale.ehr import load_labels
from tte_scale.ehr.build import build_labels


def run_both(d: Path, seed, n_subjects=12, n_codes=8, n_files=2, block_cells=16_000_000, **cfg_kw):
    events, scans, splits, parents = random_cohort(seed, n_subjects=n_subjects, n_codes=n_codes)
    cfg = small_config(block_cells=block_cells, **cfg_kw)
    tasks = small_tasks()
    ref = reference_labels(events, scans, splits, parents, cfg, tasks)
    write_meds(d / "meds", events, splits, parents, n_files=n_files, seed=seed)
    write_scans(d / "scans.parquet", scans)
    try:
        build_labels(d / "meds", d / "scans.parquet", d / "out", cfg, tasks, progress=False)
    except Exception as exc:  # the oracle decides whether an error was right
        return ref, exc, d
    return ref, load_labels(d / "out"), d


def assert_equal_to_oracle(ref, got, d):
    if isinstance(got, Exception):
        # Only legitimate failure: nothing to label / no train scan / no task.
        assert len(ref["vocab"]) == 0 or len(ref["scan_ids"]) == 0, got
        return
    assert got.vocab.column("code").to_pylist() == ref["vocab"]
    assert got.vocab.column("train_count").to_pylist() == ref["train_count"]
    np.testing.assert_allclose(got.vocab.column("score").to_numpy(), ref["score"], rtol=1e-12)
    ids = got.scan_ids
    assert sorted(ids) == sorted(ref["scan_ids"])
    order = [ref["scan_ids"].index(s) for s in ids]
    np.testing.assert_array_equal(np.asarray(got.time[:]), ref["time"][order])
    np.testing.assert_array_equal(np.asarray(got.event[:]), ref["event"][order])
    eor = got.rows.column("end_of_record").cast("int64").to_numpy()
    np.testing.assert_array_equal(eor, ref["end_of_record"][order])
    np.testing.assert_array_equal(got.bin_starts, np.asarray(ref["bin_starts"], np.float32))
    np.testing.assert_array_equal(got.bench_label, ref["bench_label"][order])
    np.testing.assert_array_equal(got.bench_time, ref["bench_time"][order])
    np.testing.assert_array_equal(got.bench_event, ref["bench_event"][order])
    bench = pq.read_table(d / "out" / "bench.parquet").column("excluded").to_pylist()
    assert bench == ref["bench_excluded"][order].reshape(-1).tolist()
    exc = pq.read_table(d / "out" / "excluded.parquet").to_pydict()
    assert dict(zip(exc["scan_id"], exc["reason"])) == ref["excluded"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_subjects=st.integers(1, 20),
    n_codes=st.integers(1, 10),
    n_files=st.integers(1, 3),
    ranking=st.sampled_from(["frequency", "entropy"]),
    ontology=st.booleans(),
    num_tasks=st.integers(1, 12),
    min_count=st.integers(1, 3),
    tiny_blocks=st.booleans(),
    bin_sample_events=st.sampled_from([0, 3, 10, 2_000_000]),  # small: the bins' subject sample
)
def test_labels_equal_oracle(
    seed, n_subjects, n_codes, n_files, ranking, ontology, num_tasks, min_count, tiny_blocks, bin_sample_events
):
    with tempfile.TemporaryDirectory(prefix="ehr_oracle_") as tmp:
        ref, got, d = run_both(
            Path(tmp),
            seed,
            n_subjects=n_subjects,
            n_codes=n_codes,
            n_files=n_files,
            ranking=ranking,
            ontology=ontology,
            num_tasks=num_tasks,
            min_count=min_count,
            block_cells=8 if tiny_blocks else 16_000_000,
            bin_sample_events=bin_sample_events,
        )
        assert_equal_to_oracle(ref, got, d)


def test_oracle_fixed_seeds_bigger(tmp_path):
    for seed in (1, 2):
        ref, got, d = run_both(tmp_path / str(seed), seed, n_subjects=60, n_codes=15, n_files=3, num_tasks=20)
        assert not isinstance(got, Exception)
        assert_equal_to_oracle(ref, got, d)
