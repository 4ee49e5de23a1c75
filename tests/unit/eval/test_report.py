"""Report folder, comparison table, loss telemetry, long bench table conversion."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg
import numpy as np
import pyarrow as pa
import pytest

from tte_scale.errors import InputError
from tte_scale.eval import bench_tables_from_long, compare_models, format_table, read_loss_curve, write_report
from tte_scale.eval.report import risk_quartile_km

TASKS = ["mortality_12m", "ph_12m"]


@pytest.fixture(scope="module")
def two_models(oracle_and_noisy):
    return oracle_and_noisy(bootstrap=20, noise_sd=2)


def test_compare_models_adds_task_means(two_models):
    rows = compare_models(two_models)
    mean = [r for r in rows if r["task"] == "mean" and r["model"] == "oracle" and r["metric"] == "c_index"]
    assert len(mean) == 1
    vals = [two_models["oracle"].value(t, "c_index") for t in TASKS]
    assert mean[0]["value"] == pytest.approx(np.mean(vals)) and mean[0]["n"] == 2
    text = format_table(rows)
    assert text.splitlines()[0] == "| task | probe | metric | oracle | noisy |"
    assert "| mean | oracle | c_index ↑ |" in text and "[" in text


def test_write_report_writes_table_figures_and_json(tmp_path, two_models):
    curves = {"oracle": [(s, 5.0 / (s + 1)) for s in range(0, 50, 5)], "noisy": [(0, 4.0), (10, 3.0)]}
    path = write_report(tmp_path / "rep", two_models, curves)
    md = path.read_text()
    assert "| task | probe | metric | oracle | noisy |" in md
    for name in ("auroc.png", "c_index.png", "km_oracle.png", "km_noisy.png", "loss.png"):
        img = mpimg.imread(tmp_path / "rep" / "figures" / name)
        assert img.shape[0] > 100 and img.std() > 0  # a real picture, not a blank
        assert f"figures/{name}" in md
    data = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert set(data) == {"oracle", "noisy"} and data["oracle"]["rows"] == two_models["oracle"].rows


def test_risk_quartiles_separate_survival(cohort):
    _, tables, truth = cohort
    tb = tables["held_out"]
    curves = risk_quartile_km(truth["held_out"][:, 1], tb.time[:, 1], tb.event[:, 1])
    assert len(curves) == 4
    # survival at the last common time: the lowest-risk quartile outlives the highest
    t_end = min(c[1][-1] for c in curves)
    s_at = [c[2][np.searchsorted(c[1], t_end, side="right") - 1] for c in curves]
    assert s_at[0] > s_at[3]


def test_read_loss_curve(tmp_path):
    p = tmp_path / "telemetry.jsonl"
    p.write_text('{"step": 0, "loss": 2.5}\n{"step": 1, "lr": 0.1}\n\n{"step": 2, "loss": 2.0}\n')
    assert read_loss_curve(p) == [(0, 2.5), (2, 2.0)]
    p.write_text('{"step": 0, "loss": 2.5}\nnot json\n')
    with pytest.raises(InputError, match="line 2"):
        read_loss_curve(p)
    with pytest.raises(InputError, match="not found"):
        read_loss_curve(tmp_path / "missing.jsonl")


def test_bench_tables_from_long_format():
    long = pa.table(
        {
            "scan_id": ["a", "a", "b", "b", "c", "c"],
            "subject_id": [1, 1, 1, 1, 2, 2],
            "split": ["train", "train", "train", "train", "held_out", "held_out"],
            "task": ["pe", "ph_12m"] * 3,
            "label": [True, None, False, False, None, True],
            "time": [1.0, 400.0, 30.0, 30.0, 5.0, 20.0],
            "event": [True, True, False, False, False, True],
            "excluded": [None, "prior_event", None, "censored_before_horizon", "censored_before_horizon", None],
        }
    )
    t = bench_tables_from_long(long)
    tr = t["train"]
    assert tr.tasks == ("pe", "ph_12m") and list(tr.scan_id) == ["a", "b"]
    assert tr.label.tolist() == [[1, -1], [0, 0]]
    assert tr.include.tolist() == [[True, False], [True, True]]
    assert tr.survival_rows("ph_12m").tolist() == [1]
    assert t["held_out"].label.tolist() == [[-1, 1]]
    with pytest.raises(InputError, match="missing columns"):
        bench_tables_from_long(long.drop(["excluded"]))
    with pytest.raises(InputError, match="not in the table"):
        bench_tables_from_long(long, ["mortality_1m"])


def test_report_says_which_c_index_is_the_headline(tmp_path, two_models):
    md = write_report(tmp_path / "rep", two_models).read_text()
    assert "Headline:" in md and "Harrell's C at each task's horizon" in md
    for metric in ("c_index", "c_index_uno", "c_index_full"):
        assert f"- `{metric}`:" in md  # the legend says what each one is


def test_report_carries_the_label_efficiency_plot(tmp_path, cohort, two_models):
    from tte_scale.eval import EvalConfig
    from tte_scale.eval.efficiency import label_efficiency

    emb, tables, _ = cohort
    cfg = EvalConfig(bootstrap=0, l2_grid=[1.0], max_iter=50, train_subsets=[50], train_subset_resamples=2)
    rows = label_efficiency(emb, tables, TASKS, cfg, name="oracle") + label_efficiency(
        {s: v[:, ::-1] for s, v in emb.items()}, tables, TASKS, cfg, name="noisy"
    )
    md = write_report(tmp_path / "rep", two_models, efficiency=rows).read_text()
    assert "## Label efficiency" in md and "figures/label_efficiency.png" in md
    assert "| oracle | cox | c_index | 132 | 1 |" in md and "| noisy | logistic | auroc |" in md
    img = mpimg.imread(tmp_path / "rep" / "figures" / "label_efficiency.png")
    assert img.shape[0] > 100 and img.std() > 0
    saved = json.loads((tmp_path / "rep" / "label_efficiency.json").read_text())
    assert len(saved["rows"]) == len(rows) and saved["means"]


def test_report_carries_the_calibration_plots(tmp_path, cohort):
    from tte_scale.eval import EvalConfig, evaluate_embeddings

    emb, tables, _ = cohort
    cfg = EvalConfig(bootstrap=10, l2_grid=[1e-2], max_iter=100, horizons_days={t: 365.0 for t in TASKS})
    res = {"enc": evaluate_embeddings(emb, tables, TASKS, cfg, name="enc", progress=False)}
    md = write_report(tmp_path / "rep", res).read_text()
    assert "figures/calibration_enc.png" in md and "| cal_slope →1 |" in md and "| ece ↓ |" in md
    img = mpimg.imread(tmp_path / "rep" / "figures" / "calibration_enc.png")
    assert img.shape[0] > 100 and img.std() > 0
    saved = json.loads((tmp_path / "rep" / "results.json").read_text())["enc"]["calibration"]
    assert saved["ph_12m/cox"]["kind"] == "survival" and len(saved["ph_12m/cox"]["pred"]) == 10
