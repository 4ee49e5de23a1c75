"""`EvalConfig`: the evaluation protocol's settings (probes, regularization grid, bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tte_scale.config import check
from tte_scale.formats.meds import SPLITS

__all__ = ["EvalConfig", "PROBES"]

PROBES = ("logistic", "cox", "pem", "deepsurv")


@dataclass(kw_only=True, slots=True)
class EvalConfig:
    """Linear-probe evaluation: fit on train, choose l2 on tuning, report on held_out."""

    l2_grid: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    """L2 strengths tried (penalty (l2/2)||w||^2 on the mean loss, standardized features)."""
    probes: list[str] = field(default_factory=lambda: ["logistic", "cox", "pem"])
    """Which probes to fit: logistic (binary label), cox (time, event), pem (piecewise exp.),
    deepsurv (an MLP with the Cox partial likelihood, ``mlp_probe``; not by default: it trains
    one network per l2 and outcome)."""
    bootstrap: int = 1000
    """Bootstrap resamples of held-out subjects for the confidence intervals (0 = no CIs)."""
    ci_level: float = 0.95
    """Coverage of the percentile bootstrap intervals."""
    seed: int = 0
    """Seed of the bootstrap (the same resamples for every task, probe and model)."""
    max_iter: int = 500
    """L-BFGS iterations per probe fit."""
    pem_num_bins: int = 8
    """Piecewise-exponential probe: bins at quantiles of the training event times."""
    mlp_hidden: list[int] = field(default_factory=lambda: [256, 256])
    """deepsurv probe: hidden layer widths (the seed paper's 256 x 256)."""
    mlp_dropout: float = 0.1
    """deepsurv probe: dropout after each hidden layer."""
    mlp_lr: float = 1e-3
    """deepsurv probe: Adam learning rate."""
    mlp_batch_size: int = 128
    """deepsurv probe: rows per minibatch."""
    mlp_max_epochs: int = 100
    """deepsurv probe: at most this many epochs."""
    mlp_patience: int = 10
    """deepsurv probe: stop this many epochs after the best tuning-split loss (its weights kept)."""
    calibration_bins: int = 10
    """Calibration: equal-width probability bins of the logistic probe's ECE and reliability
    plot; risk groups (deciles) of the survival probes' Kaplan-Meier calibration."""
    horizons_days: dict[str, float] = field(default_factory=dict)
    """Per task: upper end of the integrated Brier score grid and the time at which the PEM
    probe's cumulative hazard is its risk score. Tasks not listed use ibs_max_quantile."""
    ibs_max_quantile: float = 0.8
    """Without a horizon: the grid ends at this quantile of the held-out times."""
    ibs_num_times: int = 50
    """Number of grid times of the Brier score / Antolini grid."""
    td_cindex_max_rows: int = 5000
    """Antolini's C-index is O(n^2) per replicate: above this many held-out rows it is
    computed on a fixed random subset of subjects of about this size (noted in the table)."""
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    """Names of the fit, selection and report splits, in that order."""
    train_subsets: list[int] = field(default_factory=list)
    """Label efficiency: training-split sizes (scans) to refit the probes on, e.g. [200, 1000,
    2000]; whole subjects are drawn (``efficiency.subject_subset``). Empty: off."""
    train_subset_resamples: int = 5
    """Random subsets drawn per size (a size at or above the split's scan count is fit once)."""
    train_subset_probes: list[str] = field(default_factory=lambda: ["logistic", "cox"])
    """Probes refit on the subsets (the headline's by default)."""
    num_threads: int = 1
    """torch intra-op threads while probes are fit and bootstrapped (restored after). The
    problems are small (N x D with D ~ 10^2), so extra threads mostly wait for each other: on
    2 shared, busy cores the demo's probes took 318 s with 2 threads and 14 s with 1. 0 keeps
    torch's setting."""

    def __post_init__(self) -> None:
        check(len(self.l2_grid) > 0 and all(v >= 0 for v in self.l2_grid), "l2_grid", "needs one or more values >= 0")
        bad = [p for p in self.probes if p not in PROBES]
        check(not bad, "probes", f"unknown {bad}; choose from {list(PROBES)}")
        check(len(self.probes) > 0, "probes", "needs at least one probe")
        check(self.bootstrap >= 0, "bootstrap", "must be >= 0")
        check(0.0 < self.ci_level < 1.0, "ci_level", "must be in (0, 1)")
        check(self.max_iter >= 1, "max_iter", "must be >= 1")
        check(self.pem_num_bins >= 1, "pem_num_bins", "must be >= 1")
        check(self.calibration_bins >= 2, "calibration_bins", "must be >= 2")
        check(all(h >= 1 for h in self.mlp_hidden), "mlp_hidden", "widths must be >= 1")
        check(0.0 <= self.mlp_dropout < 1.0, "mlp_dropout", "must be in [0, 1)")
        check(self.mlp_lr > 0, "mlp_lr", "must be > 0")
        check(self.mlp_batch_size >= 2, "mlp_batch_size", "must be >= 2 (batch norm)")
        check(self.mlp_max_epochs >= 1, "mlp_max_epochs", "must be >= 1")
        check(self.mlp_patience >= 1, "mlp_patience", "must be >= 1")
        check(all(v > 0 for v in self.horizons_days.values()), "horizons_days", "horizons must be > 0 days")
        check(0.0 < self.ibs_max_quantile <= 1.0, "ibs_max_quantile", "must be in (0, 1]")
        check(self.ibs_num_times >= 2, "ibs_num_times", "must be >= 2")
        check(self.td_cindex_max_rows >= 2, "td_cindex_max_rows", "must be >= 2")
        check(len(self.splits) == 3 and len(set(self.splits)) == 3, "splits", "needs three distinct names")
        check(self.num_threads >= 0, "num_threads", "must be >= 0")
        check(all(n >= 1 for n in self.train_subsets), "train_subsets", f"sizes must be >= 1, got {self.train_subsets}")
        check(
            len(set(self.train_subsets)) == len(self.train_subsets),
            "train_subsets",
            f"sizes repeat: {self.train_subsets}",
        )
        check(self.train_subset_resamples >= 1, "train_subset_resamples", "must be >= 1")
        bad = [p for p in self.train_subset_probes if p not in PROBES]
        check(
            not bad and len(self.train_subset_probes) > 0,
            "train_subset_probes",
            f"unknown {bad}; choose from {list(PROBES)}",
        )
