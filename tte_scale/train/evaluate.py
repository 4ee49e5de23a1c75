"""Periodic evaluation during pretraining: validation loss and a benchmark C-index.

Legend: B batch, E features, J bins, K tasks, T benchmark tasks, N evaluated samples.

The risk score is deliberately simple (the eval stage runs the full probe protocol later).
TTE objective: the head's mean predicted log-hazard over all bins and pretraining tasks, i.e.
"how much is predicted to happen to this patient", the same score for every benchmark task.
Supervised objective: each benchmark task's own logit. Harrell's C-index of the score is
computed for every benchmark task against its (time, event) on the evaluation split.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from tte_scale.eval.concordance import harrell_cindex
from tte_scale.train.parts import model_inputs
from tte_scale.train.task_weights import per_task_nll


def _head_params(module: torch.nn.Module, zero_stage: int):
    """Gather the head's ZeRO-3 partitions while it is used outside its own forward."""
    if zero_stage == 3:
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(
    engine: Any,
    batches: Iterable[dict],
    prepare: Callable[[dict], dict],
    bin_starts_J: torch.Tensor,
    *,
    max_batches: int,
    zero_stage: int,
    bench_tasks: list[str] | None = None,
    objective: str = "tte",
    task_losses: dict[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Mean validation loss over ranks and per-task C-index (all ranks call; rank 0 reports).

    ``task_losses`` (TTE only): a dict that receives ``model`` and ``baseline``, the ``[K]``
    per-task NLL sums over the evaluated samples (all ranks) of the model and of the prefit bias
    alone (for ``head.task_weights: learnability``), and the metrics get ``val_loss_unweighted``.
    """
    model = engine.module
    was_training = model.training
    model.eval()
    device = bin_starts_J.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    risks, times, events = [], [], []
    per_task = None
    try:
        for i, raw in enumerate(batches):
            if i >= max_batches:
                break
            batch = prepare(raw)
            volume, *targets = model_inputs(objective, batch, bin_starts_J)
            # The encoder runs once per batch: its features feed both the loss and the risk score.
            # Submodule calls go through __call__, so ZeRO-3's hooks gather each one's parameters.
            h_BE = model.encoder(volume)
            n = len(batch["scan_id"])
            loss_sum += model.head(h_BE, *targets).detach().double() * n
            count += n
            with _head_params(model.head, zero_stage):
                if objective == "supervised":
                    risk_BT = model.head.logits(h_BE)
                else:
                    logh_BJK = model.head.log_hazard(h_BE)
                    risk_BT = logh_BJK.mean(dim=(1, 2))[:, None]
                    if task_losses is not None:
                        base_BJK = model.head.log_hazard0.float()[None].expand_as(logh_BJK)
                        both = torch.stack([per_task_nll(x, *targets) for x in (logh_BJK, base_BJK)])
                        per_task = both if per_task is None else per_task + both
            # kept on the device: one read back after the loop, not one per batch
            risks.append(risk_BT.detach().float())
            times.append(batch["bench_time"].float())
            events.append(batch["bench_event"].bool())
    finally:
        model.train(was_training)
    totals = torch.stack([loss_sum, torch.tensor(float(count), dtype=torch.float64).to(device)])
    gathered: list[Any] = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
    local = (
        torch.cat(risks).cpu().numpy() if risks else np.zeros((0, 1)),
        torch.cat(times).cpu().numpy() if times else np.zeros((0, 0)),
        torch.cat(events).cpu().numpy() if events else np.zeros((0, 0), bool),
    )
    if task_losses is not None:
        if per_task is None:  # this rank saw no batch: zeros of the right shape for the all-reduce
            per_task = torch.zeros(2, model.head.num_tasks, dtype=torch.float64, device=device)
        if dist.is_initialized():
            dist.all_reduce(per_task)
        task_losses["model"], task_losses["baseline"] = per_task[0].cpu(), per_task[1].cpu()
    if dist.is_initialized():
        dist.all_reduce(totals)
        dist.all_gather_object(gathered, local)
    else:
        gathered = [local]
    totals = totals.cpu()
    out = {"val_loss": float(totals[0] / totals[1]) if totals[1] else math.nan, "val_samples": int(totals[1])}
    if task_losses is not None and totals[1]:
        K = task_losses["model"].numel()
        out["val_loss_unweighted"] = float(task_losses["model"].sum() / (float(totals[1]) * K))
    parts = [g for g in gathered if g[0].size]
    if parts:
        risk_NT = np.concatenate([g[0] for g in parts])
        time_NT = np.concatenate([g[1] for g in parts])
        event_NT = np.concatenate([g[2] for g in parts])
        names = bench_tasks or [f"task{t}" for t in range(time_NT.shape[1])]
        for t, name in enumerate(names[: time_NT.shape[1]]):
            time_N, event_N, risk_N = time_NT[:, t], event_NT[:, t], risk_NT[:, min(t, risk_NT.shape[1] - 1)]
            ok = np.isfinite(risk_N) & np.isfinite(time_N)  # a diverged model's NaN risks: fewer pairs, no crash
            out[f"cindex/{name}"] = float(harrell_cindex(time_N[ok], event_N[ok], risk_N[ok]))
        finite = [v for k, v in out.items() if k.startswith("cindex/") and not math.isnan(v)]
        out["cindex_mean"] = float(np.mean(finite)) if finite else math.nan
    return out
