"""The task vocabulary and the bins come from the train split only; ranking is deterministic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from meds_fixture import random_cohort, small_config, small_tasks, write_meds, write_scans

from tte_scale.ehr import load_labels
from tte_scale.ehr.build import build_labels


def build(tmp, events, scans, splits, parents=None, n_files=2, seed=0, **kw):
    write_meds(tmp / "meds", events, splits, parents, n_files=n_files, seed=seed)
    write_scans(tmp / "scans.parquet", scans)
    build_labels(tmp / "meds", tmp / "scans.parquet", tmp / "out", small_config(**kw), small_tasks(), progress=False)
    return load_labels(tmp / "out")


def test_code_only_in_non_train_subjects_never_a_task(tmp_path):
    events, scans, splits, parents = random_cohort(7, n_subjects=30)
    non_train = [s for s, v in splits.items() if v != "train"]
    scanned = set(scans["subject_id"])
    assert any(s in scanned for s in non_train)
    # A very frequent code, but only after scans of tuning/held_out subjects.
    leak = []
    for s in non_train:
        for p in scans[scans.subject_id == s]["prediction_time"]:
            leak += [(s, p + np.timedelta64(h, "h"), "LEAK/X") for h in (1, 2, 3)]
    events2 = pd.concat([events, pd.DataFrame(leak, columns=events.columns)], ignore_index=True)
    labels = build(tmp_path, events2, scans, splits, num_tasks=1000)
    assert "LEAK/X" not in labels.vocab.column("code").to_pylist()


def test_non_train_events_do_not_change_vocab_or_bins(tmp_path):
    events, scans, splits, parents = random_cohort(11, n_subjects=30)
    a = build(tmp_path / "a", events, scans, splits, parents, num_tasks=8)
    rng = np.random.default_rng(0)
    non_train = {s for s, v in splits.items() if v != "train"}
    keep = ~events["subject_id"].isin(non_train) | (rng.random(len(events)) < 0.5)
    extra = pd.DataFrame(
        [
            (s, events["time"].min() + np.timedelta64(int(d), "D"), f"C/{c}")
            for s in non_train
            for d, c in zip(rng.integers(0, 30, 10), rng.integers(0, 8, 10))
        ],
        columns=events.columns,
    )
    events_b = pd.concat([events[keep], extra], ignore_index=True)
    b = build(tmp_path / "b", events_b, scans, splits, parents, num_tasks=8)
    assert a.vocab.to_pydict() == b.vocab.to_pydict()
    np.testing.assert_array_equal(a.bin_starts, b.bin_starts)
    # ... while their own (non-train) labels do change.
    assert not np.array_equal(np.asarray(a.time[:]), np.asarray(b.time[:]))


def test_vocab_independent_of_file_layout_and_row_order(tmp_path):
    events, scans, splits, parents = random_cohort(5, n_subjects=25)
    a = build(tmp_path / "a", events, scans, splits, parents, n_files=1, seed=1, num_tasks=7)
    b = build(tmp_path / "b", events.iloc[::-1], scans.iloc[::-1], splits, parents, n_files=3, seed=9, num_tasks=7)
    assert a.vocab.to_pydict() == b.vocab.to_pydict()


def test_ontology_counts_ancestors(tmp_path):
    events, scans, splits, parents = random_cohort(3, n_subjects=30)
    on = build(tmp_path / "on", events, scans, splits, parents, num_tasks=100, ontology=True, ranking="frequency")
    off = build(tmp_path / "off", events, scans, splits, parents, num_tasks=100, ontology=False, ranking="frequency")
    c_on = dict(zip(on.vocab.column("code").to_pylist(), on.vocab.column("train_count").to_pylist()))
    c_off = dict(zip(off.vocab.column("code").to_pylist(), off.vocab.column("train_count").to_pylist()))
    assert "ROOT" in c_on and "ROOT" not in c_off
    assert c_on["GROUP/A"] >= max(c_off.get("C/0", 0), c_off.get("C/1", 0))
    assert c_on["ROOT"] >= c_on["GROUP/A"]
    for c, n in c_off.items():
        assert c_on[c] == n  # leaves keep their own counts


def test_min_count_and_vocab_file(tmp_path):
    events, scans, splits, parents = random_cohort(4, n_subjects=30)
    labels = build(tmp_path, events, scans, splits, parents, num_tasks=1000, min_count=3)
    vocab = pq.read_table(tmp_path / "out" / "vocab.parquet")
    assert min(vocab.column("train_count").to_pylist()) >= 3
    assert vocab.column("task_index").to_pylist() == list(range(vocab.num_rows))
    assert labels.num_tasks == vocab.num_rows
