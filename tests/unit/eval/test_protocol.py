"""The protocol end to end on a tiny cohort: probes learn, CIs cover, errors are clear."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tte_scale.config import ConfigError
from tte_scale.errors import InputError
from tte_scale.eval import BenchTable, EvalConfig, EvalResult, evaluate_embeddings, evaluate_risk_scores, harrell_cindex
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
        for probe, metrics in (
            ("logistic", ("auroc", "auprc", "cal_slope", "cal_intercept", "ece")),
            ("cox", ("c_index", "c_index_uno", "c_index_td", "km_cal_error", "ibs")),
            ("pem", ("c_index", "c_index_uno", "c_index_td", "km_cal_error", "ibs")),
        ):
            assert {(task, probe, m) for m in metrics} <= got
    for r in result.rows:
        if r["metric"] == "km_cal_error" and r["task"] not in CFG.horizons_days:
            assert r["value"] is None and r["note"] == "no horizon"
            continue
        assert r["value"] is not None, r
        # an absolute deviation's bootstrap is biased upwards: no CI for those
        if r["metric"] in ("ece", "km_cal_error"):
            assert r["ci_low"] is None and r["n_boot"] == 0
        else:
            assert r["ci_low"] <= r["value"] <= r["ci_high"], r
        assert r["l2"] in CFG.l2_grid
        if r["metric"] in ("auroc", "c_index", "c_index_td"):
            assert r["value"] > 0.65, r  # the embeddings carry the hazard
        if r["metric"] == "ibs":
            assert 0.0 < r["value"] < 0.25
        if r["metric"] in ("ece", "km_cal_error"):
            assert 0.0 < r["value"] < 0.15, r  # probes fit by likelihood are roughly calibrated
        if r["metric"] == "cal_slope":
            assert r["value"] > 0.5, r  # right direction (a strong l2 shrinks the logits: slope > 1)
    assert result.calibration["mortality_12m/logistic"]["kind"] == "binary"
    assert result.calibration["mortality_12m/cox"]["horizon"] == 365.0
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
    assert back.calibration == result.calibration
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


HORIZONS = {"death_1m": 30.0, "death_6m": 180.0, "death_12m": 365.0, "ph_12m": 365.0}


def _three_horizons(tb: BenchTable) -> BenchTable:
    """The conftest outcome 0 at three horizons (one code set, like mortality 1m/6m/12m), plus ph."""
    cols = [0, 0, 0, 1]
    time, event = tb.time[:, cols], tb.event[:, cols]
    hz = np.array(list(HORIZONS.values()))[None, :]
    label = np.where(event & (time <= hz), 1, np.where(time >= hz, 0, -1)).astype(np.int8)
    return BenchTable(tb.subject_id, label, time, event, tuple(HORIZONS))


def test_c_index_at_each_horizon_and_the_whole_follow_up_once_per_outcome(cohort):
    """Issue 20 item 7: the three horizons of one outcome get three C-indices (Harrell's and
    Uno's at each horizon: sksurv's concordance_index_ipcw is the reference), the probe is fit
    once for the outcome, and the horizon-free C is reported once, on the outcome's first task."""
    from sksurv.metrics import concordance_index_ipcw
    from sksurv.util import Surv

    emb, tables, _ = cohort
    t3 = {s: _three_horizons(tb) for s, tb in tables.items()}
    cfg = dataclasses.replace(CFG, probes=["cox", "pem"], horizons_days=HORIZONS, bootstrap=20)
    res = evaluate_embeddings(emb, t3, list(HORIZONS), cfg, progress=False)
    deaths = ["death_1m", "death_6m", "death_12m"]
    harrell = [res.value(t, "c_index", "cox") for t in deaths]
    assert len(set(harrell)) == 3, harrell
    held = res.km["death_1m"]  # the Cox probe's held-out risks, shared by the three tasks
    tr = t3["train"]
    y_tr = Surv.from_arrays(tr.event[:, 0], tr.time[:, 0])
    y_ho = Surv.from_arrays(held["event"], held["time"])
    all_events = Surv.from_arrays(np.ones_like(tr.event[:, 0]), tr.time[:, 0])
    for task in deaths:
        tau = HORIZONS[task]
        ref_h = concordance_index_ipcw(all_events, y_ho, held["risk"], tau=tau)[0]
        assert abs(res.value(task, "c_index", "cox") - ref_h) < 1e-9
        ref_u = concordance_index_ipcw(y_tr, y_ho, held["risk"], tau=tau)[0]
        assert abs(res.value(task, "c_index_uno", "cox") - ref_u) < 1e-9
    full = [(r["task"], r["probe"]) for r in res.rows if r["metric"] == "c_index_full"]
    assert sorted(full) == [("death_1m", "cox"), ("ph_12m", "cox")]
    assert (
        abs(
            res.value("death_1m", "c_index_full", "cox")
            - harrell_cindex(held["time"], held["event"], held["risk"]).item()
        )
        < 1e-12
    )
    # one fit per outcome: the same l2 for its three tasks
    assert len({r["l2"] for r in res.rows if r["task"] in deaths and r["probe"] == "cox"}) == 1
    # the oracle's rows follow the same rules
    risk = np.stack([tables["held_out"].time[:, 0] * 0 + cohort[2]["held_out"][:, c] for c in (0, 0, 0, 1)], 1)
    orc = evaluate_risk_scores(risk, t3, list(HORIZONS), cfg)
    assert len({orc.value(t, "c_index") for t in deaths}) == 3
    assert sorted(r["task"] for r in orc.rows if r["metric"] == "c_index_full") == ["death_1m", "ph_12m"]


def test_deepsurv_probe_rows_like_the_cox_probe(cohort):
    """The MLP probe (issue 20 item 4) reports the Cox probe's metrics, l2 chosen on tuning."""
    emb, tables, _ = cohort
    cfg = dataclasses.replace(CFG, probes=["deepsurv"], mlp_hidden=[32, 32], mlp_max_epochs=30, bootstrap=10)
    res = evaluate_embeddings(emb, tables, list(TASKS), cfg, progress=False)
    got = {(r["task"], r["metric"]) for r in res.rows}
    for task in TASKS:
        assert {(task, m) for m in ("c_index", "c_index_uno", "c_index_full", "c_index_td", "ibs")} <= got
        assert res.value(task, "c_index", "deepsurv") > 0.65  # the embeddings carry the hazard
    assert all(r["l2"] in cfg.l2_grid and r["probe"] == "deepsurv" for r in res.rows)


def test_oracle_skips_tasks_the_truth_does_not_cover(tmp_path):
    """A task set beyond the synthetic outcome model (configs/tasks/paper_tte.yaml) has no true
    log-hazard: the oracle leaves those tasks out; a covered task missing a scan is an error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tte_scale.eval.run import _oracle_risk

    (tmp_path / "truth").mkdir()
    pq.write_table(
        pa.table({"scan_id": ["a", "b"], "task": ["pe", "pe"], "log_hazard": [0.5, -1.0]}),
        tmp_path / "truth" / "bench.parquet",
    )
    risk, covered = _oracle_risk(tmp_path / "truth", ["pe", "edema"], np.array(["b", "a"], dtype=object))
    assert covered == ["pe"] and risk[:, 0].tolist() == [-1.0, 0.5]
    with pytest.raises(InputError, match="no true log-hazard"):
        _oracle_risk(tmp_path / "truth", ["pe"], np.array(["a", "c"], dtype=object))
