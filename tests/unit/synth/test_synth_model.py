"""The latent model, the vocabulary and one subject's timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tte_scale.synth.config import SynthConfig
from tte_scale.synth.ehr import SCAN_PROCEDURE_CODE, simulate_subject
from tte_scale.synth.model import BENCH_TASKS, FACTORS, covariates, log_hazards
from tte_scale.synth.truth import bench_rows
from tte_scale.synth.vocab import build_vocab, codes_table

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def vocab():
    return build_vocab(0, 200, 0.3)


def test_bench_tasks_match_the_task_config():
    tasks = yaml.safe_load((REPO / "configs" / "tasks" / "inspect.yaml").read_text())["tasks"]
    assert [t["name"] for t in tasks] == list(BENCH_TASKS)
    for t in tasks:
        _, codes, horizon, exclude_prior = BENCH_TASKS[t["name"]]
        assert list(codes) == t["codes"] and horizon == t["horizon_days"] and exclude_prior == t["exclude_prior"]


def test_codes_table_has_a_real_hierarchy_and_meds_schema(vocab):
    meds = pytest.importorskip("meds")
    table = codes_table(vocab)
    meds.CodeMetadataSchema.validate(table)
    parents = dict(zip(table["code"].to_pylist(), table["parent_codes"].to_pylist()))
    assert parents["ICD10CM/I26.99"] == ["ICD10CM/I26"]
    assert parents["ICD10CM/I26"] == ["ICD10CM/I26-I28"]
    assert parents["ICD10CM/I26-I28"] == ["ICD10CM/I00-I99"]
    assert all(p in parents for ps in parents.values() for p in ps), "every parent is itself listed"
    assert len(set(vocab.codes)) == len(vocab.codes)
    noise = np.all(vocab.beta == 0, axis=1)
    assert 0.15 < noise[24:].mean() < 0.45, "about noise_code_frac of the generic codes depend on nothing"


def test_subject_is_deterministic_and_well_formed(vocab):
    cfg = SynthConfig(subjects=10, seed=3)
    for i in range(10):
        a, b = simulate_subject(i, cfg, vocab), simulate_subject(i, cfg, vocab)
        assert np.array_equal(a.time_E, b.time_E, equal_nan=True) and list(a.code_E) == list(b.code_E)
        codes = list(a.code_E)
        assert codes.count("MEDS_DEATH") <= 1 and codes.count("MEDS_BIRTH") == 1
        static = np.isnan(a.time_E)
        assert [c for c, s in zip(codes, static) if s] in (["Gender/F"], ["Gender/M"])
        if "MEDS_DEATH" in codes:
            assert a.time_E[codes.index("MEDS_DEATH")] == np.nanmax(a.time_E), "the record ends at death"
        for t0 in a.scan_days:  # history before and a record after every prediction time
            assert np.nanmin(a.time_E[~static & (a.code_E != "MEDS_BIRTH")]) < t0 < np.nanmax(a.time_E)
        assert codes.count(SCAN_PROCEDURE_CODE) == len(a.scan_days)
        assert ((0 <= a.x_SF) & (a.x_SF <= 1)).all()
    other = simulate_subject(0, SynthConfig(subjects=10, seed=4), vocab)
    assert not np.array_equal(other.time_E[:5], simulate_subject(0, cfg, vocab).time_E[:5], equal_nan=True)


def test_hazards_increase_with_disease():
    healthy = covariates(np.zeros((1, len(FACTORS))), [0.0], False, 0.0)
    sick = covariates(np.ones((1, len(FACTORS))), [0.0], False, 0.0)
    for outcome in ("death", "ip", "ph", "pe"):
        assert log_hazards(sick, outcome)[0] > log_hazards(healthy, outcome)[0] + 1.0


def test_truth_labels_follow_the_task_rules(vocab):
    rec = simulate_subject(1, SynthConfig(subjects=2, seed=0), vocab)
    rows = bench_rows(rec)
    assert len(rows["task"]) == len(BENCH_TASKS) * len(rec.scan_days)
    for task, lab, time, event, exc in zip(rows["task"], rows["label"], rows["time"], rows["event"], rows["excluded"]):
        horizon = BENCH_TASKS[task][2]
        assert time > 0
        if exc is None:
            assert lab == (event and time <= horizon)
        else:
            assert lab is None


def test_oracle_c_index_is_the_eval_c_index():
    """The synth summary's oracle C-index is eval.concordance's: a subject censored at another's
    event time outlived it, so that pair counts (the synth copy of the C-index never counted it)."""
    import pyarrow as pa

    from tte_scale.synth.generate import _rates

    lifelines = pytest.importorskip("lifelines.utils")
    t, e, risk = [1.0, 1.0, 2.0, 3.0], [True, False, True, False], [2.0, 3.0, 1.0, 0.0]
    task = next(iter(BENCH_TASKS))
    bench = pa.table(
        {"task": [task] * 4, "label": [True, None, False, False], "time": t, "event": e, "log_hazard": risk}
    )
    _, cidx = _rates(bench)
    assert cidx[task] == pytest.approx(0.75) == lifelines.concordance_index(t, -np.array(risk), e)


def test_paper_tte_findings_recur_after_the_scan_with_their_factor(vocab):
    """configs/tasks/paper_tte.yaml (issue 20 item 2): its codes are the report findings, also
    recorded at follow-up visits, more often with the factor they show."""
    from tte_scale.synth.vocab import FINDING_CODES

    tasks = yaml.safe_load((REPO / "configs" / "tasks" / "paper_tte.yaml").read_text())["tasks"]
    codes = [c for t in tasks for c in t["codes"]]
    assert len(codes) == 5 and set(codes) <= set(FINDING_CODES) and set(codes) <= set(vocab.codes)
    table = codes_table(vocab)
    parents = dict(zip(table["code"].to_pylist(), table["parent_codes"].to_pylist()))
    assert parents["SNOMED/8186001"] == [FINDING_CODES["SNOMED/8186001"][1]]  # the SNOMED parent kept
    cfg = SynthConfig(subjects=300, seed=5)
    later, factor = [], []
    for i in range(300):
        rec = simulate_subject(i, cfg, vocab)
        t0 = rec.scan_days[0]
        hit = (rec.code_E == "SNOMED/8186001") & (rec.time_E > t0 + 1) & (rec.time_E < t0 + 366)
        later.append(bool(hit.any()))
        factor.append(rec.x_SF[0, FACTORS.index("cardiomegaly")])
    later, factor = np.array(later), np.array(factor)
    assert 0.05 < later.mean() < 0.6  # an outcome, neither rare nor certain
    assert later[factor > 0.3].mean() > 2 * later[factor == 0].mean()


def test_generic_zipf_exponent_fattens_the_code_tail():
    """`generic_zipf_exponent` (issue 17): a smaller exponent gives a subject more distinct codes
    (what lets a few dozen subjects hold K = 8,192 tasks); the default keeps the old vocabulary."""
    from dataclasses import replace

    cfg = SynthConfig(subjects=4, seed=1, generic_codes=5000)
    assert cfg.generic_zipf_exponent == 0.9
    assert np.array_equal(build_vocab(1, 5000, 0.3).alpha, build_vocab(1, 5000, 0.3, 0.9).alpha)
    fat = replace(cfg, generic_zipf_exponent=0.5)
    distinct = []
    for c in (cfg, fat):
        v = build_vocab(c.seed, c.generic_codes, c.noise_code_frac, c.generic_zipf_exponent)
        codes = set()
        for i in range(4):
            codes |= set(simulate_subject(i, c, v).code_E.tolist())
        distinct.append(len(codes))
    assert distinct[1] > 3 * distinct[0], distinct
    with pytest.raises(Exception, match="generic_zipf_exponent"):
        SynthConfig(generic_zipf_exponent=-1.0)
