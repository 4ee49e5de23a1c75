"""Linear probes on frozen features, in torch (float64, L-BFGS, L2 penalty).

All three minimize ``mean_i loss_i + (l2 / 2) * ||w||^2`` over standardized features (the
bias/intercepts are not penalized). The scale of ``l2`` is therefore the same as
``lifelines.CoxPHFitter(penalizer=l2)`` and sklearn's ``LogisticRegression(C=1 / (n * l2))``
(tests check both).

* Logistic regression for a binary horizon label.
* Cox proportional hazards, Efron's tie correction (lifelines' default), Breslow baseline
  hazard for survival curves.
* Piecewise exponential (PEM): log-hazard ``x . W[:, j] + b_j`` in bin j (a weight vector per
  bin, so curves may cross), the same likelihood as the pretraining head; intercepts start at
  the log of the empirical hazard per bin.

Legend: N rows, D features, J time bins, G grid times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Standardizer",
    "LogisticProbe",
    "CoxProbe",
    "PEMProbe",
    "fit_logistic",
    "fit_cox",
    "fit_pem",
    "pem_edges",
    "breslow",
    "breslow_survival",
]

F64 = torch.float64


def as_tensor(x, dtype=F64) -> torch.Tensor:
    """``x`` (a tensor, an array or a list) as a contiguous torch tensor of ``dtype``."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x))).to(dtype)


_t = as_tensor


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean/std from the training rows; constant features get std 1."""

    mean_D: torch.Tensor
    std_D: torch.Tensor

    @classmethod
    def fit(cls, x_ND) -> Standardizer:
        x_ND = _t(x_ND)
        std = x_ND.std(0, correction=0)
        return cls(x_ND.mean(0), torch.where(std > 1e-12, std, torch.ones_like(std)))

    def __call__(self, x_ND) -> torch.Tensor:
        return (_t(x_ND) - self.mean_D) / self.std_D


def _lbfgs(params: list[torch.Tensor], loss_fn, max_iter: int) -> float:
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
    )

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(loss_fn())


# ----------------------------------------------------------------------------- logistic
@dataclass(frozen=True)
class LogisticProbe:
    w_D: torch.Tensor
    b: torch.Tensor

    def logit(self, x_ND) -> torch.Tensor:
        return _t(x_ND) @ self.w_D + self.b


def fit_logistic(x_ND, y_N, l2: float, *, init: LogisticProbe | None = None, max_iter: int = 500) -> LogisticProbe:
    """L2-penalized logistic regression on (already standardized) features."""
    x_ND, y_N = _t(x_ND), _t(y_N)
    prev = y_N.mean().clamp(1e-6, 1 - 1e-6)
    w = (init.w_D.clone() if init else torch.zeros(x_ND.shape[1], dtype=F64)).requires_grad_(True)
    b = (init.b.clone() if init else torch.log(prev / (1 - prev)).reshape(())).requires_grad_(True)

    def loss():
        z = x_ND @ w + b
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y_N) + 0.5 * l2 * w.square().sum()

    _lbfgs([w, b], loss, max_iter)
    return LogisticProbe(w.detach(), b.detach())


# ----------------------------------------------------------------------------- Cox
class _CoxStructure:
    """Everything the Efron partial likelihood needs that does not depend on the weights."""

    def __init__(self, time_N, event_N):
        time_N, event_N = _t(time_N), _t(event_N, torch.bool)
        self.n = time_N.shape[0]
        self.uniq_U, inv_N = torch.unique(time_N, return_inverse=True)
        u = self.uniq_U.shape[0]
        self.inv_N = inv_N
        self.ev_idx = torch.nonzero(event_N).flatten()
        ev_u = inv_N[self.ev_idx]
        self.d_U = torch.bincount(ev_u, minlength=u).to(F64)  # events per unique time
        # rank of each event among the events tied with it: 0, 1, ..., d-1
        order = torch.argsort(ev_u, stable=True)
        sorted_u = ev_u[order]
        first = torch.searchsorted(sorted_u, sorted_u, right=False)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.shape[0]) - first
        self.ev_u, self.ev_frac = ev_u, rank.to(F64) / self.d_U[ev_u]

    def sums(self, eta_N):
        """Risk-set sums R_U = sum_{t_j >= u} e^eta and tied-event sums D_U, shifted by m."""
        m = eta_N.max().detach()
        r_N = torch.exp(eta_N - m)
        per_u = torch.zeros(self.uniq_U.shape[0], dtype=F64).index_add(0, self.inv_N, r_N)
        risk_U = torch.flip(torch.cumsum(torch.flip(per_u, [0]), 0), [0])
        dsum_U = torch.zeros_like(per_u).index_add(0, self.inv_N[self.ev_idx], r_N[self.ev_idx])
        return m, risk_U, dsum_U

    def nll(self, eta_N):
        """Negative Efron log partial likelihood, divided by N."""
        m, risk_U, dsum_U = self.sums(eta_N)
        denom = risk_U[self.ev_u] - self.ev_frac * dsum_U[self.ev_u]
        return (torch.log(denom).sum() + m * self.ev_idx.shape[0] - eta_N[self.ev_idx].sum()) / self.n


def breslow(eta_N, time_N, event_N) -> tuple[torch.Tensor, torch.Tensor]:
    """Breslow cumulative baseline hazard of a fitted risk ``eta`` on the training rows: the
    unique event times [U] and ``H0`` there (``sum_{u <= t} d_u / sum_{t_j >= u} exp(eta_j)``)."""
    st = _CoxStructure(time_N, event_N)
    with torch.no_grad():
        m, risk_U, _ = st.sums(_t(eta_N))
        hazard_U = st.d_U / (risk_U * torch.exp(m))
        has_ev = st.d_U > 0
        return st.uniq_U[has_ev], torch.cumsum(hazard_U[has_ev], 0)


def breslow_survival(base_time_U, base_cumhaz_U, eta_N, grid_G) -> torch.Tensor:
    """S_i(t) = exp(-H0(t) exp(eta_i)) at each grid time, [N, G] (H0 a right-continuous step)."""
    grid_G = _t(grid_G)
    idx = torch.bucketize(grid_G, base_time_U, right=True) - 1
    h0_G = torch.where(idx >= 0, base_cumhaz_U[idx.clamp(min=0)], torch.zeros_like(grid_G))
    return torch.exp(-h0_G[None, :] * torch.exp(_t(eta_N))[:, None])


@dataclass(frozen=True)
class CoxProbe:
    beta_D: torch.Tensor
    base_time_U: torch.Tensor  # unique event times of the training rows
    base_cumhaz_U: torch.Tensor  # Breslow cumulative baseline hazard at them

    def risk(self, x_ND) -> torch.Tensor:
        return _t(x_ND) @ self.beta_D

    def survival(self, x_ND, grid_G) -> torch.Tensor:
        """S_i(t) = exp(-H0(t) exp(eta_i)) at each grid time, [N, G]."""
        return breslow_survival(self.base_time_U, self.base_cumhaz_U, self.risk(x_ND), grid_G)


def fit_cox(x_ND, time_N, event_N, l2: float, *, init: CoxProbe | None = None, max_iter: int = 500) -> CoxProbe:
    """L2-penalized Cox PH (Efron ties) on standardized features, plus its Breslow baseline."""
    x_ND = _t(x_ND)
    st = _CoxStructure(time_N, event_N)
    if st.ev_idx.numel() == 0:
        raise ValueError("the Cox probe needs at least one event in its training rows")
    beta = (init.beta_D.clone() if init else torch.zeros(x_ND.shape[1], dtype=F64)).requires_grad_(True)
    _lbfgs([beta], lambda: st.nll(x_ND @ beta) + 0.5 * l2 * beta.square().sum(), max_iter)
    beta = beta.detach()
    return CoxProbe(beta, *breslow(x_ND @ beta, time_N, event_N))


# ----------------------------------------------------------------------------- PEM
def pem_edges(time_N, event_N, num_bins: int) -> torch.Tensor:
    """Bin starts [J]: 0, then quantiles of the event times (duplicates merged)."""
    t = _t(time_N)[_t(event_N, torch.bool)]
    if t.numel() == 0 or num_bins == 1:
        return torch.zeros(1, dtype=F64)
    q = torch.quantile(t, torch.arange(1, num_bins, dtype=F64) / num_bins)
    return torch.unique(torch.cat([torch.zeros(1, dtype=F64), q[q > 0]]))


def _exposure(time_N, starts_J):
    """Time at risk in each bin [N, J] and the bin holding each time [N]."""
    widths_J = torch.cat([starts_J[1:] - starts_J[:-1], torch.tensor([float("inf")], dtype=F64)])
    r_NJ = torch.minimum((time_N[:, None] - starts_J[None, :]).clamp(min=0), widths_J[None, :])
    # bucketize == searchsorted(starts, t, right=True); it stays fast when the cores are busy
    bin_N = (torch.bucketize(time_N, starts_J, right=True) - 1).clamp(min=0)
    return r_NJ, bin_N


@dataclass(frozen=True)
class PEMProbe:
    w_DJ: torch.Tensor
    b_J: torch.Tensor
    starts_J: torch.Tensor

    def log_hazard(self, x_ND) -> torch.Tensor:
        return _t(x_ND) @ self.w_DJ + self.b_J

    def cumhaz(self, x_ND, grid_G) -> torch.Tensor:
        """Cumulative hazard H_i(t) at each grid time, [N, G]."""
        grid_G = _t(grid_G)
        r_GJ, _ = _exposure(grid_G, self.starts_J)
        return torch.exp(self.log_hazard(x_ND)) @ r_GJ.T

    def survival(self, x_ND, grid_G) -> torch.Tensor:
        return torch.exp(-self.cumhaz(x_ND, grid_G))

    def nll(self, x_ND, time_N, event_N) -> float:
        """Mean negative log-likelihood per row (no penalty): the tuning criterion."""
        with torch.no_grad():
            r_NJ, bin_N = _exposure(_t(time_N), self.starts_J)
            return float(_pem_nll(self.log_hazard(x_ND), r_NJ, bin_N, _t(event_N, torch.bool)))


def _pem_nll(logh_NJ, r_NJ, bin_N, event_N):
    ev_term = logh_NJ.gather(1, bin_N[:, None])[:, 0] * event_N
    return ((torch.exp(logh_NJ) * r_NJ).sum(1) - ev_term).mean()


def fit_pem(
    x_ND, time_N, event_N, starts_J, l2: float, *, init: PEMProbe | None = None, max_iter: int = 500
) -> PEMProbe:
    """L2-penalized piecewise-exponential probe on standardized features."""
    x_ND, time_N, event_N, starts_J = _t(x_ND), _t(time_N), _t(event_N, torch.bool), _t(starts_J)
    r_NJ, bin_N = _exposure(time_N, starts_J)
    if init is not None:
        w, b = init.w_DJ.clone(), init.b_J.clone()
    else:
        d_J = torch.bincount(bin_N[event_N], minlength=starts_J.shape[0]).to(F64)
        # empirical hazard per bin (0.5 pseudo-event keeps empty bins finite)
        b = torch.log((d_J + 0.5) / r_NJ.sum(0).clamp(min=1e-12))
        w = torch.zeros(x_ND.shape[1], starts_J.shape[0], dtype=F64)
    w.requires_grad_(True)
    b.requires_grad_(True)
    _lbfgs([w, b], lambda: _pem_nll(x_ND @ w + b, r_NJ, bin_N, event_N) + 0.5 * l2 * w.square().sum(), max_iter)
    return PEMProbe(w.detach(), b.detach(), starts_J)
