"""Per-task loss weights (head.task_weights): the schemes, the config, the head and the evaluation."""

from __future__ import annotations

import pytest
import torch
from support.tiny_model import TINY_VIT

from tte_scale.config import ConfigError, load_config
from tte_scale.loss import empirical_log_hazard, survival_nll_reference
from tte_scale.train import PretrainConfig
from tte_scale.train.evaluate import evaluate
from tte_scale.train.parts import build_model
from tte_scale.train.task_weights import (
    inverse_baseline_weights,
    learnability_weights,
    normalize,
    per_task_nll,
    task_weight_summary,
)

SMALL = TINY_VIT
STARTS = torch.tensor([0.0, 30.0, 365.0])


def test_normalize_mean_one_clipped_and_all_zero_is_uniform():
    w = normalize(torch.tensor([0.0, 10.0, 10.0, 100.0]), 0.1, 2.0)
    assert w.mean().item() == pytest.approx(1.0, rel=1e-6)
    assert w[0] < w[1] == w[2] < w[3]
    assert w.max() / w[0] == pytest.approx(2.0 / 0.1, rel=1e-6)  # both ends clipped before the rescale
    assert torch.equal(normalize(torch.zeros(5), 0.1, 10.0), torch.ones(5))
    assert torch.equal(normalize(torch.tensor([-1.0, -2.0]), 0.1, 10.0), torch.ones(2))  # negatives = no gain
    with pytest.raises(ValueError, match="finite"):
        normalize(torch.tensor([1.0, float("nan")]), 0.1, 10.0)


def test_per_task_nll_sums_to_the_reference_loss():
    g = torch.Generator().manual_seed(0)
    logh = torch.randn(4, 3, 5, generator=g, dtype=torch.float64) - 4
    time = torch.rand(4, 5, generator=g, dtype=torch.float64) * 500
    event = torch.rand(4, 5, generator=g) < 0.4
    per = per_task_nll(logh, time, event, STARTS)
    torch.testing.assert_close(per.sum() / (4 * 5), survival_nll_reference(logh, time, event, STARTS.double()))


def _labels(N=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    time = torch.rand(N, 4, generator=g) * 800
    event = torch.zeros(N, 4, dtype=torch.bool)
    event[:, 0] = torch.rand(N, generator=g) < 0.5  # frequent
    event[:, 1] = torch.rand(N, generator=g) < 0.05  # rare
    event[:, 2] = torch.rand(N, generator=g) < 0.2
    time[:, 3] = 0.0  # no follow-up, no event: nothing to learn
    return time, event


def test_inverse_baseline_weights_are_one_over_the_prefit_loss():
    time, event = _labels()
    lh0 = empirical_log_hazard(time, event, STARTS)
    w = inverse_baseline_weights(time, event, STARTS, lh0, 0.0, 1e9, chunk=64)  # chunked == one pass
    l0 = torch.stack(
        [
            survival_nll_reference(lh0[None, :, k : k + 1].expand(len(time), -1, -1), time[:, k : k + 1],
                                   event[:, k : k + 1], STARTS)
            for k in range(3)
        ]
    )  # fmt: skip
    ratio = (w[:3].double() * l0.double()).numpy()  # w_k * L0_k is the same constant for every task
    assert ratio.max() / ratio.min() == pytest.approx(1.0, rel=1e-4)
    assert w[1] > w[2] > w[0]  # the rare task weighs most
    assert w[3] == 0.0  # the floor lo=0 for the task with nothing to learn
    assert w.mean() == pytest.approx(1.0, rel=1e-5)
    clipped = inverse_baseline_weights(time, event, STARTS, lh0, 0.5, 1.5)
    assert clipped.mean() == pytest.approx(1.0, rel=1e-5)
    assert clipped[3] == clipped.min() and clipped.max() / clipped.min() <= 1.5 / 0.5 + 1e-5


def test_learnability_weights_favour_tasks_the_features_improve():
    base = torch.tensor([10.0, 10.0, 10.0, 10.0])
    loss = torch.tensor([8.0, 9.0, 10.0, 12.0])  # 20% and 10% better, no gain, overfit
    w = learnability_weights(loss, base, 0.1, 10.0)
    assert w[0] > w[1] > w[2] and w[2] == w[3]  # no gain and overfitting both sit at the floor
    assert w[0] / w[1] == pytest.approx(2.0, rel=1e-5)
    assert w.mean().item() == pytest.approx(1.0, rel=1e-6)
    assert torch.equal(learnability_weights(base + 1, base, 0.1, 10.0), torch.ones(4))  # nothing learned
    s = task_weight_summary(torch.ones(4))
    assert s["task_weights/effective_tasks"] == pytest.approx(4.0) and s["task_weights/max"] == 1.0


def test_config_names_the_key():
    with pytest.raises(ConfigError, match="head.task_weights"):
        load_config(PretrainConfig, None, ["head.task_weights=entropy"])
    with pytest.raises(ConfigError, match="head.task_weights"):
        load_config(PretrainConfig, None, ["head.task_weights=learnability"])  # eval.every_steps 0
    with pytest.raises(ConfigError, match=r"head.task_weights: learnability .*head.bias_prefit"):
        load_config(
            PretrainConfig, None, ["head.task_weights=learnability", "eval.every_steps=10", "head.bias_prefit=false"]
        )
    with pytest.raises(ConfigError, match="head.task_weights_range"):
        load_config(PretrainConfig, None, ["head.task_weights_range=[2.0,10.0]"])
    with pytest.raises(ConfigError, match="head.task_weights"):
        load_config(PretrainConfig, None, ["objective=supervised", "head.task_weights=inverse_baseline"])
    cfg = load_config(PretrainConfig, None, ["head.task_weights=learnability", "eval.every_steps=10"])
    assert cfg.head.task_weights == "learnability" and cfg.head.task_weights_range == (0.1, 10.0)


def _pair(scheme):
    torch.manual_seed(0)
    cfg = load_config(PretrainConfig, None, [*SMALL, f"head.task_weights={scheme}", "eval.every_steps=10"])
    return build_model(cfg, 6, 3)


def test_uniform_head_has_no_weight_buffer_and_ones_are_bitwise_uniform():
    uniform, weighted = _pair("uniform"), _pair("inverse_baseline")
    assert uniform.head.task_loss_weight is None
    assert "head.task_loss_weight" not in uniform.state_dict()  # checkpoints of uniform runs unchanged
    assert torch.equal(weighted.head.task_loss_weight, torch.ones(6))
    g = torch.Generator().manual_seed(1)
    vol = torch.rand(4, 1, 8, 16, 16, generator=g)
    time, event = torch.rand(4, 6, generator=g) * 500, torch.rand(4, 6, generator=g) < 0.3
    a, b = uniform(vol, time, event, STARTS), weighted(vol, time, event, STARTS)
    assert torch.equal(a, b)
    ga = torch.autograd.grad(a, list(uniform.parameters()))
    gb = torch.autograd.grad(b, list(weighted.parameters()))
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))
    weighted.head.set_task_weights(torch.tensor([6.0, 0, 0, 0, 0, 0]))
    c = weighted(vol, time, event, STARTS)
    assert not torch.equal(a, c)
    with pytest.raises(ValueError, match="task weights"):
        weighted.head.set_task_weights(torch.tensor([-1.0, 0, 0, 0, 0, 0]))
    with pytest.raises(RuntimeError, match="without task weights"):
        uniform.head.set_task_weights(torch.ones(6))
    assert weighted.bfloat16().head.task_loss_weight.dtype == torch.float32  # kept fp32 under a cast


class _Engine:
    def __init__(self, module):
        self.module = module


def test_evaluate_reports_per_task_losses_of_model_and_prefit():
    model = _pair("learnability")
    g = torch.Generator().manual_seed(2)
    batches = [
        {
            "volume": torch.rand(4, 1, 8, 16, 16, generator=g),
            "tte_time": torch.rand(4, 6, generator=g) * 500,
            "tte_event": torch.rand(4, 6, generator=g) < 0.3,
            "bench_time": torch.rand(4, 1, generator=g) * 500,
            "bench_event": torch.rand(4, 1, generator=g) < 0.5,
            "scan_id": [f"s{i}_{j}" for j in range(4)],
        }
        for i in range(2)
    ]
    model.head.log_hazard0.fill_(-6.0)
    model.head.set_task_weights(torch.tensor([3.0, 1, 1, 0.5, 0.5, 0]))
    out: dict = {}
    metrics = evaluate(_Engine(model), iter(batches), lambda b: b, STARTS, max_batches=5, zero_stage=0, task_losses=out)
    model.eval()
    with torch.no_grad():
        logh = torch.cat([model.head.log_hazard(model.encoder(b["volume"])) for b in batches])
    time = torch.cat([b["tte_time"] for b in batches])
    event = torch.cat([b["tte_event"] for b in batches])
    torch.testing.assert_close(out["model"], per_task_nll(logh, time, event, STARTS))
    torch.testing.assert_close(out["baseline"], per_task_nll(torch.full_like(logh, -6.0), time, event, STARTS))
    # val_loss is the training objective (weighted); the unweighted loss is reported beside it
    assert metrics["val_loss_unweighted"] == pytest.approx(float(out["model"].sum() / (8 * 6)), rel=1e-6)
    assert metrics["val_loss"] != pytest.approx(metrics["val_loss_unweighted"], rel=1e-3)
    assert "val_loss_unweighted" not in evaluate(
        _Engine(model), iter(batches), lambda b: b, STARTS, max_batches=5, zero_stage=0
    )


def test_code_weights_name_codes_and_refuse_unknown_ones():
    from tte_scale.errors import InputError
    from tte_scale.train.task_weights import code_weights

    w = code_weights(["A", "B", "C", "D"], {"B": 7.0, "D": 0.0}, 0.0, 100.0, "vocab.parquet")
    assert w.mean().item() == pytest.approx(1.0, rel=1e-6)
    assert w[1] / w[0] == pytest.approx(7.0, rel=1e-6) and w[3] == 0.0 and w[0] == w[2]
    with pytest.raises(InputError, match=r"vocab.parquet: .*\['Z'\]"):
        code_weights(["A", "B"], {"Z": 2.0}, 0.1, 10.0, "vocab.parquet")
    with pytest.raises(ConfigError, match="head.task_weights_codes"):
        load_config(PretrainConfig, None, ["head.task_weights=codes"])  # no codes named
    with pytest.raises(ConfigError, match="head.task_weights_codes"):
        load_config(PretrainConfig, None, ["head.task_weights_codes={A: 2.0}"])  # scheme is uniform


def test_val_loss_selection_uses_the_unweighted_loss_when_weights_adapt():
    from tte_scale.train.best import BestTracker

    best = BestTracker(metric="val_loss")
    assert best.update(100, {"val_loss": 2.0, "val_loss_unweighted": 2.0}).improved
    # the weighted loss fell only because the weights moved; the unweighted one rose: no improvement
    assert not best.update(200, {"val_loss": 1.5, "val_loss_unweighted": 2.1}).improved
    assert best.best_step == 100
    assert best.update(300, {"val_loss": 1.9}).improved and best.best_step == 300  # without it: val_loss
