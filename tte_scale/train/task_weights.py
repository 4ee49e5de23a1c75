"""Per-task weights of the TTE loss (``head.task_weights``): which of the K tasks the encoder learns from.

Legend: N label rows, J bins, K tasks.

With K pretraining codes of which only a few depend on the image, a uniform loss gives those few
their 1/K share of the gradient (benchmarks/results/sparse.md). The schemes here need no
knowledge of which codes are image-dependent:

* ``uniform``: every task weight 1 (the unweighted loss; the head carries no weight buffer).
* ``inverse_baseline``: ``w_k ∝ 1 / L0_k``, the per-sample loss of task k under the prefit
  bias alone (the no-image model) on the train labels: each task contributes its *relative*
  improvement over the baseline, so rare codes (small L0) are not drowned by frequent ones.
  Fixed before training, from label statistics only.
* ``codes``: every task 1 except named codes (a user who knows which codes the image drives;
  also the oracle the data-driven schemes are measured against).
* ``learnability``: adaptive. At every periodic evaluation, each task's loss on the tuning split
  is compared with the same loss under the prefit bias alone; ``w_k ∝ max(0, (L0_k - L_k) /
  L0_k)``: tasks whose held-out loss the image features improve are up-weighted, tasks the
  encoder only overfits (held-out loss at or above the baseline) fall to the floor. Uniform until
  the first evaluation.

Every scheme ends with :func:`normalize`: divided by the mean, clipped to ``[lo, hi]``
(``head.task_weights_range``), divided by the mean again, so the loss keeps its scale (mean 1).
Weights are constants of the loss (no gradient flows into them).
"""

from __future__ import annotations

import torch

from tte_scale.loss.reference import event_in_bin, time_at_risk

__all__ = [
    "SCHEMES",
    "normalize",
    "per_task_nll",
    "inverse_baseline_weights",
    "learnability_weights",
    "task_weight_summary",
    "code_weights",
]

SCHEMES = ("uniform", "inverse_baseline", "learnability", "codes")


def normalize(score_K: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``score / mean`` clipped to ``[lo, hi]``, then divided by its mean (float32). All-zero
    scores (nothing to prefer) give uniform weights."""
    s = score_K.double().clamp_min(0)
    if not torch.isfinite(s).all():
        raise ValueError("task weight scores must be finite")
    if s.sum() <= 0:
        return torch.ones_like(s, dtype=torch.float32)
    w = (s / s.mean()).clamp(lo, hi)
    return (w / w.mean()).float()


def per_task_nll(
    logh_BJK: torch.Tensor, time_BK: torch.Tensor, event_BK: torch.Tensor, bin_starts_J: torch.Tensor
) -> torch.Tensor:
    """``[K]`` sums over samples and bins of the piecewise-exponential NLL (float64): the
    per-task terms of ``survival_nll_reference`` before the ``1/(B*K)``."""
    logh = logh_BJK.double()
    starts = bin_starts_J.double()
    r = time_at_risk(time_BK.double(), starts)
    d = event_in_bin(time_BK.double(), event_BK, starts).double()
    return (torch.exp(logh) * r - d * logh).sum(dim=(0, 1))


@torch.no_grad()
def inverse_baseline_weights(
    time_NK: torch.Tensor,
    event_NK: torch.Tensor,
    bin_starts_J: torch.Tensor,
    log_hazard0_JK: torch.Tensor,
    lo: float,
    hi: float,
    chunk: int = 2048,
) -> torch.Tensor:
    """``w_k ∝ 1 / L0_k``: L0_k the per-row loss of task k under the prefit bias alone, over the
    train label rows (``chunk`` rows at a time). A task with no loss at all (no time at risk, no
    event: nothing to learn) gets the floor (score 0, clipped up to ``lo``)."""
    K = time_NK.shape[1]
    total = torch.zeros(K, dtype=torch.float64)
    for i in range(0, time_NK.shape[0], chunk):
        t, e = time_NK[i : i + chunk], event_NK[i : i + chunk]
        logh = log_hazard0_JK.double()[None].expand(t.shape[0], -1, -1)
        total += per_task_nll(logh, t, e, bin_starts_J)
    l0 = total / max(time_NK.shape[0], 1)
    # The prefit minimizes each task's loss; L0 > 0 for any task with events (the NLL of a
    # constant hazard is positive once r and d are), ~0 when a task has nothing to learn.
    score = torch.where(l0 > 1e-12, 1.0 / l0.clamp_min(1e-12), torch.zeros_like(l0))
    return normalize(score, lo, hi)


def learnability_weights(loss_K: torch.Tensor, base_K: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``w_k ∝ max(0, (L0_k - L_k) / L0_k)`` from per-task tuning losses of the model (``loss_K``)
    and of the prefit bias alone (``base_K``), both summed over the same samples."""
    base = base_K.double()
    gain = torch.where(base > 0, (base - loss_K.double()) / base.clamp_min(1e-300), torch.zeros_like(base))
    return normalize(gain, lo, hi)


def task_weight_summary(weights_K: torch.Tensor) -> dict[str, float]:
    """Metrics of a weight vector: max, fraction at or below 1/2, and the effective number of
    tasks ``(sum w)^2 / sum w^2`` (K for uniform weights)."""
    w = weights_K.double()
    return {
        "task_weights/max": float(w.max()),
        "task_weights/frac_below_half": float((w <= 0.5).double().mean()),
        "task_weights/effective_tasks": float(w.sum() ** 2 / (w * w).sum().clamp_min(1e-300)),
    }


def code_weights(vocab_codes: list[str], weights: dict[str, float], lo: float, hi: float, source: str) -> torch.Tensor:
    """``codes`` scheme: 1 for every task, ``weights[code]`` for the named codes, normalized.
    InputError naming ``source`` (the vocab file) for a code that is not a task."""
    from tte_scale.errors import InputError

    index = {c: k for k, c in enumerate(vocab_codes)}
    unknown = sorted(c for c in weights if c not in index)
    if unknown:
        raise InputError(f"{source}: head.task_weights_codes {unknown[:5]} are not pretraining tasks")
    score = torch.ones(len(vocab_codes), dtype=torch.float64)
    for c, w in weights.items():
        score[index[c]] = float(w)
    return normalize(score, lo, hi)
