"""`tte-scale embed` on real gloo ranks (issue 17.3): 1 and 2 ranks, WebDataset and Zarr, give the
same rows; a run killed mid-way resumes (on another number of ranks) to the same output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.embed_inputs import SPLITS, embed_argv, write_embed_inputs
from support.shards import write_shards

from tte_scale.cli import main

pytestmark = [pytest.mark.dist, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def rows(out: Path):
    return pq.read_table(out / "embeddings.parquet").replace_schema_metadata(None)


def start_ranks(argv: list[str], world: int, log: Path) -> list[subprocess.Popen]:
    """The ranks as SLURM or torchrun would start them: RANK/WORLD_SIZE/... in the environment."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for r in range(world):
        env = _env(
            RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
        f = open(f"{log}.rank{r}", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "tte_scale.cli", *argv], env=env, stdout=f, stderr=f))
    return procs


def spawn_ranks(argv: list[str], world: int, log: Path) -> list[int]:
    return [p.wait(timeout=300) for p in start_ranks(argv, world, log)]


def test_one_and_two_ranks_from_both_formats_give_identical_output(tmp_path):
    write_embed_inputs(tmp_path)
    assert main(embed_argv(tmp_path, "--format", "zarr", out="one_zarr")) == 0
    assert main(embed_argv(tmp_path, "--format", "wds", out="one_wds")) == 0
    launch = [sys.executable, "-m", "tte_scale.cli", "launch", "local", "--nproc", "2", "--"]
    proc = subprocess.run(
        [*launch, *embed_argv(tmp_path, "--format", "wds", out="two_wds")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "embed [rank 1/2]: 3 parts, 9 scans" in proc.stderr  # parts 1, 3, 5 (3 scans each)
    assert spawn_ranks(embed_argv(tmp_path, "--format", "zarr", out="two_zarr"), 2, tmp_path / "log") == [0, 0]
    ref = rows(tmp_path / "one_zarr")
    assert ref.num_rows == len(SPLITS)
    for name in ("one_wds", "two_wds", "two_zarr"):
        assert rows(tmp_path / name).equals(ref), name


def test_a_killed_run_resumes_on_another_number_of_ranks(tmp_path):
    n = 160
    write_shards(tmp_path / "shards", n=n, shape=(8, 8, 8), splits=["train"] * n, samples_per_shard=8, seed=1)
    from support.eval_inputs import write_encoder

    write_encoder(tmp_path / "encoder")
    argv = embed_argv(tmp_path, "--part-size", "1", "--batch-size", "1", out="killed")
    argv = argv[: argv.index("--part-size")] + ["--part-size", "1", "--batch-size", "1", "--format", "wds"]
    procs = start_ranks(argv, 2, tmp_path / "log")
    parts = tmp_path / "killed" / "parts"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 4:
        assert all(p.poll() is None for p in procs)
        time.sleep(0.005)
    for p in procs:  # both ranks, mid-way
        p.send_signal(signal.SIGKILL)
        p.wait()
    written = len(list(parts.glob("part-*.parquet")))
    assert 4 <= written < n and not (tmp_path / "killed" / "embeddings.parquet").exists()

    assert main(argv) == 0  # one rank now
    fresh = [a if a != "killed" and not a.endswith("/killed") else str(tmp_path / "fresh") for a in argv]
    assert main(fresh) == 0
    assert rows(tmp_path / "killed").equals(rows(tmp_path / "fresh"))
    import json

    ranks = json.loads((tmp_path / "killed" / "embed.json").read_text())["ranks"]
    assert ranks[0]["parts_kept"] == written  # a part is renamed into place only when complete
    assert ranks[0]["parts_kept"] + ranks[0]["parts_computed"] == n
