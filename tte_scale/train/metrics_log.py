"""``<out_dir>/metrics.jsonl``: the writer (rank 0 of the trainer) and the reader everyone uses.

One JSON object per line, appended. Every record has ``kind`` (``start``, ``train``, ``eval``,
``memory``, ``data``: the loaders' counters at each checkpoint), ``step`` and ``attempt`` (1 for a new run, +1 each time the run is resumed or
restarted). Each attempt begins with a ``start`` record whose ``step`` is the step it starts from
(0, or the checkpoint's step): the records an earlier attempt wrote after that step are
superseded, since the resumed run does those steps again. :func:`read_metrics` applies that rule
and keeps the last record of each (kind, step); readers never interpret the raw lines themselves
(docs/formats.md, "Run folder").

A SIGKILL can cut the last line of an attempt short: the writer starts its attempt on a new
line, and the reader skips a line that is not JSON only when a ``start`` record follows it (the
attempt it ended was resumed); any other such line is an error naming the file and line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tte_scale.errors import InputError

__all__ = ["METRICS_FILE", "MetricsWriter", "read_metrics"]

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """JSONL + TensorBoard on rank 0; does nothing on other ranks. Adds ``attempt`` to every record."""

    def __init__(self, out_dir: Path, *, enabled: bool, tensorboard: bool, attempt: int) -> None:
        self.enabled = enabled
        self.attempt = attempt
        self._fh = None
        self._tb = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / METRICS_FILE
        self._fh = open(path, "a", buffering=1)
        if path.stat().st_size and not _ends_with_newline(path):
            self._fh.write("\n")  # an earlier attempt was killed mid-line: keep its fragment on its own line
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tb"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {**record, "attempt": self.attempt}
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self._tb is not None and record.get("kind") != "start":
            step = int(record["step"])
            for key, value in record.items():
                if key not in ("step", "attempt") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._tb is not None:
            self._tb.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The records of a metrics file as the run finally stands, in the order they were written.

    A ``start`` record drops every earlier record with a larger step (the resumed attempt repeats
    those steps); of several records with the same ``kind`` and ``step`` the last is kept.
    ``kind`` keeps only that kind (records without ``kind`` count as ``train``). Records without a
    ``step`` are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: metrics file not found")
    kept: dict[tuple[str, int], dict] = {}
    torn: list[int] = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            torn.append(i)
            continue
        if not isinstance(rec, dict) or "step" not in rec:
            continue
        rec_kind, step = rec.get("kind", "train"), int(rec["step"])
        if rec_kind == "start":
            if torn:
                log.warning("%s: skipped line(s) %s cut short by a killed attempt", path, torn)
                torn = []
            for key in [k for k in kept if k[1] > step]:
                del kept[key]
        elif torn:
            raise InputError(f"{path}: line {torn[0]} is not JSON")
        kept.pop((rec_kind, step), None)  # re-insert: the order stays the order of the last writes
        kept[(rec_kind, step)] = rec
    if torn:
        raise InputError(f"{path}: line {torn[0]} is not JSON")
    return [r for (k, _), r in kept.items() if kind is None or k == kind]
