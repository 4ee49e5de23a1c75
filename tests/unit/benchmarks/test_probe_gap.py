"""benchmarks/probe_gap.py: a target in the features vs in the outcome probes, on eval embeddings."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.eval_inputs import size_driven_outcome, write_eval_embeddings

from tte_scale.benchmarks import probe_gap
from tte_scale.errors import InputError

SPLIT_SIZES = {"train": 160, "tuning": 60, "held_out": 80}


@pytest.fixture
def cohort(tmp_path):
    """300 scans; half hold a finding of size in (0, 1], the others 0; the outcome (an event
    within 30 days) gets likelier with the size. Two eval-style embeddings files: `carries` holds
    the size plus a little noise in one of 8 columns, `blind` holds noise only."""
    rng = np.random.default_rng(0)
    ids, splits, size = size_driven_outcome(tmp_path, SPLIT_SIZES, rng)
    (tmp_path / "truth").mkdir()
    table = {"scan_id": ids, "size": size, "text": ["a"] * len(ids)}
    pq.write_table(pa.table(table), tmp_path / "truth" / "scans.parquet")
    for name, signal in (("carries", 1.0), ("blind", 0.0)):
        arrays = {}
        for s in SPLIT_SIZES:
            rows = [i for i, x in enumerate(splits) if x == s]
            f = rng.normal(size=(len(rows), 8))
            f[:, 3] = signal * size[rows] * 4 + rng.normal(scale=0.5, size=len(rows))
            arrays[f"{s}/scan_id"] = np.array([ids[i] for i in rows])
            arrays[f"{s}/features"] = f.astype(np.float32)
        write_eval_embeddings(tmp_path / f"{name}.npz", arrays)
    return tmp_path


def _args(c, *extra):
    return ["--labels", str(c / "labels"), "--truth", str(c / "truth"), "--target", "size",
            "--tasks", str(c / "tasks.yaml"), "--embeddings", f"carries={c / 'carries.npz'}",
            "--embeddings", f"blind={c / 'blind.npz'}", "--bootstrap", "30", "--noise-draws", "4",
            "--out", str(c / "out"), *extra]  # fmt: skip


def test_separates_features_that_carry_the_target_from_blind_ones(cohort):
    assert probe_gap.main(_args(cohort, "--rho-grid", "0.2", "0.9")) == 0
    r = json.loads((cohort / "out" / "probe_gap_size.json").read_text())
    assert r["scans"] == SPLIT_SIZES
    labels = pq.read_table(cohort / "labels" / "bench.parquet").to_pydict()
    held_out_events = sum(e for e, s in zip(labels["event"], labels["split"]) if s == "held_out")
    assert r["positives"]["held_out"] == {"grows": held_out_events} and held_out_events > 10
    carries, blind = r["models"]["carries"], r["models"]["blind"]
    assert carries["held_out_spearman"] > 0.7 and abs(blind["held_out_spearman"]) < 0.3, r
    got = carries["outcomes"]["metrics"]
    est_auroc, lo, hi = got["estimate/mean/logistic/auroc"]
    assert est_auroc > 0.7 and lo < est_auroc < hi, got
    # the estimate's errors are independent noise here: the noise model at its Spearman agrees
    assert carries["noise_model"]["mean/logistic/auroc"] == pytest.approx(est_auroc, abs=0.1)
    assert set(carries["outcomes"]["estimate_minus"]) == {"full/logistic/auroc", "full/cox/c_index"}
    truth = r["truth"]["metrics"]["truth/mean/logistic/auroc"][0]
    assert truth >= est_auroc - 0.05
    low, high = r["noise_curve"]
    assert (low["spearman"], high["spearman"]) == (0.2, 0.9)
    assert low["mean/logistic/auroc"] < high["mean/logistic/auroc"] <= truth + 0.05
    md = (cohort / "out" / "probe_gap_size.md").read_text()
    assert "| carries | +0." in md and "| true target |" in md


def test_a_scan_missing_from_the_truth_is_refused(cohort):
    t = pq.read_table(cohort / "truth" / "scans.parquet")
    pq.write_table(t.slice(1), cohort / "truth" / "scans.parquet")  # drops s000, a train scan
    with pytest.raises(InputError, match=r"carries.npz: 1 train scans are not in the truth \(first: s000\)"):
        probe_gap.main(_args(cohort))


def test_bad_options_are_refused(cohort):
    with pytest.raises(InputError, match="--rho-grid"):
        probe_gap.main(_args(cohort, "--rho-grid", "1.5"))
    with pytest.raises(InputError, match="must be >= 0"):
        probe_gap.main(_args(cohort, "--noise-draws", "-1"))
