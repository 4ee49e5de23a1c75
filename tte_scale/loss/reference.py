"""Piecewise-exponential survival loss: the plain PyTorch reference.

This is the readable definition every faster path is tested against.

Legend: B samples, J time bins, K tasks, R head rank (task-embedding width).

Labels are compact: ``time_BK`` (days from the prediction time to the event, or to censoring)
and ``event_BK`` (1 = the event happened at ``time``, 0 = censored at ``time``). Bin edges are
``bin_starts_J`` (float32 days, ``bin_starts[0] == 0``, increasing): bin j covers
``[start_j, start_{j+1})`` and the last bin is open-ended (infinite width), as in
docs/formats.md. From them, inside the loss:

* time at risk in bin j: ``r_BJK = clamp(time - start_j, 0, start_{j+1} - start_j)``;
* event indicator ``d_BJK = event & (start_j <= time < start_{j+1})``.

The negative log-likelihood of the piecewise-exponential model (MOTOR / pycox PC-Hazard) is::

    L = 1/(B*K) * sum_{b,j,k} [ exp(logh_bjk) * r_bjk - d_bjk * logh_bjk ]

**Normalization**: summed over bins and tasks, then divided by ``B*K`` (mean over samples *and*
tasks), so the loss scale and the learning rate do not depend on the task count.

**Task weights** (optional ``task_weights_K``, constants, no gradient): task k's terms are
multiplied by ``w_k`` before the sum, ``L = 1/(B*K) * sum w_k [...]``, still divided by ``B*K``
(weights of mean 1 keep the loss scale; see tte_scale/train/task_weights.py). ``None`` is the
unweighted loss; all-ones weights give it bitwise. ``exp`` and
all sums run in float32 (float64 for float64 inputs) whatever the input dtype.
"""

from __future__ import annotations

import torch

__all__ = [
    "bin_widths",
    "time_at_risk",
    "event_in_bin",
    "survival_nll_reference",
    "head_loss_reference",
    "empirical_log_hazard",
    "DEFAULT_HAZARD_FLOOR",
]

#: Hazard (events per day) given to a (bin, task) with no event (or no time at risk) in the
#: training labels when the bias is prefit: about one event per 2,700 years at risk. Its log,
#: -13.8, keeps such logits finite and makes ``exp(logh) * r`` negligible at the start.
DEFAULT_HAZARD_FLOOR = 1e-6


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def bin_widths(bin_starts_J: torch.Tensor) -> torch.Tensor:
    """Width of each bin in days; the last bin is open-ended (``inf``)."""
    inf = torch.full_like(bin_starts_J[:1], float("inf"))
    return torch.cat([bin_starts_J[1:] - bin_starts_J[:-1], inf])


def time_at_risk(time_BK: torch.Tensor, bin_starts_J: torch.Tensor) -> torch.Tensor:
    """``r_BJK``: days at risk spent in each bin (0 for bins after the time)."""
    starts = bin_starts_J.to(time_BK.dtype)
    widths = bin_widths(starts)
    rel_BJK = time_BK[:, None, :] - starts[None, :, None]
    return torch.minimum(rel_BJK.clamp_min(0), widths[None, :, None])


def event_in_bin(time_BK: torch.Tensor, event_BK: torch.Tensor, bin_starts_J: torch.Tensor) -> torch.Tensor:
    """``d_BJK``: 1 where the event of task k falls in bin j (``start_j <= time < start_{j+1}``)."""
    starts = bin_starts_J.to(time_BK.dtype)
    ends = torch.cat([starts[1:], torch.full_like(starts[:1], float("inf"))])
    t_B1K = time_BK[:, None, :]
    inside = (t_B1K >= starts[None, :, None]) & (t_B1K < ends[None, :, None])
    return inside & event_BK.bool()[:, None, :]


def survival_nll_reference(
    logh_BJK: torch.Tensor,
    time_BK: torch.Tensor,
    event_BK: torch.Tensor,
    bin_starts_J: torch.Tensor,
    task_weights_K: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss above from full log-hazards ``logh_BJK``; returns a 0-d tensor (fp32/fp64)."""
    acc = _acc_dtype(logh_BJK.dtype)
    B, J, K = logh_BJK.shape
    logh = logh_BJK.to(acc)
    r = time_at_risk(time_BK.to(acc), bin_starts_J.to(acc))
    d = event_in_bin(time_BK.to(acc), event_BK, bin_starts_J.to(acc)).to(acc)
    nll = torch.exp(logh) * r - d * logh
    if task_weights_K is not None:
        nll = nll * task_weights_K.detach().to(device=nll.device, dtype=acc)
    return nll.sum() / (B * K)


def head_loss_reference(
    z_BJR: torch.Tensor,
    weight_KR: torch.Tensor,
    bias_JK: torch.Tensor,
    time_BK: torch.Tensor,
    event_BK: torch.Tensor,
    bin_starts_J: torch.Tensor,
    task_weights_K: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eager head tail + loss: ``logh = z @ W^T + bias`` materialized in full, then the NLL.

    The projection runs in the input dtype (as an eager bf16 model would); the bias is added
    and everything after it runs in float32.
    """
    logits_BJK = z_BJR @ weight_KR.t()
    logh_BJK = logits_BJK.to(_acc_dtype(logits_BJK.dtype)) + bias_JK.to(_acc_dtype(logits_BJK.dtype))
    return survival_nll_reference(logh_BJK, time_BK, event_BK, bin_starts_J, task_weights_K)


@torch.no_grad()
def empirical_log_hazard(
    time_NK: torch.Tensor,
    event_NK: torch.Tensor,
    bin_starts_J: torch.Tensor,
    floor: float = DEFAULT_HAZARD_FLOOR,
    chunk: int | None = None,
) -> torch.Tensor:
    """Log of the empirical hazard per (bin, task): ``log(events_jk / days_at_risk_jk)``.

    The maximum-likelihood constant hazard of each bin, i.e. the bias that minimizes the loss
    when the features carry no information (MOTOR prefits it to avoid early collapse). A
    (bin, task) with no event or no time at risk gets ``log(floor)``; hazards below ``floor``
    are raised to it. Returns float32 ``[J, K]``.

    Memory: ``chunk`` rows at a time (default: 2**22 // K rows, ~32 MB of float64 per
    temporary), one bin at a time, events counted by ``bincount`` of each event's bin: nothing of
    size rows x J x K is built. (Issue 17: building ``time_at_risk``/``event_in_bin`` for 4,096
    rows at K = 8,192 took 6.1 GiB of peak RSS and 99 s for 20,000 rows on the dev CPU.)
    """
    if floor <= 0:
        raise ValueError(f"floor must be > 0 (a hazard in events per day), got {floor}")
    J, K = bin_starts_J.numel(), time_NK.shape[1]
    rows = chunk if chunk is not None else max(1, 2**22 // max(K, 1))
    events_JK = torch.zeros(J * K, dtype=torch.float64, device=time_NK.device)
    exposure_JK = torch.zeros(J, K, dtype=torch.float64, device=time_NK.device)
    starts = bin_starts_J.to(torch.float64).to(time_NK.device)
    widths = bin_widths(starts)
    k_K = torch.arange(K, device=time_NK.device)
    for i in range(0, time_NK.shape[0], rows):
        t = time_NK[i : i + rows].to(torch.float64)
        for j in range(J):  # days at risk in bin j: clamp(t - start_j, 0, width_j)
            exposure_JK[j] += (t - starts[j]).clamp_(0.0, float(widths[j])).sum(0)
        # bin of each event: start_j <= t < start_{j+1}; times before the first start are in none
        e = event_NK[i : i + rows].bool() & (t >= starts[0])
        bin_nK = torch.searchsorted(starts, t.contiguous(), right=True) - 1
        flat = (bin_nK.clamp_min(0) * K + k_K)[e]
        events_JK += torch.bincount(flat, minlength=J * K).to(torch.float64)
    events_JK = events_JK.view(J, K)
    hazard = torch.where(exposure_JK > 0, events_JK / exposure_JK.clamp_min(1e-300), 0.0)
    return hazard.clamp_min(floor).log().to(torch.float32)
