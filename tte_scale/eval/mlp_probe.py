"""A DeepSurv-style survival probe: an MLP on frozen features trained with the Cox partial likelihood.

The seed paper's code fits pycox's ``CoxPH`` on ``torchtuples.practical.MLPVanilla(D, [256, 256],
1, batch_norm=True, dropout=0.1, output_bias=False)`` with Adam and early stopping on a
validation loss. This module is that model in plain torch (pycox stays a test dependency):

* ``SurvMLP``: blocks Linear -> ReLU -> BatchNorm1d -> Dropout (Kaiming-normal weights), then a
  Linear to one log-risk without bias; the same layer order and init as MLPVanilla.
* ``cox_loss``: the negative Breslow partial log-likelihood divided by the number of events.
  On times without ties it is pycox's ``cox_ph_loss`` (which breaks ties by sort order).
* ``train_epochs``: minibatch Adam with an L2 penalty ``(l2 / 2) ||W||^2`` on the Linear weights
  (biases and batch-norm parameters free), the scale of the linear probes' l2.
* ``fit_mlp_cox``: trains for at most ``max_epochs``, keeps the weights of the epoch with the
  lowest tuning-split loss and stops ``patience`` epochs after it (torchtuples' EarlyStopping),
  then a Breslow baseline hazard from the training rows gives survival curves.

The protocol tries every l2 of its grid and keeps the model with the best tuning C-index, as for
the linear Cox probe. Everything runs in float32 on the CPU under a fixed seed (initialization,
batch order and dropout come from a forked RNG, so the caller's random state is untouched).

Legend: N rows, D features, H hidden units.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tte_scale.eval.probes import as_tensor, breslow, breslow_survival

__all__ = ["SurvMLP", "MLPCoxProbe", "cox_loss", "train_epochs", "fit_mlp_cox"]

F32 = torch.float32


def _t(x, dtype=F32) -> torch.Tensor:
    return as_tensor(x, dtype)


class SurvMLP(nn.Module):
    """Features [N, D] -> log-risk [N]: (Linear, ReLU, BatchNorm1d, Dropout) per hidden layer."""

    def __init__(self, in_features: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for n_in, n_out in zip([in_features, *hidden[:-1]], hidden):
            lin = nn.Linear(n_in, n_out)
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            layers += [lin, nn.ReLU(), nn.BatchNorm1d(n_out)] + ([nn.Dropout(dropout)] if dropout else [])
        layers.append(nn.Linear(hidden[-1] if hidden else in_features, 1, bias=False))
        nn.init.kaiming_normal_(layers[-1].weight, nonlinearity="relu")
        self.net = nn.Sequential(*layers)

    def forward(self, x_ND: torch.Tensor) -> torch.Tensor:
        return self.net(x_ND)[:, 0]

    def penalty(self) -> torch.Tensor:
        """Sum of squared Linear weights (the L2 term, without its l2 / 2)."""
        return sum(m.weight.square().sum() for m in self.net if isinstance(m, nn.Linear))


def cox_loss(eta_N: torch.Tensor, time_N: torch.Tensor, event_N: torch.Tensor) -> torch.Tensor:
    """Negative Breslow log partial likelihood / number of events (NaN without events).

    ``sum_{i: event} [eta_i - log sum_{t_j >= t_i} exp(eta_j)] / #events``, the risk set of a
    tied event time holding every row tied with it."""
    order = torch.argsort(time_N, descending=True, stable=True)
    t, e, eta = time_N[order], event_N[order], eta_N[order]
    lse_N = torch.logcumsumexp(eta, 0)
    # the risk set of a time is everything up to the last row tied with it (times descending)
    _, inv, counts = torch.unique_consecutive(t, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0) - 1
    denom_N = lse_N[last[inv]]
    ev = e.to(eta.dtype)
    return -((eta - denom_N) * ev).sum() / ev.sum()


def train_epochs(net: SurvMLP, opt, x_ND, time_N, event_N, *, l2: float, batch_size: int, gen) -> float:
    """One epoch of minibatch training in a random order; the mean batch loss. Batches are the
    order split into ceil(N / batch_size) near-equal parts (batch norm never sees a batch of
    one); a batch without an event has no partial likelihood and is skipped."""
    net.train()
    n = x_ND.shape[0]
    perm = torch.randperm(n, generator=gen)
    losses = []
    for b in torch.tensor_split(perm, max(1, math.ceil(n / batch_size))):
        if not bool(event_N[b].any()) or b.numel() < 2:
            continue
        opt.zero_grad()
        loss = cox_loss(net(x_ND[b]), time_N[b], event_N[b])
        (loss + 0.5 * l2 * net.penalty()).backward()
        opt.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


@dataclass(frozen=True)
class MLPCoxProbe:
    """A trained SurvMLP with its Breslow baseline (training rows)."""

    net: SurvMLP
    base_time_U: torch.Tensor
    base_cumhaz_U: torch.Tensor
    epochs: int
    """Epochs trained; the weights are those of ``best_epoch``."""
    best_epoch: int
    tuning_loss: list[float]
    """Tuning-split loss after each epoch (NaN without tuning events: then the last epoch is kept)."""

    def risk(self, x_ND) -> torch.Tensor:
        """Log-risk [N] (float64), the network in evaluation mode."""
        self.net.eval()
        with torch.no_grad():
            return self.net(_t(x_ND, next(self.net.parameters()).dtype)).to(torch.float64)

    def survival(self, x_ND, grid_G) -> torch.Tensor:
        return breslow_survival(self.base_time_U, self.base_cumhaz_U, self.risk(x_ND), grid_G)


def fit_mlp_cox(
    x_tr,
    time_tr,
    event_tr,
    x_tu,
    time_tu,
    event_tu,
    l2: float,
    *,
    hidden: list[int],
    dropout: float,
    lr: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    seed: int,
) -> MLPCoxProbe:
    """Train on the train rows, early-stopped on the tuning rows' loss (see the module doc)."""
    x_tr, t_tr, e_tr = _t(x_tr), _t(time_tr), _t(event_tr, torch.bool)
    x_tu, t_tu, e_tu = _t(x_tu), _t(time_tu), _t(event_tu, torch.bool)
    if not bool(e_tr.any()):
        raise ValueError("the MLP Cox probe needs at least one event in its training rows")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = SurvMLP(x_tr.shape[1], hidden, dropout)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        best, best_state, best_epoch, history = math.inf, copy.deepcopy(net.state_dict()), 0, []
        for epoch in range(1, max_epochs + 1):
            train_epochs(net, opt, x_tr, t_tr, e_tr, l2=l2, batch_size=batch_size, gen=gen)
            net.eval()
            with torch.no_grad():
                val = float(cox_loss(net(x_tu), t_tu, e_tu)) if bool(e_tu.any()) else math.nan
            history.append(val)
            if not math.isfinite(val):  # nothing to stop on: keep training, keep the last weights
                best_state, best_epoch = copy.deepcopy(net.state_dict()), epoch
                continue
            if val < best:
                best, best_state, best_epoch = val, copy.deepcopy(net.state_dict()), epoch
            elif epoch - best_epoch >= patience:
                break
        net.load_state_dict(best_state)
        net.eval()
        with torch.no_grad():
            eta_tr = net(x_tr).to(torch.float64)
    base_t, base_h = breslow(eta_tr, t_tr.to(torch.float64), e_tr)
    return MLPCoxProbe(net, base_t, base_h, len(history), best_epoch, history)
