"""embed.parts: the plan does not depend on the ranks; a part file is kept only when it is exactly
the block the plan names, for the same key."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from tte_scale.embed.parts import check_part, plan_parts, write_part

IDS = {"train": [f"t{i}" for i in range(7)], "held_out": [f"h{i}" for i in range(3)]}
KEY = {"version": 1, "encoder": {"weights_sha256": "ab"}, "hu_window": [-1000.0, 1000.0]}


def test_plan_is_consecutive_blocks_per_split_and_each_rank_takes_disjoint_parts():
    parts = plan_parts(IDS, 3)
    assert [(p.number, p.split, p.start, p.stop) for p in parts] == [
        (0, "train", 0, 3),
        (1, "train", 3, 6),
        (2, "train", 6, 7),
        (3, "held_out", 0, 3),
    ]
    assert [s for p in parts for s in p.scan_ids] == IDS["train"] + IDS["held_out"]
    for world in (1, 2, 3, 5):
        taken = sorted(p.number for r in range(world) for p in parts if p.number % world == r)
        assert taken == [0, 1, 2, 3]


@pytest.fixture
def written(tmp_path):
    part = plan_parts(IDS, 3)[1]  # t3, t4, t5; t4 unreadable
    subjects = {s: i for i, s in enumerate(IDS["train"] + IDS["held_out"])}
    bad = [{"split": "train", "scan_id": "t4", "row": 4, "kind": "missing", "reason": "x", "where": "y"}]
    vec = np.arange(8, dtype=np.float32).reshape(2, 4)
    path = write_part(tmp_path, part, KEY, [subjects["t3"], subjects["t5"]], vec, bad)
    return path, part, subjects


def test_a_written_part_checks(written):
    path, part, subjects = written
    assert check_part(path, part, KEY, 4, subjects) is None
    assert pq.read_table(path).column("scan_id").to_pylist() == ["t3", "t5"]


def test_what_is_not_exactly_the_part_is_named(written):
    path, part, subjects = written
    assert "key differs" in check_part(path, part, {**KEY, "hu_window": [0.0, 1.0]}, 4, subjects)
    other = plan_parts(IDS, 3)[0]
    assert "another block of scans" in check_part(path, other, KEY, 4, subjects)
    assert "schema" in check_part(path, part, KEY, 5, subjects)
    assert "subject ids differ" in check_part(path, part, KEY, 4, {**subjects, "t5": 99})
    path.write_bytes(path.read_bytes()[:30])
    assert check_part(path, part, KEY, 4, subjects).startswith("unreadable")


def test_rows_out_of_order_are_refused(written, tmp_path):
    path, part, subjects = written
    t = pq.read_table(path)
    pq.write_table(t.take([1, 0]), path)  # same metadata, rows swapped
    assert "each once, in manifest order" in check_part(path, part, KEY, 4, subjects)
