"""The ``--map`` YAML of `tte-scale convert cohort/inspect`: which file and column hold what.

A released cohort has a studies table (one row per imaging study: study id, person, procedure
time, image id), a split table and a label table, joined on the study id, plus an image folder.
The map names the files (globs relative to the release folder: releases date their files), the
columns, the values that mean true / false / censored and train / tuning / held_out, and how an
image file name is built from a study's values. ``configs/convert/inspect.yaml`` is the map of the
INSPECT release and the default; a cohort laid out differently needs only its own map.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tte_scale.config import ConfigError, check, from_dict, read_yaml
from tte_scale.formats.meds import SPLITS

__all__ = [
    "CohortMap",
    "StudiesTable",
    "SplitsTable",
    "LabelsTable",
    "TaskColumns",
    "ImagesSpec",
    "load_map",
    "DEFAULT_MAP",
    "TIME_UNITS",
]

DEFAULT_MAP = "configs/convert/inspect.yaml"
TIME_UNITS = {"seconds": 1 / 86400, "minutes": 1 / 1440, "hours": 1 / 24, "days": 1.0}
"""Days per unit of a label file's time-to-event column."""


@dataclass(kw_only=True, slots=True)
class StudiesTable:
    """One row per imaging study."""

    file: str
    """Glob of the file, relative to the release folder (exactly one match), e.g. ``study_mapping_*.tsv``."""
    scan: str
    """Column of the study id: the key of all three tables, and ``scan_id`` in scans.parquet."""
    subject: str
    """Column of the person id (an integer): ``subject_id``, the MEDS subject."""
    time: str
    """Column of the procedure date-time: ``prediction_time`` (ISO, timezone-naive)."""
    image: str
    """Column the image file name is built from (``images.path`` uses it as ``{image}``)."""
    delimiter: str | None = None
    """Field separator; default by extension (``.tsv``/``.txt``: tab, else comma)."""


@dataclass(kw_only=True, slots=True)
class SplitsTable:
    """The release's train/validation/test assignment of each study."""

    file: str
    """Glob of the file, relative to the release folder (may be the studies file)."""
    scan: str
    """Column of the study id."""
    split: str
    """Column of the split name."""
    values: dict[str, str]
    """Release split name -> ``train`` / ``tuning`` / ``held_out``; any other value is an error."""
    delimiter: str | None = None
    """Field separator; default by extension."""

    def __post_init__(self) -> None:
        check(bool(self.values), "values", "needs at least one release split name")
        bad = sorted({v for v in self.values.values() if v not in SPLITS})
        check(not bad, "values", f"{bad} are not split names; map each release split to one of {list(SPLITS)}")
        check("train" in self.values.values(), "values", "no release split maps to 'train'")


@dataclass(kw_only=True, slots=True)
class TaskColumns:
    """The columns of one benchmark task in the label table."""

    label: str
    """Column of the binary label (values in ``labels.true_values`` / ``false_values`` / ``censored_values``)."""
    time: str | None = None
    """Column of the time from the study to the event or to censoring, in ``labels.time_unit``
    (optional: without it `tte-scale labels` keeps the code-derived time and event of the task)."""
    censored: str | None = None
    """Column saying whether ``time`` is a censoring time (values in ``labels.boolean_values``);
    required with ``time``."""

    def __post_init__(self) -> None:
        check((self.time is None) == (self.censored is None), "time", "give 'time' and 'censored' together")


@dataclass(kw_only=True, slots=True)
class LabelsTable:
    """The release's precomputed benchmark labels, one row per study."""

    file: str
    """Glob of the file, relative to the release folder."""
    scan: str
    """Column of the study id."""
    tasks: dict[str, TaskColumns]
    """Benchmark task name (of the ``--bench-tasks`` YAML) -> its columns."""
    true_values: list[str] = field(default_factory=lambda: ["TRUE"])
    """Label values meaning positive (compared exactly: ``True`` is not ``TRUE``)."""
    false_values: list[str] = field(default_factory=lambda: ["FALSE"])
    """Label values meaning negative."""
    censored_values: list[str] = field(default_factory=lambda: ["Censored"])
    """Label values meaning unknown (censored before the horizon): the label is null."""
    time_unit: Literal["seconds", "minutes", "hours", "days"] | None = None
    """Unit of the tasks' ``time`` columns (required when a task has one)."""
    boolean_values: dict[str, bool] = field(
        default_factory=lambda: {"TRUE": True, "FALSE": False, "True": True, "False": False, "1": True, "0": False}
    )
    """Values of the ``censored`` columns."""
    max_inconsistent: float = 0.01
    """Largest fraction of a task's studies whose time/censoring contradicts the binary label at
    the task's horizon (a wrong ``time_unit`` or column contradicts most of them): above it, an error."""
    delimiter: str | None = None
    """Field separator; default by extension."""

    def __post_init__(self) -> None:
        check(bool(self.tasks), "tasks", "needs at least one task")
        groups = {"true_values": self.true_values, "false_values": self.false_values}
        groups["censored_values"] = self.censored_values
        for key, vals in groups.items():
            check(bool(vals) or key == "censored_values", key, "needs at least one value")
        allv = [v for vals in groups.values() for v in vals]
        dup = sorted({v for v in allv if allv.count(v) > 1})
        check(not dup, "true_values", f"values {dup} are listed under more than one meaning")
        timed = [n for n, t in self.tasks.items() if t.time is not None]
        check(not timed or self.time_unit is not None, "time_unit", f"tasks {timed} have a time column: name its unit")
        check(0.0 <= self.max_inconsistent < 1.0, "max_inconsistent", f"must be in [0, 1), got {self.max_inconsistent}")


@dataclass(kw_only=True, slots=True)
class ImagesSpec:
    """Where a study's image is."""

    folder: str
    """Image folder, relative to the release folder (or absolute; ``--images`` overrides it)."""
    path: str
    """File (or DICOM series folder) under ``folder``, built from the study's values:
    ``{image}``, ``{scan}``, ``{subject}``, e.g. ``{image}.nii.gz``."""

    def __post_init__(self) -> None:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(self.path) if f is not None}
        except ValueError as exc:
            raise ConfigError(f"path: {self.path!r}: {exc}") from None
        bad = sorted(names - {"image", "scan", "subject"})
        check(not bad, "path", f"unknown placeholder(s) {bad}; use {{image}}, {{scan}}, {{subject}}")
        check("image" in names or "scan" in names, "path", "must use {image} or {scan}")


@dataclass(kw_only=True, slots=True)
class CohortMap:
    """A released cohort's layout (the ``--map`` YAML)."""

    name: str = "cohort"
    """Name of the cohort (summaries only)."""
    studies: StudiesTable
    """The studies table."""
    splits: SplitsTable
    """The split table."""
    labels: LabelsTable
    """The label table."""
    images: ImagesSpec
    """The image folder and file names."""
    modality: str = "CT"
    """``modality`` written to scans.parquet."""


def load_map(path: str | Path = DEFAULT_MAP, overrides: list[str] | None = None) -> CohortMap:
    """Read a map YAML (``--map``; the packaged INSPECT map by default), with ``--set`` overrides."""
    from tte_scale.config import apply_overrides, resolve_config_path

    p = resolve_config_path(path)
    try:
        return from_dict(CohortMap, apply_overrides(read_yaml(p), overrides))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
