"""The protocol end to end on a tiny cohort: probes learn, CIs cover, errors are clear."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tte_scale.config import ConfigError
from tte_scale.errors import InputError
from tte_scale.eval import EvalConfig, EvalResult, evaluate_embeddings, evaluate_risk_scores
from tte_scale.eval.bootstrap import percentile_ci, subject_weights
from tte_scale.eval.protocol import ROW_FIELDS

TASKS = ("mortality_12m", "ph_12m")  # the columns of the conftest cohort

CFG = EvalConfig(bootstrap=40, l2_grid=[1e-2, 1.0], horizons_days={"mortality_12m": 365.0}, max_iter=200)


@pytest.fixture(scope="module")
def result(cohort):
    emb, tables, _ = cohort
    return evaluate_embeddings(emb, tables, list(TASKS), CFG, name="enc", progress=False)


def test_rows_are_complete_and_probes_learn(result):
    assert all(set(r) == set(ROW_FIELDS) for r in result.rows)
    got = {(r["task"], r["probe"], r["metric"]) for r in result.rows}
    for task in TASKS:
        for probe, metrics in (("logistic", ("auroc", "auprc")), ("cox", ("c_index", "c_index_td", "ibs")),
                               ("pem", ("c_index", "c_index_td", "ibs"))):
            assert {(task, probe, m) for m in metrics} <= got
    for r in result.rows:
        assert r["value"] is not None, r
        assert r["ci_low"] <= r["value"] <= r["ci_high"], r
        assert r["l2"] in CFG.l2_grid
        if r["metric"] in ("auroc", "c_index", "c_index_td"):
            assert r["value"] > 0.65, r  # the embeddings carry the hazard
        if r["metric"] == "ibs":
            assert 0.0 < r["value"] < 0.25
    # Cox curves never cross, so Antolini's index is Harrell's minus the pairs it ties
    # (S = 1 for everyone before the first training event; Antolini counts those ties 0)
    for task in TASKS:
        assert result.value(task, "c_index_td", "cox") <= result.value(task, "c_index", "cox") + 1e-12


def test_noise_embeddings_give_chance_level(cohort):
    emb, tables, _ = cohort
    rng = np.random.default_rng(5)
    noise = {s: rng.normal(size=v.shape) for s, v in emb.items()}
    cfg = dataclasses.replace(CFG, probes=["cox"])
    res = evaluate_embeddings(noise, tables, ["ph_12m"], cfg, progress=False)
    r = next(r for r in res.rows if r["metric"] == "c_index")
    assert r["ci_low"] < 0.5 + 0.02 and r["ci_high"] > 0.5 - 0.02 and abs(r["value"] - 0.5) < 0.1


def test_oracle_scores_true_log_hazards(cohort, result):
    _, tables, truth = cohort
    res = evaluate_risk_scores(truth, tables, list(TASKS), CFG)
    assert {r["probe"] for r in res.rows} == {"oracle"}
    for task in TASKS:
        # the truth is at least as good as a probe fit on 150 rows, up to noise
        assert res.value(task, "c_index") > result.value(task, "c_index", "cox") - 0.03
        assert res.value(task, "auroc") > 0.7
    with pytest.raises(InputError, match="shape"):
        evaluate_risk_scores(truth["held_out"][:, :1], tables, list(TASKS), CFG)


def test_json_round_trip_and_arrow(result):
    back = EvalResult.from_json(result.to_json())
    assert back.rows == result.rows and back.name == "enc" and back.config["bootstrap"] == 40
    tab = result.to_arrow()
    assert tab.num_rows == len(result.rows) and "model" in tab.column_names
    with pytest.raises(InputError, match="format_version"):
        EvalResult.from_json('{"format_version": 99}')


def test_one_class_task_is_reported_not_dropped(cohort):
    emb, tables, _ = cohort
    t = {s: dataclasses.replace(tb, label=np.where(tb.label >= 0, 0, -1).astype(np.int8)) for s, tb in tables.items()}
    res = evaluate_embeddings(emb, t, ["ph_12m"], dataclasses.replace(CFG, probes=["logistic"]), progress=False)
    assert [r["value"] for r in res.rows] == [None, None]
    assert "one class" in res.rows[0]["note"]


def test_include_mask_removes_rows_from_survival_metrics(cohort):
    _, tables, truth = cohort
    ho = tables["held_out"]
    inc = np.ones_like(ho.event)
    inc[::2, 1] = False
    masked = dataclasses.replace(ho, include=inc)
    res = evaluate_risk_scores(truth["held_out"], masked, ["ph_12m"], dataclasses.replace(CFG, bootstrap=0))
    row = next(r for r in res.rows if r["metric"] == "c_index")
    assert row["n"] == int(inc[:, 1].sum()) and row["ci_low"] is None


def test_bad_inputs_raise_clear_errors(cohort):
    emb, tables, _ = cohort
    bad = dict(emb, tuning=emb["tuning"].copy())
    bad["tuning"][3, 0] = np.nan
    with pytest.raises(InputError, match=r"tuning.*rows \[3\]"):
        evaluate_embeddings(bad, tables, list(TASKS), CFG, progress=False)
    with pytest.raises(InputError, match="split 'held_out' missing"):
        evaluate_embeddings({k: v for k, v in emb.items() if k != "held_out"}, tables, list(TASKS), CFG)
    with pytest.raises(InputError, match="shape"):
        evaluate_embeddings(dict(emb, train=emb["train"][:-1]), tables, list(TASKS), CFG)
    with pytest.raises(InputError, match="unknown task 'nope'"):
        evaluate_embeddings(emb, tables, ["nope"], CFG)
    tb = tables["train"]
    with pytest.raises(InputError, match="label must be -1, 0 or 1"):
        dataclasses.replace(tb, label=np.full_like(tb.label, 2))
    with pytest.raises(InputError, match="negative times"):
        dataclasses.replace(tb, time=-tb.time)
    with pytest.raises(ConfigError, match="probes"):
        EvalConfig(probes=["svm"])


def test_subject_bootstrap_keeps_subjects_together():
    subj = np.array([7, 7, 3, 9, 9, 9])
    w = subject_weights(subj, 200, seed=0)
    assert torch.equal(w[:, 0], w[:, 1]) and torch.equal(w[:, 3], w[:, 5])
    # each replicate draws 3 subjects
    per_subject = w[:, [0, 2, 3]]
    assert torch.all(per_subject.sum(1) == 3)
    assert torch.equal(w, subject_weights(subj, 200, seed=0))
    lo, hi, n = percentile_ci(np.r_[np.arange(101.0), np.nan], 0.9)
    assert np.allclose([lo, hi], [5.0, 95.0]) and n == 101
