"""3D ViT: shapes, determinism, activation checkpointing, registry sweep, FLOPs, export."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tte_scale.config import ConfigError
from tte_scale.errors import InputError
from tte_scale.models import (
    VisionTransformer3D,
    create_model,
    get_config,
    list_models,
    load_pretrained,
    model_info,
    save_pretrained,
    vit_params,
)

TINY = dict(img_size=(32, 32, 32), patch_size=(16, 16, 16), embed_dim=48, depth=2, num_heads=3)


def tiny(**kw):
    torch.manual_seed(0)
    return VisionTransformer3D(**{**TINY, **kw})


@pytest.mark.parametrize("pool", ["cls", "mean", "max"])
@pytest.mark.parametrize("pos", ["sincos", "learned"])
@pytest.mark.parametrize("shape", [(32, 32, 32), (16, 48, 32), (64, 16, 16)])
def test_output_shapes(pool, pos, shape):
    m = tiny(pool=pool, pos_embed=pos)
    x = torch.randn(2, 1, *shape)
    tokens = m.forward_features(x)
    n = (shape[0] // 16) * (shape[1] // 16) * (shape[2] // 16) + (pool == "cls")
    assert tokens.shape == (2, n, 48)
    out = m(x)
    assert out.shape == (2, m.num_features) and torch.isfinite(out).all()


def test_max_pool_is_the_per_feature_max_over_patch_tokens():
    m = tiny(pool="max")
    x = torch.randn(2, 1, 32, 32, 32)
    tok = m.forward_features(x)
    torch.testing.assert_close(m(x), tok.max(dim=1).values)
    assert not torch.allclose(m(x), tok.mean(dim=1))


def test_anisotropic_patches_and_channels():
    m = tiny(img_size=(8, 32, 32), patch_size=(4, 16, 8), in_chans=2, qk_norm=True)
    assert m.forward_features(torch.randn(1, 2, 8, 32, 32)).shape == (1, 2 * 2 * 4 + 1, 48)


def test_bad_inputs_and_configs():
    m = tiny()
    with pytest.raises(ValueError, match="multiple of patch_size"):
        m(torch.randn(1, 1, 30, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 1, D, H, W\]"):
        m(torch.randn(1, 2, 32, 32, 32))
    with pytest.raises(ConfigError, match="num_heads"):
        tiny(num_heads=5)
    with pytest.raises(ConfigError, match="img_size"):
        tiny(img_size=(30, 32, 32))
    with pytest.raises(KeyError, match="unknown model"):
        create_model("vit3d_nope")
    with pytest.raises(TypeError, match="unknown ViTConfig"):
        create_model("vit3d_tiny", dept=3)


def test_determinism_and_init():
    a, b = tiny(), tiny()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    x = torch.randn(2, 1, 32, 32, 32)
    assert torch.equal(a.eval()(x), a(x))
    lin = a.blocks[0].mlp.fc1
    assert abs(lin.weight.std().item() - 0.02) < 0.004 and lin.bias.abs().max() == 0
    assert a.blocks[0].norm1.weight.eq(1).all()


@pytest.mark.parametrize("drop_path", [0.0, 0.3])
def test_activation_checkpointing_gives_identical_gradients(drop_path):
    x = torch.randn(2, 1, 32, 32, 32)
    grads = []
    for ckpt in (False, True):
        m = tiny(drop_path_rate=drop_path, grad_checkpointing=ckpt, qk_norm=True).train()
        torch.manual_seed(1)  # same stochastic-depth draws in both runs
        m(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=0, atol=0, msg=n)


def test_flops_match_torch_flop_counter():
    for pool in ("cls", "mean"):
        m = tiny(pool=pool, depth=3)
        x = torch.randn(1, 1, 32, 48, 64)
        with FlopCounterMode(display=False) as fc:
            m(x)
        # torch's counter has no formula for the CPU flash-attention op: add QK^T and AV.
        n = 2 * 3 * 4 + (pool == "cls")
        counted = fc.get_total_flops() + 3 * (2 * 2 * n * n * 48)
        assert m.flops_per_sample(training=False, img_size=(32, 48, 64)) == counted
        assert m.flops_per_sample(training=True, img_size=(32, 48, 64)) == 3 * counted


def test_registry_sweep():
    """Every ViT size: parameter count on the meta device equals the registry's; the small ones run
    (the MONAI backbones have their own sweep, tests/unit/models/test_monai3d.py)."""
    names = [n for n in list_models() if n.startswith("vit3d_")]
    assert names[:4] == ["vit3d_tiny", "vit3d_small", "vit3d_base", "vit3d_large"] and "vit3d_1b" in names
    for name in names:
        info = model_info(name)
        with torch.device("meta"):
            m = create_model(name)
        assert sum(p.numel() for p in m.parameters()) == info["params"] == vit_params(get_config(name)), name
        assert info["flops_train"] == 3 * info["flops_fwd"] > 0
    sizes = [model_info(n)["params"] for n in names]
    assert sizes == sorted(sizes)
    for name in ("vit3d_tiny", "vit3d_small"):
        m = create_model(name, img_size=(32, 32, 32), grad_checkpointing=True)
        out = m(torch.randn(1, 1, 32, 32, 32))
        out.sum().backward()
        assert out.shape == (1, m.num_features) and torch.isfinite(out).all()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_save_and_load_pretrained(tmp_path):
    m = tiny(pos_embed="learned", pool="mean").eval()
    save_pretrained(m, tmp_path / "enc", model_name="custom")
    meta = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert meta["format_version"] == 1 and meta["config"]["embed_dim"] == 48
    loaded = load_pretrained(tmp_path / "enc").eval()
    x = torch.randn(1, 1, 32, 32, 32)
    assert torch.equal(loaded(x), m(x))
    assert load_pretrained(tmp_path / "enc", grad_checkpointing=True).grad_checkpointing


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(InputError, match="config.json: not found"):
        load_pretrained(tmp_path)
    save_pretrained(tiny(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["config"]["depth"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="do not match"):
        load_pretrained(tmp_path)
    cfg["config"]["depht"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="depht"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("patch", [(16, 16, 16), (8, 16, 16), (4, 16, 8)])
def test_conv_stem_grid_params_and_flops(patch):
    """The conv stem lands on the patch stem's token grid; params and FLOPs are exact."""
    shape = (32, 48, 64)
    conv = tiny(stem="conv", patch_size=patch, pool="mean").eval()
    plain = tiny(patch_size=patch, pool="mean")
    x = torch.randn(2, 1, *shape)
    assert conv.forward_features(x).shape == plain.forward_features(x).shape
    assert len(conv.cfg.stem_strides) == max(patch).bit_length() - 1
    assert conv.cfg.stem_widths[-1] == 48 and list(conv.cfg.stem_widths) == sorted(conv.cfg.stem_widths)
    assert sum(p.numel() for p in conv.parameters()) == vit_params(conv.cfg)
    with FlopCounterMode(display=False) as fc:
        conv(x[:1])
    n = 1
    for s, p in zip(shape, patch):
        n *= s // p
    attn = conv.cfg.depth * 2 * 2 * n * n * 48  # the CPU flash-attention op is not counted by torch
    assert conv.flops_per_sample(training=False, img_size=shape) == fc.get_total_flops() + attn
    # a sample's tokens do not depend on the rest of the batch (GroupNorm, not BatchNorm)
    torch.testing.assert_close(conv(x)[1:], conv(x[1:]), rtol=1e-5, atol=1e-6)


def test_conv_stem_learns_and_checks_config():
    m = tiny(stem="conv", stem_channels=(8, 16, 24, 32))
    assert [c.out_channels for c in m.patch_embed.convs if isinstance(c, torch.nn.Conv3d)] == [8, 16, 24, 32]
    out = m(torch.randn(2, 1, 32, 32, 32))
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(ConfigError, match="powers of 2"):
        tiny(stem="conv", img_size=(24, 32, 32), patch_size=(12, 16, 16))
    with pytest.raises(ConfigError, match="needs 4 widths"):
        tiny(stem="conv", stem_channels=(8, 16))
    with pytest.raises(ConfigError, match="stem"):
        tiny(stem="resnet")


def test_conv_stem_export_roundtrip(tmp_path):
    m = tiny(stem="conv", pool="mean").eval()
    save_pretrained(m, tmp_path / "enc", model_name="custom")
    loaded = load_pretrained(tmp_path / "enc").eval()
    assert loaded.cfg.stem == "conv"
    x = torch.randn(1, 1, 32, 32, 32)
    assert torch.equal(loaded(x), m(x))


def test_models_import_graph_is_acyclic_and_the_registry_a_leaf():
    """Every import inside tte_scale/models (module level or in a function) forms no cycle, and the
    registry imports no model (sizes register themselves from the model file, as in timm)."""
    import ast
    from pathlib import Path

    import tte_scale.models

    folder = Path(tte_scale.models.__file__).parent
    names = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name in names:
        tree = ast.parse((folder / f"{name}.py").read_text())
        for node in list(ast.walk(tree)):  # imports for type checkers only never run
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                node.body = []
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tte_scale.models."):
                deps.add(node.module.rsplit(".", 1)[1])
            elif isinstance(node, ast.ImportFrom) and node.module == "tte_scale.models":
                deps.update(a.name for a in node.names if a.name in names)
        graph[name] = deps & names
    assert graph["registry"] == set()

    def visit(node, path):
        assert node not in path, f"import cycle: {' -> '.join([*path, node])}"
        for dep in graph[node]:
            visit(dep, [*path, node])

    for name in graph:
        visit(name, [])
