"""The paper's MONAI backbones (issue 20 item 1): the encoder interface, FLOPs against torch's
counter, parameter counts, export round trip, and ``model.init_weights`` (key mapping, refusals)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from tte_scale.config import ConfigError, load_config
from tte_scale.errors import InputError
from tte_scale.models import TTEHead, TTEModel, create_model, list_models, load_pretrained, model_info, save_pretrained
from tte_scale.models.weights import load_init_weights

# Small enough for a CPU test, large enough for every stage (DenseNet needs 32 voxels a side).
SMALL = {
    "swinunetr_encoder": ((32, 32, 32), {"feature_size": 12}, 192),
    "densenet121_3d": ((32, 32, 32), {}, 1024),
    "resnet152_3d": ((8, 16, 16), {}, 2048),
}
NAMES = list(SMALL)


def small(name: str, **kw):
    img, over, _ = SMALL[name]
    torch.manual_seed(0)
    return create_model(name, img_size=img, **{**over, **kw})


def test_registered_beside_the_vit():
    assert set(NAMES) <= set(list_models()) and "vit3d_tiny" in list_models()
    # The full-size accounting, from the meta device: MONAI's widths (pooled 768/1024/2048).
    info = {n: model_info(n) for n in NAMES}
    assert [info[n]["params"] for n in NAMES] == [8_062_002, 11_242_624, 117_363_776]
    assert info["swinunetr_encoder"]["tokens"] == 5 * 7 * 7  # 160x224x224 / 32
    assert all(info[n]["flops_train"] == 3 * info[n]["flops_fwd"] > 0 for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_pooled_features_and_gradients(name):
    m = small(name)
    img, _, width = SMALL[name]
    x = torch.randn(2, 1, *img)
    out = m(x)
    assert out.shape == (2, width) == (2, m.num_features)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(ValueError, match=r"expected input \[B, 1, D, H, W\]"):
        m(torch.randn(2, 2, *img))


@pytest.mark.parametrize("name", NAMES)
def test_flops_and_params_match_torch(name):
    """Forward FLOPs per sample = torch's FlopCounterMode at a small input (and at another shape);
    training = 3x; params = the built model's."""
    m = small(name).eval()
    img = SMALL[name][0]
    for shape in (img, (img[0], 2 * img[1], img[2])):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            m(torch.randn(2, 1, *shape))
        assert m.flops_per_sample(training=False, img_size=shape) == fc.get_total_flops() / 2
        assert m.flops_per_sample(training=True, img_size=shape) == 3 * fc.get_total_flops() / 2
    assert m.cfg.params() == sum(p.numel() for p in m.parameters())
    assert m.cfg.largest_tensor() == max(p.numel() for p in m.parameters())


def test_grad_checkpointing_gives_the_same_gradients():
    for name in ("swinunetr_encoder", "densenet121_3d"):
        a, b = small(name), small(name, grad_checkpointing=True)
        a.load_state_dict(b.state_dict())
        x = torch.randn(2, 1, *SMALL[name][0])
        grads = []
        for m in (a, b):
            m(x).square().mean().backward()
            grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_export_round_trip(tmp_path, name):
    m = small(name).eval()
    with torch.no_grad():  # BatchNorm running statistics that differ from the init
        for buf_name, buf in m.named_buffers():
            if buf_name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1)
    save_pretrained(m, tmp_path / "enc", model_name=name, hu_window=(-1000, 1000))
    meta = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert meta["architecture"] == type(m).__name__ and meta["model_name"] == name
    loaded = load_pretrained(tmp_path / "enc").eval()
    assert type(loaded) is type(m) and loaded.cfg == m.cfg
    x = torch.randn(1, 1, *SMALL[name][0])
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))


def test_tte_head_reads_the_pooled_feature():
    enc = small("densenet121_3d")
    model = TTEModel(enc, TTEHead(enc.num_features, num_bins=2, num_tasks=3, rank=4, loss_backend="torch"))
    loss = model(
        torch.randn(2, 1, 32, 32, 32),
        torch.tensor([[5.0, 40.0, 1.0], [50.0, 2.0, 9.0]]),
        torch.tensor([[True, False, True], [False, True, False]]),
        torch.tensor([0.0, 10.0]),
    )
    loss.backward()
    assert torch.isfinite(loss) and enc.features.conv0.weight.grad.abs().sum() > 0


# ----- model.init_weights ---------------------------------------------------------------------


def _swin_ssl_checkpoint(model) -> dict:
    """What MONAI's SSL pretraining writes: ``{"state_dict": {"module.<swinViT key>": ...}}`` plus
    its pretext heads."""
    state = {"module." + k.removeprefix("swinViT."): v.clone() + 1.0 for k, v in model.state_dict().items()}
    state["module.rotation_head.weight"] = torch.zeros(4, 8)
    state["module.contrastive_head.weight"] = torch.zeros(4, 8)
    return {"state_dict": state, "epoch": 7}


def test_init_weights_maps_monai_ssl_keys(tmp_path):
    model = small("swinunetr_encoder")
    ckpt = _swin_ssl_checkpoint(model)
    torch.save(ckpt, tmp_path / "model_swinvit.pt")
    with pytest.raises(InputError) as exc:  # the pretext heads are not part of the encoder
        load_init_weights(model, tmp_path / "model_swinvit.pt")
    msg = str(exc.value)
    assert "2 unexpected tensors: module.rotation_head.weight" in msg and "Refusing a partial load" in msg
    assert "init_weights_ignore=['contrastive_head.', 'rotation_head.']" in msg
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched on refusal
    load_init_weights(model, tmp_path / "model_swinvit.pt", ignore=["rotation_head.", "contrastive_head."])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k] + 1.0), k


def test_init_weights_safetensors_and_module_prefix(tmp_path):
    src, dst = small("densenet121_3d"), small("densenet121_3d")
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.5)
    save_file({"module." + k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    load_init_weights(dst, tmp_path / "w.safetensors")
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())


def test_init_weights_refuses_partial_and_wrong_shapes(tmp_path):
    model = small("densenet121_3d")
    state = dict(model.state_dict())
    del state["features.denseblock4.denselayer16.layers.conv2.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(InputError, match=r"missing 1 of the encoder's \d+ tensors: features.denseblock4.denselayer16"):
        load_init_weights(model, tmp_path / "partial.pt")
    state = dict(model.state_dict())
    state["features.conv0.weight"] = torch.zeros(8, 1, 7, 7, 7)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(InputError, match=r"1 shapes differ .*features.conv0.weight \(8, 1, 7, 7, 7\) vs \(64, 1"):
        load_init_weights(model, tmp_path / "shape.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read weights"):
        load_init_weights(model, tmp_path / "junk.pt")
    with pytest.raises(InputError, match="not found"):
        load_init_weights(model, tmp_path / "absent.pt")


def test_model_section_reports_fields_the_backbone_lacks():
    from tte_scale.train import PretrainConfig
    from tte_scale.train.parts import check_model_config, encoder_overrides

    cfg = load_config(
        PretrainConfig,
        "configs/pretrain/demo.yaml",
        ["model.name=swinunetr_encoder", "model.feature_size=24", "model.img_size=[32,64,64]"],
    )
    assert encoder_overrides(cfg) == {"drop_path_rate": 0.05, "feature_size": 24, "img_size": (32, 64, 64)}
    info = check_model_config(cfg)
    assert info["embed_dim"] == 384 and set(info["unused"]) == {
        "embed_dim",
        "depth",
        "num_heads",
        "patch_size",
        "stem",
        "pool",
    }
    with pytest.raises(ConfigError, match="model.feature_size: must be a positive multiple of 12"):
        check_model_config(load_config(PretrainConfig, None, ["model.name=swinunetr_encoder", "model.feature_size=20"]))
    with pytest.raises(ConfigError, match="model.init_weights: set either"):
        load_config(PretrainConfig, None, ["model.init_weights=a.pt", "model.init_encoder=enc"])
