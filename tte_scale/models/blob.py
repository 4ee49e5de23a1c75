"""A fixed blob-enhancement filter: the Hessian "dot" filter of lung-nodule CAD, in torch.

Li, Sone & Doi (2003): at scale sigma, the Hessian of the Gaussian-smoothed volume, each second
derivative scale-normalized by sigma_a * sigma_b (voxel units; = s^2 / (spacing_a * spacing_b)
for a scale of s mm), has three negative eigenvalues at a bright blob and not at a bright tube or
sheet; the response there is l3^2 / |l1| (l1 <= l2 <= l3 < 0), elsewhere 0.

Why it exists: on a cohort whose biomarker is a small round lesion among vessels of the same
intensity, no encoder trained here learned that shape measure from scan-level targets within a
CPU budget, while a small network given this map learned the lesion size in 100 steps
(benchmarks/results/sparse.md). ``ViTConfig.blob_sigmas_vox`` gives each of the encoder's tokens
the largest response inside its patch; ``benchmarks/detector_ceiling.py`` uses the same function
as a training-free detector. The filter has no parameters, runs on the input's device in fp32 (also under autocast:
curvatures of [0, 1] intensities underflow in bf16) and carries no gradient.

Boundaries follow scipy.ndimage's default ("reflect": the edge sample is repeated, d c b a | a b c
d), and the kernels scipy's Gaussian derivatives (radius int(4 sigma + 0.5)), so that
``hessian`` equals ``scipy.ndimage.gaussian_filter(..., order=...)`` to float32 rounding and
``dot_filter`` that followed by ``numpy.linalg.eigvalsh`` to ~1e-4 relative
(tests/unit/models/test_blob.py).
"""

from __future__ import annotations

import math

import torch

__all__ = ["dot_filter", "hessian", "sym3_eigvalsh"]

# Upper-triangle order of the 6 Hessian components: (0,0) (0,1) (0,2) (1,1) (1,2) (2,2).
_PAIRS = [(a, b) for a in range(3) for b in range(a, 3)]


def _kernels(sigma: float, device, dtype=torch.float64) -> list[torch.Tensor]:
    """Sampled Gaussian (normalized to sum 1) and its first and second derivatives, as scipy."""
    r = int(4.0 * sigma + 0.5)
    x = torch.arange(-r, r + 1, device=device, dtype=dtype)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return [g, -x / sigma**2 * g, (x * x / sigma**4 - 1.0 / sigma**2) * g]


def _pass(x: torch.Tensor, kernels: list[torch.Tensor], dim: int, stride: int = 1) -> list[torch.Tensor]:
    """Correlate ``x`` along ``dim`` with each 1D kernel (reflect-padded; every ``stride``-th output).

    Shifted multiply-adds rather than ``conv3d``: a 1D kernel of ~13 taps over a volume is memory
    bound, and this is ~5x faster on CPU than a (k, 1, 1) convolution (measured at 8x48x112x112).
    scipy convolves (flips the kernel); odd kernels flip sign, so the flipped kernel is used.
    """
    r = (kernels[0].numel() - 1) // 2
    n = x.shape[dim]
    # scipy's "reflect" repeats the edge (d c b a | a b c d); a radius longer than the axis
    # reflects again, which a short axis at a large sigma needs.
    idx = torch.remainder(torch.arange(-r, n + r, device=x.device), 2 * n)
    xp = x.index_select(dim, torch.where(idx >= n, 2 * n - 1 - idx, idx))
    last = dim == x.dim() - 1
    step = 1 if last else stride  # strided reads along the last axis are slow: slice at the end
    m = -(-n // step)
    outs = [None] * len(kernels)
    taps = [k.flip(0).tolist() for k in kernels]
    for i in range(2 * r + 1):
        s = xp.narrow(dim, i, (m - 1) * step + 1)
        if step > 1:
            s = s.unfold(dim, 1, step).squeeze(-1)  # every step-th sample, a view
        for j, t in enumerate(taps):
            outs[j] = s * t[i] if outs[j] is None else outs[j].add_(s, alpha=t[i])
    if last and stride > 1:
        outs = [o[..., ::stride].contiguous() for o in outs]
    return outs


def hessian(x_BDHW: torch.Tensor, sigma_vox, stride=(1, 1, 1)) -> torch.Tensor:
    """Scale-normalized Hessian ``[B, 6, D', H', W']`` (upper triangle, see ``_PAIRS``) at the
    per-axis Gaussian scale ``sigma_vox`` (D, H, W) in voxel units, sampled every ``stride``
    voxels (D' = ceil(D / stride), ...; the smoothing makes a stride up to ~sigma safe)."""
    sig = [float(s) for s in sigma_vox]
    if len(sig) != 3 or not all(s > 0 for s in sig):
        raise ValueError(f"sigma_vox must be 3 positive values (D, H, W), got {sigma_vox}")
    ks = [[k.to(torch.float32) for k in _kernels(s, x_BDHW.device)] for s in sig]
    x = x_BDHW.to(torch.float32)
    # Separable, sharing partial results: H first (orders 0, 1, 2), then W, then D; the costly
    # first pass runs along an axis whose rows are contiguous (measured fastest on CPU).
    hw = {}  # (order along H, order along W) -> partial
    for oh, part in enumerate(_pass(x, ks[1], 2, stride[1])):
        need = [ow for ow in range(3) if oh + ow <= 2]
        for ow, h in zip(need, _pass(part, [ks[2][ow] for ow in need], 3, stride[2])):
            hw[(oh, ow)] = h
    out = []
    for a, b in _PAIRS:
        order = [0, 0, 0]
        order[a] += 1
        order[b] += 1
        (h,) = _pass(hw[(order[1], order[2])], [ks[0][order[0]]], 1, stride[0])
        out.append(h * (sig[a] * sig[b]))
    return torch.stack(out, 1)


def sym3_eigvalsh(h_6: torch.Tensor) -> torch.Tensor:
    """Eigenvalues, ascending, of symmetric 3x3 matrices given as their upper triangle on dim 1
    (``[B, 6, ...] -> [B, 3, ...]``), in closed form (Smith 1961): elementwise, so any device
    runs it at memory speed where a batched eigensolver of millions of 3x3 matrices does not.
    In float32 the eigenvalues of near-degenerate matrices (a round blob's centre) are good to
    ~1e-4 of their scale (acos near +-1), and so is the dot response there."""
    a00, a01, a02, a11, a12, a22 = h_6.unbind(1)
    q = (a00 + a11 + a22) / 3.0
    p1 = a01 * a01 + a02 * a02 + a12 * a12
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p = torch.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * p1) / 6.0)
    ps = torch.where(p > 0, p, torch.ones_like(p))  # p = 0: a multiple of I, all eigenvalues q
    det = (b00 * (b11 * b22 - a12 * a12) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)) / (
        ps * ps * ps
    )
    phi = torch.acos((det / 2.0).clamp(-1.0, 1.0)) / 3.0
    hi = q + 2.0 * p * torch.cos(phi)
    lo = q + 2.0 * p * torch.cos(phi + 2.0 * math.pi / 3.0)
    mid = 3.0 * q - hi - lo
    return torch.stack([lo, mid, hi], 1)


@torch.no_grad()
def dot_filter(x_BDHW: torch.Tensor, sigma_vox, stride=(1, 1, 1)) -> torch.Tensor:
    """Dot-filter response ``[B, D', H', W']`` (float32, >= 0) of volumes ``[B, D, H, W]``
    (``stride`` as in :func:`hessian`)."""
    with torch.autocast(device_type=x_BDHW.device.type, enabled=False):
        ev = sym3_eigvalsh(hessian(x_BDHW, sigma_vox, stride))
        l1, l3 = ev[:, 0], ev[:, 2]
        return torch.where(l3 < 0, l3 * l3 / (-l1).clamp_min(1e-6), torch.zeros_like(l3))
