"""Two real gloo ranks read damaged shards in lockstep: same step count, no hang, disjoint samples."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import sys
from datetime import timedelta
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]  # holds support/


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, root: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    from tte_scale.data import LoaderConfig, build_loader

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    cfg = LoaderConfig(batch_size=2, num_workers=2 * rank, seed=3, max_bad_fraction=0.5)  # 0 and 2 workers
    loader = build_loader(root, cfg, rank=rank, world_size=world)
    ids, steps = [], 0
    for batch in loader:
        flag = torch.ones(1)
        dist.all_reduce(flag)  # a collective per step, as in training: a rank that stopped early hangs here
        ids += batch["scan_id"]
        steps += 1
    total = torch.tensor([steps])
    dist.all_reduce(total)
    Path(out).write_text(json.dumps({"ids": ids, "steps": steps, "total": int(total), "stats": loader.stats()}))
    dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.slow
def test_two_ranks_with_a_deleted_and_a_corrupt_shard(tmp_path):
    sys.path.insert(0, str(TESTS))
    from support.shards import write_shards

    root = tmp_path / "s"
    info = write_shards(root, n=14, samples_per_shard=4)  # 4 shards: 4, 4, 4, 2 samples (uneven)
    os.remove(root / "wds" / "shard-000001.tar")
    with open(root / "wds" / "shard-000002.tar", "r+b") as f:  # flip a byte of the first volume
        f.seek(512 * 3 + 100)
        b = f.read(1)
        f.seek(512 * 3 + 100)
        f.write(bytes([b[0] ^ 0xFF]))
    port = _free_port()
    ctx = mp.get_context("spawn")
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, str(root), str(outs[r]))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=150)
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"ranks {hung} hung"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    res = [json.loads(o.read_text()) for o in outs]
    assert res[0]["steps"] == res[1]["steps"] == 14 // 4 and res[0]["total"] == 2 * res[0]["steps"]
    bad = sum(r["stats"]["replaced_missing"] for r in res)
    corrupt = sum(r["stats"]["replaced_corrupt"] for r in res)
    lost = set(info["scan_ids"][4:8])
    served = res[0]["ids"] + res[1]["ids"]
    assert not lost & set(served) and info["scan_ids"][8] not in served
    # exactly the damaged samples that fall in the 12 served global positions were counted
    from tte_scale.data import LoaderConfig, build_loader
    from tte_scale.data.order import epoch_order

    index = build_loader(str(root), LoaderConfig(seed=3, max_bad_fraction=0.5, num_workers=0)).index
    first12 = {index.scan_ids[k] for k in epoch_order(index.stream_sizes, 3, 0, 64)[:12]}
    assert bad == len(first12 & lost) and corrupt == int(info["scan_ids"][8] in first12)
    assert bad + corrupt > 0
