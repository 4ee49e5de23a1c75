"""benchmarks/seed_pool.py: each run's paired lead over its baseline and the mean over runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.eval_inputs import size_driven_outcome, write_eval_embeddings

from tte_scale.benchmarks import seed_pool
from tte_scale.errors import InputError

SPLIT_SIZES = {"train": 160, "tuning": 60, "held_out": 120}


def _write(path, ids, splits, columns):
    arrays = {}
    for s in SPLIT_SIZES:
        rows = [i for i, x in enumerate(splits) if x == s]
        arrays[f"{s}/scan_id"] = np.array([ids[i] for i in rows])
        arrays[f"{s}/features"] = columns[rows].astype(np.float32)
    write_eval_embeddings(path, arrays)


@pytest.fixture
def runs(tmp_path):
    """An outcome driven by a hidden size; three eval folders ("seeds"), each with a `tte` that
    holds the size plus noise (more noise in the later seeds) and a `random_init` of noise only."""
    rng = np.random.default_rng(0)
    ids, splits, size = size_driven_outcome(tmp_path, SPLIT_SIZES, rng)
    n = len(ids)
    for seed, noise in enumerate((0.3, 0.6, 1.2)):
        emb = tmp_path / f"ev{seed}" / "embeddings"
        emb.mkdir(parents=True)
        tte = rng.normal(size=(n, 6))
        tte[:, 2] = size * 4 + rng.normal(scale=noise * 4, size=n)
        _write(emb / f"tte-{seed:016x}.npz", ids, splits, tte)
        _write(emb / f"random_init-{seed:016x}.npz", ids, splits, rng.normal(size=(n, 6)))
    return tmp_path


def _args(root, *extra, runs=3):
    argv = ["--labels", str(root / "labels"), "--tasks", str(root / "tasks.yaml"), "--bootstrap", "200"]
    for i in range(runs):
        argv += ["--eval", str(root / f"ev{i}")]
    return [*argv, "--out", str(root / "out"), "--tag", "t", *extra]


def test_pooled_lead_is_the_mean_of_the_runs_with_a_paired_ci(runs):
    assert seed_pool.main(_args(runs)) == 0
    r = json.loads((runs / "out" / "seed_pool_tte_minus_random_init_t.json").read_text())
    assert r["scans"] == SPLIT_SIZES and r["runs"] == [str(runs / f"ev{i}") for i in range(3)]
    for key, probe, metric in (("logistic/auroc", "logistic", "auroc"), ("cox/c_index", "cox", "c_index")):
        rows = [x for x in r["per_run"] if (x["probe"], x["metric"]) == (probe, metric)]
        assert len(rows) == 3
        diffs = [x["diff"] for x in rows]
        p = r["pooled"][key]
        assert p["diff"] == pytest.approx(np.mean(diffs)) and p["range"] == [min(diffs), max(diffs)]
        # the size is in every tte and in no random_init: a clear lead, and the pooled CI holds it
        assert min(diffs) > 0 and 0 < p["ci_low"] < p["diff"] < p["ci_high"], r
        # averaging three runs on shared resamples is tighter than the noisiest run alone
        noisiest = rows[2]
        assert p["ci_high"] - p["ci_low"] < noisiest["ci_high"] - noisiest["ci_low"]
    md = (runs / "out" / "seed_pool_tte_minus_random_init_t.md").read_text()
    assert "**mean of the 3 runs**" in md


def test_a_run_without_its_embeddings_is_refused(runs):
    (runs / "ev1" / "embeddings" / "random_init-0000000000000001.npz").unlink()
    with pytest.raises(InputError, match=r"ev1/embeddings: expected one random_init-<digest>.npz .* found none"):
        seed_pool.main(_args(runs))
    assert not (runs / "out").exists()


def test_one_run_is_refused(runs):
    with pytest.raises(InputError, match="at least 2"):
        seed_pool.main(_args(runs, runs=1))


def test_only_labelled_probes_a_sub_cohort(runs):
    """The labels of part of the cohort (every other subject) on the whole cohort's evaluations: a
    scan without labels is refused unless --only-labelled, which probes the labelled ones only."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    bench = pq.read_table(runs / "labels" / "bench.parquet")
    subjects = sorted(set(bench["subject_id"].to_pylist()))
    sub = bench.filter(pc.is_in(bench["subject_id"], value_set=pa.array(subjects[::2])))
    (runs / "half").mkdir()
    pq.write_table(sub, runs / "half" / "bench.parquet")
    argv = [a if a != str(runs / "labels") else str(runs / "half") for a in _args(runs)]
    with pytest.raises(InputError, match="no benchmark labels for scans"):
        seed_pool.main(argv)
    assert seed_pool.main([*argv, "--only-labelled"]) == 0
    r = json.loads((runs / "out" / "seed_pool_tte_minus_random_init_t.json").read_text())
    kept = {s: len(set(sub.filter(pc.equal(sub["split"], s))["scan_id"].to_pylist())) for s in SPLIT_SIZES}
    assert r["only_labelled"] and r["scans"] == kept and 0 < kept["held_out"] < SPLIT_SIZES["held_out"]
