"""Configs of the labels stage: ``LabelsConfig`` (the run) and ``BenchTask``/``TaskSet``.

``TaskSet`` is the schema of ``configs/tasks/*.yaml`` (the downstream benchmark tasks); mapping
another cohort means editing the YAML's code lists, not this code.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tte_scale.config import ConfigError, check, load_config, resolve_config_path

__all__ = ["BenchTask", "TaskSet", "LabelsConfig", "load_task_set", "resolve_repo_path"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(kw_only=True, slots=True)
class BenchTask:
    """One downstream benchmark task: a code set and a horizon."""

    name: str
    """Identifier (letters, digits, underscore); the task's column in the bench arrays."""
    description: str = ""
    """Human-readable description (reports only)."""
    codes: list[str]
    """MEDS codes whose first occurrence after the prediction time is the event (any of them)."""
    horizon_days: float
    """Binary label = event within (0, horizon_days] after the prediction time."""
    exclude_prior: bool = False
    """Exclude scans (label null, reason ``prior_event``) whose subject had a code of the set at
    or before the prediction time (static rows with a null time count as prior)."""
    start_days: float = 0.0
    """The event is the first occurrence more than this many days after the prediction time
    (the seed paper's TTE finding tasks use 1 day, so that codes of the scan's own report and
    encounter do not count); times stay measured from the prediction time."""

    def __post_init__(self) -> None:
        check(bool(_NAME.match(self.name)), "name", f"{self.name!r} must match {_NAME.pattern}")
        check(len(self.codes) > 0, "codes", f"task {self.name!r}: needs at least one code")
        check(
            all(isinstance(c, str) and c for c in self.codes),
            "codes",
            f"task {self.name!r}: codes must be non-empty strings",
        )
        check(len(set(self.codes)) == len(self.codes), "codes", f"task {self.name!r}: duplicate codes {self.codes}")
        check(self.horizon_days > 0, "horizon_days", f"task {self.name!r}: must be > 0, got {self.horizon_days}")
        check(
            0 <= self.start_days < self.horizon_days,
            "start_days",
            f"task {self.name!r}: must be in [0, horizon_days), got {self.start_days}",
        )


@dataclass(kw_only=True, slots=True)
class TaskSet:
    """The benchmark tasks of one cohort, in column order."""

    tasks: list[BenchTask]
    """The tasks; their order is the column order of the bench arrays."""

    def __post_init__(self) -> None:
        check(len(self.tasks) > 0, "tasks", "needs at least one task")
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, "tasks", f"duplicate task names {dup}")

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]


@dataclass(kw_only=True, slots=True)
class LabelsConfig:
    """`tte-scale labels`: MEDS events + scans -> task vocabulary, bins, TTE and bench labels."""

    num_tasks: int = 8192
    """K: number of pretraining tasks kept (fewer if fewer codes pass ``min_count``)."""
    num_bins: int = 8
    """B: number of piecewise-exponential time bins (fewer if the train event times have
    fewer distinct hour-rounded quantiles; reported)."""
    min_count: int = 1
    """A code becomes a task only if it occurs after at least this many train scans."""
    ranking: Literal["frequency", "entropy"] = "entropy"
    """Task ranking: train event count, or Bernoulli entropy of the train event rate (paper)."""
    ontology: bool = True
    """Count an occurrence of a code also for its ancestors (metadata/codes.parquet parent_codes)."""
    unknown_splits: Literal["error", "exclude"] = "error"
    """A subject whose split (metadata/subject_splits.parquet) is not train, tuning or held_out:
    an error naming the names and counts (a `Train` or `test` would silently leave those scans
    out of every stage), or ``exclude``: their scans are excluded, reason ``unknown_split``."""
    birth_code: str = "MEDS_BIRTH"
    """Code of the birth event (MEDS). A scan whose prediction time is before the subject's
    first birth event is excluded, reason ``prediction_time_before_birth`` (its label times
    would span the subject's life and move the last bin). "" turns the check off."""
    max_event_time: str | None = None
    """Latest plausible event time (ISO date or date-time). A subject with a timed event after it
    (a date in 2200 moves the end of record, hence every censoring time) has its scans excluded,
    reason ``event_after_max_time``. None: the end of the day of the run (no record can be
    dated in the future). The value used is in summary.json."""
    bench_tasks: str = "configs/tasks/inspect.yaml"
    """Benchmark task YAML (a TaskSet); relative paths resolve from the current directory,
    then from the repository root."""
    bench_labels: str | None = None
    """Precomputed benchmark labels (``tte-scale convert inspect``'s bench_labels.parquet,
    ``tte_scale.ehr.precomputed``): the tasks it holds take their labels (and time/event where
    given) from it instead of the codes: a release whose EHR has the outcome codes scrubbed
    (INSPECT) would otherwise get all-negative labels without any error."""
    chunk_rows: int = 1024
    """Rows per Zarr chunk of the [N, K] arrays (a chunk spans all K columns)."""
    bin_sample_events: int = 1_000_000
    """The bins are fitted on the train event times of a fixed, hashed subset of the train
    subjects (every m-th by ``core.subject_sample``) holding about this many; all of them when
    the train split has fewer than twice as many. 0: always all. Bounds the cost of fitting the
    bins (a scan of the train label cells) on large cohorts."""
    block_cells: int = 32_000_000
    """Memory bound of the dense per-block work arrays (rows x columns cells; 5 bytes each for
    the labels block, float32 time + bool event; 2 bytes each for the vocabulary counts)."""

    def __post_init__(self) -> None:
        check(self.num_tasks >= 1, "num_tasks", f"must be >= 1, got {self.num_tasks}")
        check(1 <= self.num_bins <= 1024, "num_bins", f"must be in [1, 1024], got {self.num_bins}")
        check(self.min_count >= 1, "min_count", f"must be >= 1, got {self.min_count}")
        check(self.chunk_rows >= 1, "chunk_rows", f"must be >= 1, got {self.chunk_rows}")
        check(self.bin_sample_events >= 0, "bin_sample_events", f"must be >= 0, got {self.bin_sample_events}")
        check(self.block_cells >= 1, "block_cells", f"must be >= 1, got {self.block_cells}")
        if self.max_event_time is not None:
            check(_parse_time(self.max_event_time) is not None, "max_event_time", "expected an ISO date or date-time")

    def max_event_us(self, today: datetime.date | None = None) -> int:
        """``max_event_time`` in microseconds since the epoch (see the field)."""
        if self.max_event_time is not None:
            return int(_parse_time(self.max_event_time).astype("datetime64[us]").astype(np.int64))
        day = np.datetime64(today or datetime.date.today(), "us") + np.timedelta64(1, "D")
        return int(day.astype(np.int64)) - 1


def _parse_time(text) -> np.datetime64 | None:
    try:
        t = np.datetime64(str(text), "us")
    except ValueError:
        return None
    return None if np.isnat(t) else t


def resolve_repo_path(path: str | Path) -> Path:
    """A config path as given (cwd) if it exists, else the packaged copy (``configs/...``)."""
    p = resolve_config_path(path)
    if not p.exists():
        raise ConfigError(f"bench_tasks: file {p} not found (looked in {Path.cwd()} and the installed configs)")
    return p


def load_task_set(path: str | Path) -> TaskSet:
    """Read and validate a benchmark task YAML (``configs/tasks/*.yaml``)."""
    p = resolve_repo_path(path)
    try:
        return load_config(TaskSet, p)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
