"""FeatureNorm at micro-batch 1: 2 gloo ranks x 1 sample give the loss, the gradients and the
running statistics of 1 process x 2 samples (statistics all-reduced inside the step)."""

from __future__ import annotations

import multiprocessing as mp
import socket
from datetime import timedelta

import pytest
import torch

pytestmark = [pytest.mark.dist, pytest.mark.slow]

E, K, J, R = 6, 5, 3, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup():
    """A tiny encoder (Linear) + the real TTE head, inputs and labels of 2 samples."""
    from tte_scale.models import TTEHead

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    enc = torch.nn.Linear(8, E).double()
    head = TTEHead(E, num_bins=J, num_tasks=K, rank=R, loss_backend="torch", task_init_std=0.3).double()
    x = 3.0 + torch.randn(2, 8, generator=g, dtype=torch.float64)
    time = torch.rand(2, K, generator=g, dtype=torch.float64) * 100
    event = torch.rand(2, K, generator=g) < 0.5
    starts = torch.tensor([0.0, 10.0, 50.0], dtype=torch.float64)
    return enc, head, x, time, event, starts


def _step(rows: slice):
    enc, head, x, time, event, starts = _setup()
    head.train()
    loss = head(enc(x[rows]), time[rows], event[rows], starts)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in [*enc.named_parameters(), *head.named_parameters()]}
    return loss.detach(), grads, head.feature_norm.running_mean.clone(), head.feature_norm.running_var.clone()


def _rank_main(rank: int, port: int, q) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    loss, grads, rm, rv = _step(slice(rank, rank + 1))
    # What data parallelism does with them: average the losses and the gradients over ranks.
    dist.all_reduce(loss)
    for g in grads.values():
        dist.all_reduce(g)
    q.put((rank, (loss / 2).item(), {n: (g / 2).tolist() for n, g in grads.items()}, rm.tolist(), rv.tolist()))
    dist.destroy_process_group()


def test_two_ranks_of_one_sample_match_one_rank_of_two():
    port = _free_port()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_rank_main, args=(r, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    res = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    loss, grads, rm, rv = _step(slice(0, 2))
    for _, l2, g2, rm2, rv2 in res:
        assert l2 == pytest.approx(loss.item(), rel=1e-12)
        for n, g in grads.items():
            torch.testing.assert_close(torch.tensor(g2[n], dtype=torch.float64), g, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(torch.tensor(rm2, dtype=torch.float64), rm)
        torch.testing.assert_close(torch.tensor(rv2, dtype=torch.float64), rv)
    # The test can fail: the encoder's gradient is not zero and one sample alone differs.
    assert grads["weight"].abs().max() > 1e-6
    alone, *_ = _step(slice(0, 1))
    assert abs(alone.item() - loss.item()) > 1e-6
