"""Harrell's and Antolini's concordance indices, exact and weighted, plus a syncing Metric.

Conventions (identical to ``sksurv.metrics.concordance_index_censored`` and
``lifelines.utils.concordance_index``; lifelines takes predicted *survival* times, so pass it
``-risk``):

* A pair (i, j) is comparable when i had the event and ``t_j > t_i``, or ``t_j == t_i`` and j
  is censored (a subject censored at a death time is taken to have outlived it). Two events at
  the same time are not comparable; neither are two censored subjects.
* Harrell: concordant when ``risk_i > risk_j``; an exact tie in risk counts 1/2 (sksurv uses a
  tolerance of 1e-8; we use exact equality, which agrees for any risks not within 1e-8).
* Antolini (pycox ``concordance_td('antolini')``): the same comparable pairs, concordant when
  ``S_i(t_i) < S_j(t_i)`` strictly; ties count 0. Survival curves are step functions on a grid
  and are read at the last grid point <= t_i (pycox ``steps='post'``, clipped to the first).

Truncation at a horizon ``tau`` (administrative censoring, the C-index *at* a task's horizon):
only events before ``tau`` anchor a pair (``t_i < tau``), every row stays a partner. This is
``sksurv.metrics.concordance_index_ipcw(..., tau)``'s set of pairs; Harrell's C at ``tau`` is
Harrell's C of ``(min(t, tau), event and t < tau)``.

* Uno's C (Uno et al. 2011, ``uno_cindex``): the same truncated pairs, each weighted by
  ``1 / G(t_i)^2``, the inverse squared censoring survival at the anchor's time (``G`` is the
  reverse Kaplan-Meier of the *training* rows, ``survival.censoring_km``). Identical to
  ``sksurv.metrics.concordance_index_ipcw`` up to its 1e-8 risk-tie tolerance.

Weights: every function takes ``weight_BN`` (B weight vectors over the N rows). A weight is a
multiplicity: the result equals the unweighted index on the data with row i repeated w_i times.
That is how the subject-level bootstrap evaluates B resamples at once. Uno's anchor weights
multiply the multiplicities of the anchor row.

Harrell in O(N log N): rows sorted by time, the risk ranks' bits are visited from the top
(a wavelet matrix). At each bit level, rows sharing the higher bits form contiguous groups,
still in time order (the partition by each bit is stable); a row whose bit is 1 outranks every
row of its group whose bit is 0, so its concordant count at this level is the weight of the
group's 0-rows that are later in time (plus censored 0-rows tied in time), read from cumsums.
Each level is a handful of vectorized O(N) passes; there are ceil(log2(#distinct risks)) levels.

Legend: N rows, B weight vectors (bootstrap replicates), G grid times, C chunk of events.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "ConcordanceCounts",
    "harrell_counts",
    "harrell_cindex",
    "uno_cindex",
    "truncate",
    "antolini_cindex",
    "HarrellCIndex",
]


class ConcordanceCounts(NamedTuple):
    """Weighted pair counts, each of shape [B]; ``cindex = (concordant + tied/2) / comparable``."""

    concordant: torch.Tensor
    tied_risk: torch.Tensor
    comparable: torch.Tensor

    @property
    def discordant(self) -> torch.Tensor:
        return self.comparable - self.concordant - self.tied_risk

    @property
    def cindex(self) -> torch.Tensor:
        # 0/0 -> nan: no comparable pair (e.g. no events), left to the caller to report.
        return (self.concordant + 0.5 * self.tied_risk) / self.comparable


def _as_1d(x, dtype) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        # copy: fields of numpy structured arrays (sksurv's y) are strided views
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    return x.reshape(-1).to(dtype)


def _check_inputs(time_N: torch.Tensor, event_N: torch.Tensor, score_N: torch.Tensor) -> None:
    n = time_N.shape[0]
    if event_N.shape[0] != n or score_N.shape[0] != n:
        raise ValueError(
            f"time, event and risk must have the same length, got {n}, {event_N.shape[0]}, {score_N.shape[0]}"
        )
    if torch.isnan(time_N).any():
        raise ValueError(f"time has NaN at rows {torch.nonzero(torch.isnan(time_N)).flatten()[:10].tolist()}")
    if torch.isnan(score_N).any():
        raise ValueError(f"risk has NaN at rows {torch.nonzero(torch.isnan(score_N)).flatten()[:10].tolist()}")


def _weights(weight_BN, n: int, device) -> torch.Tensor:
    if weight_BN is None:
        return torch.ones(1, n, dtype=torch.float64, device=device)
    w = torch.as_tensor(weight_BN, device=device).to(torch.float64)
    if w.ndim == 1:
        w = w[None]
    if w.shape[-1] != n:
        raise ValueError(f"weights have {w.shape[-1]} columns, expected {n} (one per row)")
    return w


def _seg_start(start_N: torch.Tensor) -> torch.Tensor:
    """Index of the first row of each row's segment; ``start_N`` marks segment starts."""
    idx = torch.arange(start_N.shape[0], device=start_N.device)
    return torch.cummax(torch.where(start_N, idx, torch.zeros_like(idx)), 0).values


def _seg_end(start_N: torch.Tensor) -> torch.Tensor:
    """Index of the last row of each row's segment."""
    n = start_N.shape[0]
    idx = torch.arange(n, device=start_N.device)
    is_end = torch.ones_like(start_N)
    is_end[:-1] = start_N[1:]
    cand = torch.where(is_end, idx, torch.full_like(idx, n))
    return torch.flip(torch.cummin(torch.flip(cand, [0]), 0).values, [0])


def _changes(*keys: torch.Tensor) -> torch.Tensor:
    """True where any key differs from the previous row (and at row 0)."""
    out = torch.zeros_like(keys[0], dtype=torch.bool)
    out[0] = True
    for k in keys:
        out[1:] |= k[1:] != k[:-1]
    return out


def truncate(time_N, event_N, tau: float | None):
    """Administrative censoring at ``tau``: ``(min(t, tau), event and t < tau)``; ``tau`` None:
    unchanged. Harrell's C of the result is the C-index at the horizon ``tau``."""
    time_N = _as_1d(time_N, torch.float64)
    event_N = _as_1d(event_N, torch.bool).to(time_N.device)
    if tau is None:
        return time_N, event_N
    return time_N.clamp(max=float(tau)), event_N & (time_N < float(tau))


def harrell_counts(time_N, event_N, risk_N, weight_BN=None, *, tau=None, anchor_weight_N=None) -> ConcordanceCounts:
    """Weighted concordant / tied / comparable pair counts of Harrell's C, exact, O(N log N).

    ``tau``: only events before it anchor a pair (the C-index at a horizon). ``anchor_weight_N``:
    a weight per row applied to the pairs it anchors (Uno's IPCW), on top of ``weight_BN``."""
    time_N, event_N = truncate(time_N, event_N, tau)
    risk_N = _as_1d(risk_N, torch.float64).to(time_N.device)
    _check_inputs(time_N, event_N, risk_N)
    n = time_N.shape[0]
    w_BN = _weights(weight_BN, n, time_N.device)
    if anchor_weight_N is not None:
        a_N = _as_1d(anchor_weight_N, torch.float64).to(time_N.device)
        if a_N.shape[0] != n:
            raise ValueError(f"anchor weights have {a_N.shape[0]} rows, expected {n}")
    else:
        a_N = torch.ones(n, dtype=torch.float64, device=time_N.device)
    zeros_B = torch.zeros(w_BN.shape[0], dtype=torch.float64, device=time_N.device)
    if n < 2:
        return ConcordanceCounts(zeros_B, zeros_B.clone(), zeros_B.clone())

    order = torch.argsort(time_N, stable=True)
    tr_N = torch.unique_consecutive(time_N[order], return_inverse=True)[1]  # dense time rank
    ev_N = event_N[order]
    rr_N = torch.unique(risk_N, return_inverse=True)[1][order]  # dense risk rank
    w_BN = w_BN[:, order]
    a_N = a_N[order]
    cens_N = ~ev_N
    idx_N = torch.arange(n, device=time_N.device)
    n_levels = max(0, int(rr_N.max().item()).bit_length())

    def partner_weight(sel_N, grp_N):
        """Weight of rows in ``sel`` that, within the row's group, are later in time or tied
        in time and censored (the comparable partners of an event row)."""
        run_start = _changes(grp_N, tr_N)
        grp_start = _changes(grp_N)
        re = _seg_end(run_start)
        rs = _seg_start(run_start)
        ge = _seg_end(grp_start)
        ws = w_BN * sel_N
        cs = torch.cumsum(ws, 1)
        wsc = ws * cens_N
        csc = torch.cumsum(wsc, 1)
        later = cs[:, ge] - cs[:, re]
        tied_censored = csc[:, re] - csc[:, rs] + wsc[:, rs]
        return later + tied_censored

    everything = torch.ones(n, dtype=torch.bool, device=time_N.device)
    grp_N = torch.zeros(n, dtype=torch.int64, device=time_N.device)
    comparable = (w_BN * (a_N * ev_N) * partner_weight(everything, grp_N)).sum(1)

    concordant = zeros_B.clone()
    for level in range(n_levels - 1, -1, -1):
        bit_N = (rr_N >> level) & 1
        zero_N = bit_N == 0
        lower = partner_weight(zero_N, grp_N)
        concordant += (w_BN * (a_N * (ev_N & ~zero_N)) * lower).sum(1)
        # Stable partition inside each group: 0-rows first, then 1-rows, time order kept.
        grp_start = _changes(grp_N)
        gs = _seg_start(grp_start)
        ge = _seg_end(grp_start)
        zc = torch.cumsum(zero_N.long(), 0)
        zc_ex = zc - zero_N.long()
        zeros_before = zc_ex - zc_ex[gs]
        zeros_in_group = zc[ge] - zc_ex[gs]
        ones_before = (idx_N - gs) - zeros_before
        new_pos = gs + torch.where(zero_N, zeros_before, zeros_in_group + ones_before)
        perm = torch.empty_like(new_pos)
        perm[new_pos] = idx_N
        grp_N = (grp_N * 2 + bit_N)[perm]
        tr_N, ev_N, cens_N, rr_N, a_N = tr_N[perm], ev_N[perm], cens_N[perm], rr_N[perm], a_N[perm]
        w_BN = w_BN[:, perm]
    # Groups are now exactly the sets of equal risk: partners inside a group are risk ties.
    tied = (w_BN * (a_N * ev_N) * partner_weight(everything, grp_N)).sum(1)
    return ConcordanceCounts(concordant, tied, comparable)


def harrell_cindex(time_N, event_N, risk_N, weight_BN=None, *, tau=None) -> torch.Tensor:
    """Harrell's C (higher risk = earlier event); shape [B] with weights, else a scalar.

    ``tau``: the C-index at that horizon (only events before it anchor a pair). NaN when there
    is no comparable pair. Example::

        >>> harrell_cindex([1.0, 2.0, 3.0], [True, True, False], [3.0, 2.0, 1.0]).item()
        1.0
        >>> harrell_cindex([1.0, 2.0, 3.0], [True, True, False], [1.0, 3.0, 2.0], tau=1.5).item()
        0.0
    """
    c = harrell_counts(time_N, event_N, risk_N, weight_BN, tau=tau).cindex
    return c if weight_BN is not None else c[0]


def uno_cindex(time_N, event_N, risk_N, cens, weight_BN=None, *, tau=None) -> torch.Tensor:
    """Uno's IPCW C-index truncated at ``tau`` (None: no truncation); shape [B] with weights.

    ``cens`` is the censoring survival ``G`` (``survival.censoring_km`` of the training rows, a
    callable on times). Raises ValueError when ``G`` is 0 at an anchor's time (its weight would
    be infinite: choose a smaller ``tau``). NaN without comparable pairs.
    """
    time_N, event_N = truncate(time_N, event_N, tau)
    g_N = torch.as_tensor(cens(time_N), dtype=torch.float64).to(time_N.device)
    zero = event_N & (g_N <= 0)
    if zero.any():
        raise ValueError(
            f"censoring survival G(t) is 0 at event times {time_N[zero][:5].tolist()} (before the horizon): "
            "Uno's weights are infinite there; choose a smaller horizon"
        )
    a_N = torch.where(event_N, 1.0 / g_N.clamp(min=1e-300).square(), torch.zeros_like(g_N))
    c = harrell_counts(time_N, event_N, risk_N, weight_BN, anchor_weight_N=a_N).cindex
    return c if weight_BN is not None else c[0]


def grid_index(grid_G: torch.Tensor, time_N: torch.Tensor) -> torch.Tensor:
    """Column of a step function on ``grid`` at each time: last grid point <= t, clipped to 0."""
    idx = torch.bucketize(time_N, grid_G, right=True) - 1
    return idx.clamp(0, grid_G.shape[0] - 1)


def antolini_cindex(time_N, event_N, surv_NG, grid_G, weight_BN=None, chunk: int = 1024) -> torch.Tensor:
    """Antolini's time-dependent C-index from survival curves ``surv_NG`` on ``grid_G``.

    O(N^2) pairs, evaluated in chunks of events (memory O(C N)); with B weight vectors the
    counts are quadratic forms ``w^T M w`` (self-pairs are never comparable), O(B N^2) flops.
    Shape [B] with weights, else a scalar; NaN without comparable pairs.
    """
    time_N = _as_1d(time_N, torch.float64)
    event_N = _as_1d(event_N, torch.bool).to(time_N.device)
    surv_NG = torch.as_tensor(surv_NG, dtype=torch.float64, device=time_N.device)
    grid_G = torch.as_tensor(grid_G, dtype=torch.float64, device=time_N.device)
    n = time_N.shape[0]
    if surv_NG.shape != (n, grid_G.shape[0]):
        raise ValueError(f"surv must have shape [{n}, {grid_G.shape[0]}], got {tuple(surv_NG.shape)}")
    if torch.isnan(surv_NG).any():
        raise ValueError("survival predictions contain NaN")
    w_BN = _weights(weight_BN, n, time_N.device)
    col_N = grid_index(grid_G, time_N)
    num_B = torch.zeros(w_BN.shape[0], dtype=torch.float64, device=time_N.device)
    den_B = num_B.clone()
    events = torch.nonzero(event_N).flatten()
    for lo in range(0, events.shape[0], chunk):
        ev_C = events[lo : lo + chunk]
        t_C = time_N[ev_C]
        comp_CN = (time_N[None, :] > t_C[:, None]) | ((time_N[None, :] == t_C[:, None]) & ~event_N[None, :])
        s_NC = surv_NG[:, col_N[ev_C]]  # S_j(t_i) for every j and each event i of the chunk
        s_C = s_NC[ev_C, torch.arange(ev_C.shape[0], device=time_N.device)]
        conc_CN = comp_CN & (s_C[:, None] < s_NC.T)
        w_BC = w_BN[:, ev_C]
        num_B += (w_BC * (w_BN @ conc_CN.T.to(torch.float64))).sum(1)
        den_B += (w_BC * (w_BN @ comp_CN.T.to(torch.float64))).sum(1)
    c = num_B / den_B
    return c if weight_BN is not None else c[0]


class HarrellCIndex(Metric):
    """Harrell's C-index as a torchmetrics Metric that syncs across ranks.

    States are lists of tensors concatenated across processes (``dist_reduce_fx="cat"``), so
    ``compute()`` sees every rank's rows and gives exactly the single-process value.

    Example::

        >>> m = HarrellCIndex()
        >>> m.update(torch.tensor([2.0, 1.0]), torch.tensor([3.0, 1.0]), torch.tensor([True, True]))
        >>> m.compute().item()
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("risk", default=[], dist_reduce_fx="cat")
        self.add_state("time", default=[], dist_reduce_fx="cat")
        self.add_state("event", default=[], dist_reduce_fx="cat")

    def update(self, risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> None:
        """Add rows: predicted risk (higher = earlier event), time, event indicator."""
        risk, time, event = risk.reshape(-1), time.reshape(-1), event.reshape(-1)
        if not (risk.shape == time.shape == event.shape):
            raise ValueError(
                f"risk, time, event must have the same length, got {risk.shape}, {time.shape}, {event.shape}"
            )
        self.risk.append(risk.to(torch.float64))
        self.time.append(time.to(torch.float64))
        # gloo cannot all-gather bool tensors: keep the indicator as uint8.
        self.event.append(event.to(torch.uint8))

    def compute(self) -> torch.Tensor:
        risk = dim_zero_cat(self.risk)
        time = dim_zero_cat(self.time)
        event = dim_zero_cat(self.event).bool()
        return harrell_cindex(time, event, risk)
