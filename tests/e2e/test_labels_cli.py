"""`tte-scale synth` then `tte-scale labels` through the CLI, checked against two oracles:
the synthetic cohort's own ground truth (truth/bench.parquet) and the pandas reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tte_scale.benchmarks.pandas_labels import read_meds_frames, reference_labels
from tte_scale.ehr import LabelsConfig, load_labels, load_task_set

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tte_scale.cli"]


def cli(*args, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=cwd)


def _labels_args(root) -> list:
    """`labels` from the module's synthetic cohort into root/labels, quietly."""
    return ["labels", "--meds", root / "cohort", "--scans", root / "cohort" / "scans.parquet",
            "--out", root / "labels", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels_e2e")
    res = cli("synth", "--out", root / "cohort", "--subjects", 40, "--no-progress")
    assert res.returncode == 0, res.stderr
    # From another directory: the default bench task file must still be found.
    res = cli(
        *_labels_args(root),
        "--tasks",
        64,
        "--bins",
        4,
        cwd=root,
    )
    assert res.returncode == 0, res.stderr
    return root, res.stdout


@pytest.mark.slow
def test_labels_cli_outputs(cohort):
    root, out = cohort
    assert "tasks kept 64 of 64" in out and "median follow-up" in out and "bench pe" in out
    labels = load_labels(root / "labels")
    N = pq.read_metadata(root / "cohort" / "scans.parquet").num_rows
    assert labels.num_rows <= N and labels.num_tasks == 64 and labels.time.shape == (labels.num_rows, 64)
    assert len(labels.bin_starts) <= 4 and labels.bin_starts[0] == 0
    assert labels.bench_tasks == load_task_set("configs/tasks/inspect.yaml").names
    for name in ("vocab.parquet", "bins.json", "rows.parquet", "excluded.parquet", "bench.parquet", "summary.json"):
        assert (root / "labels" / name).exists()


@pytest.mark.slow
def test_bench_labels_match_synth_ground_truth(cohort):
    root, _ = cohort
    truth = pq.read_table(root / "cohort" / "truth" / "bench.parquet").to_pandas().set_index(["scan_id", "task"])
    ours = pq.read_table(root / "labels" / "bench.parquet").to_pandas().set_index(["scan_id", "task"])
    truth = truth.loc[ours.index]
    np.testing.assert_array_equal(ours["time"].to_numpy(), truth["time"].to_numpy(np.float32))
    np.testing.assert_array_equal(ours["event"].to_numpy(), truth["event"].to_numpy())
    assert (
        ours["label"].astype(object).where(ours["label"].notna(), None).tolist()
        == truth["label"].astype(object).where(truth["label"].notna(), None).tolist()
    )
    assert ours["excluded"].fillna("").tolist() == truth["excluded"].fillna("").tolist()


@pytest.mark.slow
def test_tte_labels_match_pandas_reference(cohort):
    root, _ = cohort
    labels = load_labels(root / "labels")
    events, scans, splits, parents = read_meds_frames(str(root / "cohort"), str(root / "cohort" / "scans.parquet"))
    cfg = LabelsConfig(num_tasks=64, num_bins=4)
    ref = reference_labels(events, scans, splits, parents, cfg, load_task_set(cfg.bench_tasks))
    assert labels.vocab.column("code").to_pylist() == ref["vocab"]
    order = [ref["scan_ids"].index(s) for s in labels.scan_ids]
    np.testing.assert_array_equal(np.asarray(labels.time[:]), ref["time"][order])
    np.testing.assert_array_equal(np.asarray(labels.event[:]), ref["event"][order])
    np.testing.assert_array_equal(labels.bin_starts, np.asarray(ref["bin_starts"], np.float32))


@pytest.mark.slow
def test_overwrite_and_relabel_with_other_k(cohort):
    root, _ = cohort
    args = _labels_args(root)
    res = cli(*args, "--tasks", 16)
    assert res.returncode == 2 and "exists; pass --overwrite" in res.stderr
    res = cli(*args, "--tasks", 16, "--bins", 3, "--overwrite", "--set", "ranking=frequency")
    assert res.returncode == 0, res.stderr
    labels = load_labels(root / "labels")
    assert labels.num_tasks == 16 and labels.bins["config"]["labels"]["ranking"] == "frequency"


def test_cli_bad_input_is_one_clear_line(tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "unit" / "ehr"))
    from meds_fixture import random_cohort, write_meds, write_scans

    events, scans, splits, parents = random_cohort(1)
    write_meds(tmp_path / "meds", events, splits, parents)
    write_scans(tmp_path / "scans.parquet", pd.concat([scans, scans.iloc[:1]], ignore_index=True))
    res = cli(
        "labels",
        "--meds",
        tmp_path / "meds",
        "--scans",
        tmp_path / "scans.parquet",
        "--out",
        tmp_path / "out",
        "--no-progress",
    )
    assert res.returncode == 2
    assert "scans.parquet: duplicate scan_id" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_cli_config_file_set_and_flags(tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "unit" / "ehr"))
    from meds_fixture import random_cohort, write_meds, write_scans

    events, scans, splits, parents = random_cohort(2, n_subjects=30)
    write_meds(tmp_path / "meds", events, splits, parents)
    write_scans(tmp_path / "scans.parquet", scans)
    (tmp_path / "run.yaml").write_text("labels:\n  num_tasks: 5\n  ranking: frequency\n  num_bins: 6\n")
    base = [
        "labels",
        "--meds",
        tmp_path / "meds",
        "--scans",
        tmp_path / "scans.parquet",
        "--no-progress",
        "--config",
        tmp_path / "run.yaml",
    ]
    res = cli(*base, "--out", tmp_path / "out", "--set", "min_count=2", "--bins", 3, "--no-ontology")
    assert res.returncode == 0, res.stderr
    cfg = load_labels(tmp_path / "out").bins["config"]["labels"]
    assert (cfg["num_tasks"], cfg["ranking"], cfg["min_count"], cfg["num_bins"], cfg["ontology"]) == (
        5,
        "frequency",
        2,
        3,
        False,
    )
    res = cli(*base, "--out", tmp_path / "out2", "--set", "num_taks=3")
    assert res.returncode == 2 and "num_taks: unknown key (did you mean 'num_tasks'?)" in res.stderr
