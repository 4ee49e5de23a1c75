"""`tte-scale eval --per-task NAME=DIR` (issue 20 item 6): per-task fine-tuned models, one export
per task, each task probed on its own export's embeddings, beside joint models."""

from __future__ import annotations

import json
import shutil

import pytest
from support.eval_inputs import TASKS, eval_argv, write_encoder, write_eval_inputs

from tte_scale.cli import main


def _finetuned(path, task, seed):
    write_encoder(path, seed=seed)
    meta = json.loads((path / "config.json").read_text())
    meta["pretraining"] = {"objective": "supervised", "supervised_tasks": [task]}
    (path / "config.json").write_text(json.dumps(meta))
    return path


def test_each_task_is_probed_on_its_own_export(tmp_path):
    write_eval_inputs(tmp_path)
    ft = tmp_path / "ft"
    for seed, task in enumerate(TASKS, start=1):  # a run folder per task, as `tte-scale train` writes it
        _finetuned(ft / task / "encoder", task, seed)
    # The reference: each per-task export evaluated as an ordinary (joint) baseline.
    argv = eval_argv(
        tmp_path,
        "--per-task",
        f"per_task={ft}",
        *[a for i, t in enumerate(TASKS) for a in ("--baseline", f"export{i}={ft / t / 'encoder'}")],
    )
    assert main(argv) == 0
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())
    by = {(m, r["task"], r["probe"], r["metric"]): r["value"] for m, res in rows.items() for r in res["rows"]}
    for i, task in enumerate(TASKS):
        for probe, metric in (("logistic", "auroc"), ("cox", "c_index")):
            assert by[("per_task", task, probe, metric)] == by[(f"export{i}", task, probe, metric)], (task, metric)
    keys = [k[1:] for k in by if k[0] == "per_task" and k[1] == TASKS[0]]
    assert all(by[("per_task", *k)] == by[("export0", *k)] for k in keys)  # every row, not only the two above
    assert any(by[("per_task", *k)] != by[("export1", *k)] for k in keys)  # not the other task's export
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert "per_task/logistic/auroc" in summary["mean_over_tasks"]


def test_per_task_refuses_an_export_not_tuned_on_that_task_alone(tmp_path, capsys):
    write_eval_inputs(tmp_path)
    ft = tmp_path / "ft"
    _finetuned(ft / TASKS[0] / "encoder", TASKS[0], 1)
    _finetuned(ft / TASKS[1] / "encoder", TASKS[0], 2)  # the first task's run, copied under the second
    assert main(eval_argv(tmp_path, "--per-task", f"per_task={ft}")) == 2
    err = capsys.readouterr().err
    assert f"pretraining.supervised_tasks is ['{TASKS[0]}'], not ['{TASKS[1]}']" in err
    shutil.rmtree(ft / TASKS[1])
    assert main(eval_argv(tmp_path, "--per-task", f"per_task={ft}", out="eval2")) == 2
    assert f"no export for task '{TASKS[1]}'" in capsys.readouterr().err


def test_per_task_name_must_be_new(tmp_path):
    from tte_scale.config import ConfigError
    from tte_scale.eval.run import EvalRun

    with pytest.raises(ConfigError, match="per_task"):
        EvalRun(checkpoint="c", shards="s", labels="l", out="o", per_task=[("tte", "ft")])
