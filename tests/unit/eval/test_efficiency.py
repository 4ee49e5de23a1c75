"""Label efficiency: subject-level subsets of the training split, probes refit on them, means."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tte_scale.config import ConfigError
from tte_scale.eval import EvalConfig, evaluate_embeddings
from tte_scale.eval.efficiency import efficiency_means, label_efficiency, subject_subset

TASKS = ["mortality_12m", "ph_12m"]
CFG = EvalConfig(bootstrap=0, l2_grid=[1e-2, 1.0], max_iter=100, train_subsets=[60, 100_000], train_subset_resamples=3)


def test_subject_subset_keeps_subjects_whole_and_is_reproducible():
    subj = np.repeat(np.arange(50), np.tile([1, 2, 3], 17)[:50])
    for size in (1, 7, 40, 99):
        idx = subject_subset(subj, size, (0, size, 0))
        assert idx.size <= size and np.all(np.diff(idx) > 0)
        chosen = np.unique(subj[idx])
        assert np.isin(subj, chosen).sum() == idx.size  # every row of a chosen subject
        assert size - idx.size <= 2  # filled up to the size unless no subject fits
    a, b = subject_subset(subj, 40, (0, 40, 0)), subject_subset(subj, 40, (0, 40, 1))
    assert np.array_equal(a, subject_subset(subj, 40, (0, 40, 0))) and not np.array_equal(a, b)


def test_label_efficiency_refits_on_the_same_subsets_for_every_model(cohort):
    emb, tables, _ = cohort
    rng = np.random.default_rng(0)
    noise = {s: rng.normal(size=v.shape) for s, v in emb.items()}
    rows = label_efficiency(emb, tables, TASKS, CFG, name="enc") + label_efficiency(
        noise, tables, TASKS, CFG, name="noise"
    )
    n_train = tables["train"].subject_id.size
    sizes = {(r["model"], r["train_size"], r["resample"]): (r["train_rows"], r["train_subjects"]) for r in rows}
    assert sorted({k[1:] for k in sizes}) == [(60, 0), (60, 1), (60, 2), (n_train, 0)]  # 100_000: the whole split
    for (_model, size, r), v in sizes.items():
        assert v == sizes[("enc", size, r)]  # paired across models
    assert {r["probe"] for r in rows} == {"logistic", "cox"}
    assert all(r["whole_split"] == (r["train_size"] == n_train) for r in rows)
    assert all("requested [100000]" in r["note"] for r in rows if r["whole_split"])

    # a subset row is exactly the protocol run on that subset (the reference)
    idx = subject_subset(tables["train"].subject_id, 60, (CFG.seed, 60, 1))
    ref = evaluate_embeddings(
        {**emb, "train": emb["train"][idx]},
        {**tables, "train": tables["train"].take(idx)},
        TASKS,
        dataclasses.replace(CFG, probes=["logistic", "cox"], train_subsets=[]),
        progress=False,
    )
    got = [r for r in rows if r["model"] == "enc" and r["train_size"] == 60 and r["resample"] == 1]
    assert [r["value"] for r in got] == [r["value"] for r in ref.rows]
    # the whole split is the main evaluation without bootstrap
    full = evaluate_embeddings(emb, tables, TASKS, dataclasses.replace(CFG, probes=["logistic", "cox"]), progress=False)
    whole = [r for r in rows if r["model"] == "enc" and r["whole_split"]]
    assert [r["value"] for r in whole] == [r["value"] for r in full.rows]

    means = {(m["model"], m["probe"], m["metric"], m["train_size"]): m for m in efficiency_means(rows)}
    m = means[("enc", "cox", "c_index", 60)]
    per_resample = [
        np.mean(
            [
                r["value"]
                for r in rows
                if r["model"] == "enc"
                and r["train_size"] == 60
                and r["resample"] == k
                and r["probe"] == "cox"
                and r["metric"] == "c_index"
            ]
        )
        for k in range(3)
    ]
    assert m["mean"] == pytest.approx(np.mean(per_resample)) and m["sd"] == pytest.approx(np.std(per_resample, ddof=1))
    assert (m["min"], m["max"], m["resamples"], m["tasks"]) == (min(per_resample), max(per_resample), 3, 2)
    # the embeddings carry the signal, noise does not, at every size
    for size in (60, n_train):
        assert means[("enc", "cox", "c_index", size)]["mean"] > means[("noise", "cox", "c_index", size)]["mean"] + 0.1


def test_efficiency_means_skips_resamples_missing_a_task():
    base = {"model": "m", "probe": "cox", "metric": "c_index", "train_size": 10, "train_rows": 10}
    rows = [
        {**base, "resample": 0, "task": "a", "value": 0.6},
        {**base, "resample": 0, "task": "b", "value": 0.8},
        {**base, "resample": 1, "task": "a", "value": 0.7},
        {**base, "resample": 1, "task": "b", "value": None},  # e.g. no event in that subset
    ]
    (m,) = efficiency_means(rows)
    assert (m["mean"], m["resamples"], m["tasks"], m["sd"]) == (pytest.approx(0.7), 1, 2, None)


def test_config_checks_the_sizes():
    with pytest.raises(ConfigError, match="train_subsets"):
        EvalConfig(train_subsets=[0])
    with pytest.raises(ConfigError, match="train_subsets"):
        EvalConfig(train_subsets=[200, 200])
    with pytest.raises(ConfigError, match="train_subset_probes"):
        EvalConfig(train_subset_probes=["svm"])
