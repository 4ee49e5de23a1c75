"""Two gloo ranks each hold part of the rows: HarrellCIndex.compute() syncs them and gives the
single-process value on all rows (uneven shares, ties across ranks)."""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    rng = np.random.default_rng(0)
    n = 301
    return rng.integers(0, 40, n).astype(float), rng.random(n) < 0.5, rng.integers(0, 25, n).astype(float)


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from tte_scale.eval import HarrellCIndex

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    t, e, r = _data()
    rows = slice(0, 180) if rank == 0 else slice(180, None)  # uneven halves
    m = HarrellCIndex()
    for lo in range(rows.start or 0, rows.stop or len(t), 50):  # several updates per rank
        hi = min(lo + 50, rows.stop or len(t))
        m.update(torch.tensor(r[lo:hi]), torch.tensor(t[lo:hi]), torch.tensor(e[lo:hi]))
    synced = float(m.compute())  # compute() syncs, computes, then restores the local state
    Path(out).write_text(json.dumps({"synced": synced, "local_rows": len(torch.cat(m.time))}))
    dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.slow
def test_two_ranks_sync_to_the_single_process_value(tmp_path):
    from tte_scale.eval import harrell_cindex

    port = _free_port()
    ctx = mp.get_context("spawn")
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, str(outs[r]))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"ranks {hung} hung"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    t, e, r = _data()
    full = harrell_cindex(t, e, r).item()
    half = harrell_cindex(t[:180], e[:180], r[:180]).item()
    res = [json.loads(o.read_text()) for o in outs]
    assert [x["local_rows"] for x in res] == [180, 121]  # each rank kept only its rows
    for x in res:
        assert abs(x["synced"] - full) < 1e-12
    assert abs(half - full) > 1e-6  # the test could fail: one rank's rows alone differ
