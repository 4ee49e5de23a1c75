"""`tte-scale eval` on several ranks (issue 17.2): `launch local --nproc 2 -- eval ...` splits the
embedding over 2 gloo ranks, rank 0 fits the probes; 1 and 2 ranks give the same vectors and the
same metrics. The block split itself is a pure function, checked apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.eval_inputs import eval_argv, write_eval_inputs

from tte_scale.cli import main
from tte_scale.eval.embed import _blocks

pytestmark = [pytest.mark.dist, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


def test_blocks_cover_every_position_once_in_batch_aligned_blocks():
    for n, batch, world in [(0, 3, 2), (1, 3, 2), (10, 3, 1), (10, 3, 2), (10, 4, 3), (7, 8, 2)]:
        got = [list(b) for r in range(world) for b in _blocks(n, batch, r, world)]
        assert sorted(i for b in got for i in b) == list(range(n))
        assert all(b[0] % batch == 0 and len(b) <= batch for b in got)  # the same batches for any world
    assert [list(b) for b in _blocks(10, 3, 1, 2)] == [[3, 4, 5], [9]]


def _cached(out: Path) -> dict[str, np.ndarray]:
    (npz,) = (out / "embeddings").glob("tte-*.npz")
    with np.load(npz) as z:
        return {k: z[k] for k in z.files if k.endswith("/features") or k.endswith("/scan_id")}


def test_one_and_two_ranks_give_identical_embeddings_and_metrics(tmp_path):
    write_eval_inputs(tmp_path)
    extra = ("--probes", "logistic", "--batch-size", "3", "--bootstrap", "0")
    assert main(eval_argv(tmp_path, *extra, out="one")) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launch = [sys.executable, "-m", "tte_scale.cli", "launch", "local", "--nproc", "2", "--"]
    proc = subprocess.run(
        [*launch, *eval_argv(tmp_path, *extra, out="two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("report:") == 1  # rank 0 alone reports
    one, two = _cached(tmp_path / "one"), _cached(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 6
    for k in one:
        assert np.array_equal(one[k], two[k]), k
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert a["mean_over_tasks"] == b["mean_over_tasks"] and a["scans_evaluated"] == b["scans_evaluated"]
    assert a["scans_evaluated"] == {"train": 16, "tuning": 10, "held_out": 10}
