"""Benchmark task YAML (TaskSet/BenchTask) and LabelsConfig validation."""

from __future__ import annotations

import pytest

from tte_scale.config import ConfigError, from_dict
from tte_scale.ehr.config import LabelsConfig, TaskSet, load_task_set


def test_inspect_yaml_loads_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # resolved relative to the repo root when not in cwd
    ts = load_task_set("configs/tasks/inspect.yaml")
    assert len(ts.tasks) == 8 and ts.names[0] == "pe"
    ph = ts.tasks[1]
    assert ph.exclude_prior and ph.horizon_days == 365 and "SNOMED/70995007" in ph.codes


@pytest.mark.parametrize(
    "tasks, msg",
    [
        ([{"name": "a", "codes": [], "horizon_days": 1}], "codes"),
        ([{"name": "a", "codes": ["X"], "horizon_days": 0}], "horizon_days"),
        ([{"name": "a b", "codes": ["X"], "horizon_days": 1}], "name"),
        ([{"name": "a", "codes": ["X"], "horizon_days": 1}] * 2, "duplicate task names"),
        ([{"name": "a", "codes": ["X"], "horizon": 1}], "unknown key"),
        ([{"name": "a", "codes": ["X", "X"], "horizon_days": 1}], "duplicate codes"),
        # required keys missing: one line naming them (was a TypeError traceback)
        ([{"name": "a", "codes": ["X"]}], r"^tasks\[0\]\.horizon_days: required key missing$"),
        ([{"horizon_days": 1}], r"^tasks\[0\]\.name, tasks\[0\]\.codes: required keys missing$"),
    ],
)
def test_bad_tasks(tasks, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(TaskSet, {"tasks": tasks})


def test_a_file_without_tasks_names_the_file_and_key(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: x\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: name: unknown key"):
        load_task_set(p)
    p.write_text("{}\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: tasks: required key missing"):
        load_task_set(p)


def test_missing_task_file_is_clear():
    with pytest.raises(ConfigError, match="not found"):
        load_task_set("configs/tasks/nope.yaml")


def test_bad_yaml_names_file(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("tasks:\n  - name: x\n    codes: [A]\n    horizon_days: -3\n")
    with pytest.raises(ConfigError, match=r"t\.yaml.*horizon_days"):
        load_task_set(p)


@pytest.mark.parametrize("key, value", [("num_tasks", 0), ("num_bins", 0), ("min_count", 0), ("ranking", "random")])
def test_labels_config_validation(key, value):
    with pytest.raises(ConfigError, match=key):
        from_dict(LabelsConfig, {key: value})
