"""The fixed blob filter: equal to scipy + numpy, selective for balls over tubes, and the ViT's
blob input channels (config, parameters, export)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from torch.utils.flop_counter import FlopCounterMode

from tte_scale.config import ConfigError
from tte_scale.models import VisionTransformer3D, load_pretrained, save_pretrained, vit_params
from tte_scale.models.blob import dot_filter, hessian, sym3_eigvalsh

PAIRS = [(a, b) for a in range(3) for b in range(a, 3)]


def scipy_hessian(v: np.ndarray, sigma) -> np.ndarray:
    out = []
    for a, b in PAIRS:
        order = [0, 0, 0]
        order[a] += 1
        order[b] += 1
        out.append(ndi.gaussian_filter(v.astype(np.float64), sigma, order=order) * sigma[a] * sigma[b])
    return np.stack(out)


def full(h6: np.ndarray) -> np.ndarray:
    m = np.empty(h6.shape[1:] + (3, 3))
    for k, (a, b) in enumerate(PAIRS):
        m[..., a, b] = m[..., b, a] = h6[k]
    return m


@pytest.mark.parametrize("sigma", [(1.0, 1.5, 2.0), (2.5, 0.7, 1.2)])
def test_hessian_equals_scipy(sigma):
    """Including an axis shorter than the kernel (scipy reflects twice there) and odd sizes."""
    rng = np.random.default_rng(0)
    v = rng.random((2, 7, 13, 10)).astype(np.float32)
    got = hessian(torch.from_numpy(v), sigma).numpy()
    for i in range(2):
        np.testing.assert_allclose(got[i], scipy_hessian(v[i], sigma), atol=2e-6)
    # a strided grid is the full one, sampled
    s = hessian(torch.from_numpy(v), sigma, stride=(2, 3, 2)).numpy()
    np.testing.assert_allclose(s, got[:, :, ::2, ::3, ::2], atol=1e-6)


def test_eigenvalues_equal_numpy_including_degenerate():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 3, 3))
    m = (a + a.transpose(0, 2, 1)) / 2
    m[:5] = np.eye(3) * rng.normal(size=(5, 1, 1))  # a multiple of I: p = 0
    m[5:10] = np.diag([1.0, 1.0, -2.0])  # a repeated eigenvalue: acos at the end of its range
    h6 = np.stack([m[:, a, b] for a, b in PAIRS])[None]  # [1, 6, 500]
    got = sym3_eigvalsh(torch.from_numpy(h6))[0].numpy().T
    np.testing.assert_allclose(got, np.linalg.eigvalsh(m), atol=1e-9)
    got32 = sym3_eigvalsh(torch.from_numpy(h6).float())[0].numpy().T
    np.testing.assert_allclose(got32, np.linalg.eigvalsh(m), atol=1e-4)


def test_dot_filter_matches_reference_and_prefers_balls_over_tubes():
    """A ball and a tube of the same radius and brightness: the ball's response is far higher
    (the tube has one eigenvalue near 0), and the response equals scipy's Hessian + numpy."""
    z, y, x = np.mgrid[:24, :40, :40].astype(np.float32)
    ball = ((z - 12) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 9).astype(np.float32)
    tube = ((z - 12) ** 2 + (y - 28) ** 2 <= 9).astype(np.float32)  # along x
    v = 0.1 + 0.5 * np.maximum(ball, tube)
    sigma = (2.0, 2.0, 2.0)
    r = dot_filter(torch.from_numpy(v)[None], sigma)[0].numpy()
    ev = np.linalg.eigvalsh(full(scipy_hessian(v, sigma)))
    ref = np.where(ev[..., 2] < 0, ev[..., 2] ** 2 / np.maximum(-ev[..., 0], 1e-6), 0.0)
    # float32 eigenvalues of the near-isotropic ball centre: ~1e-4 relative (sym3_eigvalsh)
    np.testing.assert_allclose(r, ref, rtol=2e-4, atol=1e-6)
    assert r[12, 12, 12] > 0.05 and r[12, 12, 12] == pytest.approx(r.max())
    assert r[:, 20:, 8:32].max() < 0.1 * r[12, 12, 12]  # along the tube, away from its ends
    # fp32 under bf16 autocast: curvatures of [0, 1] intensities underflow in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rb = dot_filter(torch.from_numpy(v)[None], sigma)
    assert rb.dtype == torch.float32 and torch.equal(rb[0], torch.from_numpy(r))


TINY = dict(img_size=(16, 32, 32), patch_size=(8, 16, 16), embed_dim=48, depth=2, num_heads=3, pool="mean")


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_vit_blob_tokens_params_and_export(stem, tmp_path):
    """Each token gets its patch's largest response per scale through a linear map; every other
    weight is the plain encoder's of the same seed; parameters, FLOPs' inputs and the export."""
    torch.manual_seed(0)
    plain = VisionTransformer3D(**TINY, stem=stem)
    torch.manual_seed(0)
    m = VisionTransformer3D(
        **TINY, stem=stem, blob_sigmas_vox=[[1.0, 1.5, 1.5], [2, 2, 2]], blob_stride=[1, 2, 2]
    ).eval()
    plain_sd, sd = plain.state_dict(), m.state_dict()
    assert set(sd) - set(plain_sd) == {"blob_embed.weight", "blob_embed.bias"}
    assert all(torch.equal(v, sd[k]) for k, v in plain_sd.items())
    assert sum(p.numel() for p in m.parameters()) == vit_params(m.cfg)
    x = torch.rand(2, 1, 16, 32, 32)
    b = m.blob_channels(x)
    # the strided channel repeats each value over its 1x2x2 block
    r = dot_filter(x[:, 0], (1.0, 1.5, 1.5), (1, 2, 2)) * m.cfg.blob_gain
    assert b.shape == (2, 2, 16, 32, 32) and torch.equal(b[:, 0], r.repeat_interleave(2, 2).repeat_interleave(2, 3))
    # odd input sizes: the repeated grid is cut to the input
    assert m.blob_channels(torch.rand(1, 1, 16, 33, 31)).shape == (1, 2, 16, 33, 31)
    # a token's blob input is its patch's maximum
    with torch.no_grad():
        m.blob_embed.weight.zero_()
        m.blob_embed.bias.zero_()
        m.blob_embed.weight[0, 0] = 1.0  # token feature 0 <- scale 0's largest response in the patch
        tokens = m.forward_features(x)
        m.blob_embed.weight[0, 0] = 0.0
        without = m.forward_features(x)
        assert not torch.equal(tokens, without)
        torch.nn.init.normal_(m.blob_embed.weight)
    # the export carries the channels: the loaded model computes the same features
    save_pretrained(m, tmp_path / "enc", model_name="custom")
    loaded = load_pretrained(tmp_path / "enc").eval()
    assert loaded.cfg.blob_sigmas_vox == ((1.0, 1.5, 1.5), (2.0, 2.0, 2.0)) and loaded.cfg.blob_stride == (1, 2, 2)
    assert torch.equal(loaded(x), m(x))
    # gradients reach every parameter, the blob map's included
    m.train()(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters()) and m.blob_embed.weight.grad.abs().sum() > 0


def test_blob_token_is_the_patch_maximum():
    torch.manual_seed(0)
    m = VisionTransformer3D(**TINY, stem="conv", blob_sigmas_vox=[[1.0, 1.5, 1.5]]).eval()
    x = torch.rand(2, 1, 16, 32, 32)
    seen = {}
    hook = m.blob_embed.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0]))  # returns None
    m(x)
    hook.remove()
    ref = m.blob_channels(x)[:, 0].reshape(2, 2, 8, 2, 16, 2, 16).amax((2, 4, 6))
    assert torch.equal(seen["inp"][:, 0], ref)
    # the analytic FLOPs count the blob map (a 1x1x1 convolution) as torch does; the filter is no matmul
    with FlopCounterMode(display=False) as fc:
        m(x[:1])
    attn = m.cfg.depth * 2 * 2 * 8 * 8 * 48  # the CPU flash-attention op is not counted by torch
    assert m.flops_per_sample(training=False, img_size=(16, 32, 32)) == fc.get_total_flops() + attn


def test_vit_blob_config_refusals():
    with pytest.raises(ConfigError, match="blob_sigmas_vox"):
        VisionTransformer3D(**TINY, blob_sigmas_vox=[1.0, 1.5, 1.5])  # one scale, not a list of them
    with pytest.raises(ConfigError, match="blob_sigmas_vox"):
        VisionTransformer3D(**TINY, blob_sigmas_vox=[[1.0, 0.0, 1.5]])
    with pytest.raises(ConfigError, match="single-channel"):
        VisionTransformer3D(**TINY, in_chans=2, blob_sigmas_vox=[[1, 1, 1]])
    with pytest.raises(ConfigError, match="blob_stride"):
        VisionTransformer3D(**TINY, blob_sigmas_vox=[[1, 1, 1]], blob_stride=[0, 1, 1])
    with pytest.raises(ConfigError, match="blob_gain"):
        VisionTransformer3D(**TINY, blob_sigmas_vox=[[1, 1, 1]], blob_gain=0)
