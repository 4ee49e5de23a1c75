"""On-device normalization and augmentation (CPU here; the gpu-marked test compares with CUDA)."""

from __future__ import annotations

import pytest
import torch

from tte_scale.config import ConfigError
from tte_scale.data import AugmentConfig, augment_batch, hu_to_float


def _batch(B=3, shape=(6, 8, 10)):
    g = torch.Generator().manual_seed(0)
    vol = torch.randint(-1200, 1500, (B, 1, *shape), generator=g).to(torch.int16)
    return {"volume": vol, "scan_id": [f"s{i}" for i in range(B)], "row": torch.arange(B)}


def test_hu_to_float_window():
    v = torch.tensor([-2000, -1000, 0, 1000, 3000], dtype=torch.int16)
    assert hu_to_float(v).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert hu_to_float(v, -500, 500).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    with pytest.raises(TypeError, match="int16"):
        hu_to_float(v.float())


def test_disabled_is_normalization_only():
    b = _batch()
    out = augment_batch(b, AugmentConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(out["volume"], hu_to_float(b["volume"])) and out["scan_id"] == b["scan_id"]


def test_crop_flip_jitter_deterministic_and_correct():
    b = _batch()
    cfg = AugmentConfig(
        enabled=True, crop_size=(4, 8, 5), flip_axes=(2,), flip_prob=1.0, intensity_scale=0.0, intensity_shift=0.0
    )
    out = augment_batch(b, cfg, torch.Generator().manual_seed(2))
    assert out["volume"].shape == (3, 1, 4, 8, 5) and out["volume"].dtype == torch.float32
    # each output is a W-flipped crop of its input
    ref = hu_to_float(torch.flip(b["volume"], [4]))
    for i in range(3):
        hit = any(
            torch.equal(out["volume"][i, 0], ref[i, 0, d : d + 4, :, w : w + 5]) for d in range(3) for w in range(6)
        )
        assert hit
    cfg_j = AugmentConfig(enabled=True, flip_prob=0.0, intensity_scale=0.1, intensity_shift=0.1)
    a1 = augment_batch(b, cfg_j, torch.Generator().manual_seed(3))["volume"]
    a2 = augment_batch(b, cfg_j, torch.Generator().manual_seed(3))["volume"]
    assert torch.equal(a1, a2)
    base = hu_to_float(b["volume"])
    for i in range(3):  # jitter is affine per sample: y = x * s + t with |s - 1| <= 0.1, |t| <= 0.1
        x, y = base[i].flatten().double(), a1[i].flatten().double()
        A = torch.stack([x, torch.ones_like(x)], 1)
        s_t = torch.linalg.lstsq(A, y[:, None]).solution.flatten()
        assert (A @ s_t - y).abs().max() < 1e-5
        assert (
            abs(s_t[0] - 1) <= 0.1 and abs(s_t[1]) <= 0.1 and not torch.allclose(s_t, torch.tensor([1.0, 0.0]).double())
        )
    with pytest.raises(ValueError, match="crop_size"):
        augment_batch(b, AugmentConfig(enabled=True, crop_size=(7, 8, 10)), torch.Generator())
    with pytest.raises(ConfigError, match="flip_axes"):
        AugmentConfig(flip_axes=(3,))


def test_flips_are_opt_in():
    """Chest CT is lateralized: augmentation on, flips off unless axes are named (here and in
    the training config, which passes data.flip_axes through)."""
    from tte_scale.train import PretrainConfig

    b = _batch()
    b["volume"] = b["volume"].repeat(8, 1, 1, 1, 1)  # 24 samples: a 0.5 flip would hit some
    plain = AugmentConfig(enabled=True, intensity_scale=0.0, intensity_shift=0.0)
    out = augment_batch(b, plain, torch.Generator().manual_seed(4))["volume"]
    assert torch.equal(out, hu_to_float(b["volume"]))
    flipping = AugmentConfig(enabled=True, intensity_scale=0.0, intensity_shift=0.0, flip_axes=(2,))
    out = augment_batch(b, flipping, torch.Generator().manual_seed(4))["volume"]
    assert not torch.equal(out, hu_to_float(b["volume"]))
    assert PretrainConfig().data.flip_axes == []


@pytest.mark.gpu
def test_gpu_matches_cpu():
    b = _batch()
    cfg = AugmentConfig(enabled=True, crop_size=(4, 6, 6), flip_axes=(2,), flip_prob=0.5)
    cpu = augment_batch(b, cfg, torch.Generator().manual_seed(5))["volume"]
    gb = {**b, "volume": b["volume"].cuda()}
    gpu = augment_batch(gb, cfg, torch.Generator().manual_seed(5))["volume"]
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu)
