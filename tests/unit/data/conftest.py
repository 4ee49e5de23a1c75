"""Fixtures of the loader tests: tiny shards folders written per docs/formats.md."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # loader_helpers

from support.shards import write_shards  # noqa: E402


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """12 train scans in 3 WebDataset shards of 4 (+ Zarr), ids with `.`, `/`, `%`; read-only."""
    out = tmp_path_factory.mktemp("shards") / "s"
    ids = [f"scan{i:02d}" for i in range(12)]
    ids[5] = "site.a/scan%05"
    info = write_shards(out, n=12, scan_ids=ids)
    info["root"] = str(out)
    return info


@pytest.fixture
def shards_copy(shards, tmp_path):
    """A private copy of `shards` that a test may damage."""
    dst = tmp_path / "s"
    shutil.copytree(shards["root"], dst)
    return {**shards, "root": str(dst)}
