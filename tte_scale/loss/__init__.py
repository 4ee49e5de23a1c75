"""Survival loss kernels: the PyTorch reference and the fused, chunked (Triton) version.

* ``reference``: the readable definition (``survival_nll_reference``, ``head_loss_reference``),
  the label helpers (time at risk, event bin) and ``empirical_log_hazard`` for the bias prefit.
* ``fused``: ``fused_survival_loss``, an ``autograd.Function`` computing the head's last
  projection, the loss and all gradients chunk by chunk over tasks (Triton on CUDA).
* ``triton_pe``: the Triton kernel for one chunk.
"""

from tte_scale.loss.fused import default_chunk, fused_survival_loss
from tte_scale.loss.reference import (
    DEFAULT_HAZARD_FLOOR,
    bin_widths,
    empirical_log_hazard,
    event_in_bin,
    head_loss_reference,
    survival_nll_reference,
    time_at_risk,
)
from tte_scale.loss.triton_pe import HAVE_TRITON

__all__ = [
    "DEFAULT_HAZARD_FLOOR",
    "HAVE_TRITON",
    "bin_widths",
    "default_chunk",
    "empirical_log_hazard",
    "event_in_bin",
    "fused_survival_loss",
    "head_loss_reference",
    "survival_nll_reference",
    "time_at_risk",
]
