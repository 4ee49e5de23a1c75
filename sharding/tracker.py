"""What the driver knows in the middle of a build, as one small state object and pure steps.

:class:`Pending` holds, per output shard still to write, the rows not read yet, plus the results
of the rows read so far (their metadata, and the object refs of their encoded bytes and volume
until every shard they belong to has got its writer). :class:`Writers` holds the writers in
flight. The driver (:func:`sharding.job.build`) feeds finished scans in and starts writers for
the shards :meth:`Pending.finish` says are complete; nothing else mutates them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tte_scale.formats.shards import HEADER_MEMBER, STATUS_OK, VOLUME_MEMBER, WDS_DIR, ZARR_DIR, sample_key
from tte_scale.sharding.plan import Plan
from tte_scale.sharding.samples import header_json

EMPTY_RESULT = {"path": None, "samples": 0, "bytes": 0, "sha256": None}
"""Writer result of a shard with no readable scan: no file is written, the record says so."""


@dataclass(slots=True)
class Pending:
    """Output shards still to write (kind -> shard -> rows not read yet) and the rows' results."""

    plan: Plan
    rows_left: dict[str, dict[int, set[int]]]
    metas: dict[int, dict] = field(default_factory=dict)
    refs: dict[int, tuple] = field(default_factory=dict)  # row -> (encoded bytes, volume) refs

    @classmethod
    def of(cls, plan: Plan, todo_wds: list[int], todo_zarr: list[int]) -> Pending:
        """The shards to write: WebDataset shards ``todo_wds`` and Zarr shards ``todo_zarr``."""
        return cls(
            plan,
            {
                WDS_DIR: {s: set(plan.wds_shards[s]) for s in todo_wds},
                ZARR_DIR: {z: set(plan.zarr_shards[z]) for z in todo_zarr},
            },
        )

    def rows_to_read(self) -> list[int]:
        return sorted(set().union(*(rows for shards in self.rows_left.values() for rows in shards.values())))

    def shards_of(self, row: int) -> tuple[tuple[str, int], tuple[str, int]]:
        it = self.plan.items[row]
        return (WDS_DIR, it.wds_shard), (ZARR_DIR, it.zarr_shard)

    def finish(self, meta: dict, data, volume) -> list[tuple[str, int]]:
        """Record a read scan; return the output shards whose rows are now all read."""
        row = meta["row"]
        self.metas[row] = meta
        self.refs[row] = (data, volume)
        complete = []
        for kind, shard in self.shards_of(row):
            left = self.rows_left[kind].get(shard)
            if left is None:  # already complete from an earlier run, or not built
                continue
            left.discard(row)
            if not left:
                del self.rows_left[kind][shard]
                complete.append((kind, shard))
        return complete

    def release(self, shards: list[tuple[str, int]]) -> None:
        """Drop the refs of the rows whose shards all have their writers now (the writers hold the
        refs). Called once the ``shards`` just completed all have writers; only their rows can
        have become free."""
        for kind, shard in shards:
            for row in self.rows(kind, shard):
                if all(s not in self.rows_left[k] for k, s in self.shards_of(row)):
                    self.refs.pop(row, None)

    def rows(self, kind: str, shard: int) -> list[int]:
        return self.plan.wds_shards[shard] if kind == WDS_DIR else self.plan.zarr_shards[shard]

    def wds_samples(self, shard: int, labels, cfg) -> list[tuple[str, list[tuple[str, object]]]]:
        """The samples of WebDataset shard ``shard`` for its writer: the `ok` rows, in plan order."""
        samples = []
        for row in self.plan.wds_shards[shard]:
            meta = self.metas[row]
            if meta["status"] != STATUS_OK:
                continue
            item = self.plan.items[row]
            members = [
                (HEADER_MEMBER, header_json(item, meta, cfg.imaging, cfg.codec)),
                (VOLUME_MEMBER, self.refs[row][0]),
                *labels.members(row).items(),
            ]
            samples.append((sample_key(item.scan_id), members))
        return samples

    def zarr_volumes(self, shard: int) -> list:
        """The volume refs of Zarr shard ``shard``'s rows (None for a failed row: a hole)."""
        rows = self.plan.zarr_shards[shard]
        return [self.refs[r][1] if self.metas[r]["status"] == STATUS_OK else None for r in rows]

    def record(self, out: Path, kind: str, shard: int, result: dict) -> dict:
        """The resume record of a written shard (:mod:`sharding.state`): file, size, digest, rows."""
        return {
            "path": None if result["path"] is None else str(Path(result["path"]).relative_to(out)),
            "samples": result["samples"],
            "bytes": result["bytes"],
            "sha256": result["sha256"],
            "split": self.plan.wds_split[shard] if kind == WDS_DIR else None,
            "rows": [self.metas[r] for r in self.rows(kind, shard)],
        }


class Writers:
    """The shard writers in flight on an executor: ref -> (kind, shard)."""

    def __init__(self, ex) -> None:
        self.ex = ex
        self.running: dict = {}

    def start(self, kind: str, shard: int, ref) -> None:
        self.running[ref] = (kind, shard)

    def finished(self, block: bool) -> Iterator[tuple[str, int, dict]]:
        """Yield ``(kind, shard, result)`` of finished writers: all of them when ``block``, else
        those already done."""
        while self.running:
            refs = list(self.running)
            done, _ = self.ex.wait(refs, num_returns=len(refs) if block else 1, timeout=None if block else 0)
            if not done:
                return
            for ref in done:
                kind, shard = self.running.pop(ref)
                yield kind, shard, self.ex.get(ref)
