"""`tte-scale eval` end to end on a tiny complete input (tests/support/eval_inputs.py) with the
paper's protocol options (issue 20): the headline at each task's horizon, the DeepSurv-style probe,
calibration and label efficiency in the report folder."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
from support.eval_inputs import eval_argv, write_eval_inputs

from tte_scale.cli import main


def test_eval_reports_headline_mlp_probe_calibration_and_label_efficiency(tmp_path, capsys):
    write_eval_inputs(tmp_path)
    argv = eval_argv(
        tmp_path,
        "--baseline",
        "random",
        "--probes",
        "logistic,cox,deepsurv",
        "--train-subsets",
        "8,1000",
        "--train-subset-resamples",
        "2",
    )
    assert main(argv) == 0
    out = tmp_path / "eval"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headline"]["pairs"] == ["logistic/auroc", "cox/c_index"]
    assert "Harrell's C at each task's horizon" in summary["headline"]["text"]
    assert {"tte/cox/c_index", "tte/cox/c_index_uno", "tte/cox/c_index_full"} <= set(summary["mean_over_tasks"])
    assert "horizon" in summary["metrics"]["c_index"] and "whole follow-up" in summary["metrics"]["c_index_full"]
    eff = summary["label_efficiency"]
    assert {(r["model"], r["train_size"]) for r in eff} == {(m, n) for m in ("tte", "random_init") for n in (8, 16)}
    assert all(r["resamples"] == (2 if r["train_size"] == 8 else 1) for r in eff if r["mean"] is not None)

    report = (out / "report.md").read_text()
    for text in ("Headline:", "## Label efficiency", "| deepsurv | c_index ↑ |", "| logistic | ece ↓ |"):
        assert text in report, text
    for name in ("label_efficiency.png", "calibration_tte.png", "calibration_random_init.png"):
        img = mpimg.imread(out / "figures" / name)
        assert img.shape[0] > 100 and img.std() > 0
    results = json.loads((out / "results.json").read_text())
    assert results["tte"]["format_version"] == 2 and "bright/logistic" in results["tte"]["calibration"]
    rows = json.loads((out / "label_efficiency.json").read_text())["rows"]
    assert any("requested [1000]" in r["note"] for r in rows)  # a size beyond the split is said so


def test_eval_rejects_an_unknown_probe(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(eval_argv(tmp_path, "--probes", "logistic,svm"))
    assert exc.value.code == 2 and "unknown probe(s) ['svm']" in capsys.readouterr().err
