"""FeatureNorm in front of the pretraining heads: batch standardization, one-sample batches,
the heads' options, and the config checks."""

from __future__ import annotations

import pytest
import torch

from tte_scale.config import ConfigError
from tte_scale.models import TTEHead
from tte_scale.models.feature_norm import FeatureNorm, make_feature_norm
from tte_scale.models.supervised_head import SupervisedHead
from tte_scale.train.config import HeadSection


def test_standardizes_across_the_batch_and_tracks_running_stats():
    norm = FeatureNorm(6).train()
    # nearly constant features (the collapse): a tiny spread around a large common vector
    h = 5.0 + 0.1 * torch.randn(16, 6, generator=torch.Generator().manual_seed(0))
    out = norm(h)
    torch.testing.assert_close(out.mean(0), torch.zeros(6), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(6), atol=2e-2, rtol=0)
    assert not any(p.requires_grad for p in norm.parameters())  # no affine: nothing to learn
    assert torch.all(norm.running_mean > 0.4)  # momentum 0.1 toward 5.0
    norm.eval()
    torch.testing.assert_close(norm(h[:3]), (h[:3] - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps))


def test_one_sample_training_batch_uses_running_stats():
    norm = FeatureNorm(4).train()
    norm(torch.randn(8, 4))
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    x = torch.randn(1, 4, requires_grad=True)
    out = norm(x)  # plain BatchNorm1d raises "Expected more than 1 value per channel"
    out.sum().backward()
    torch.testing.assert_close(out, (x - mean) / torch.sqrt(var + norm.eps))
    assert torch.equal(norm.running_mean, mean)  # a one-sample batch does not move the stats
    with pytest.raises(ValueError, match="more than 1 value"):
        torch.nn.BatchNorm1d(4, affine=False).train()(torch.randn(1, 4))


def test_heads_use_it_and_options_are_checked():
    h = 3.0 + 1e-3 * torch.randn(8, 12, generator=torch.Generator().manual_seed(1))
    time, event = torch.rand(8, 5) * 100, torch.rand(8, 5) < 0.3
    starts = torch.tensor([0.0, 10.0, 50.0])
    with_norm = TTEHead(12, num_bins=3, num_tasks=5, rank=4)
    without = TTEHead(12, num_bins=3, num_tasks=5, rank=4, feature_norm="none")
    assert isinstance(with_norm.feature_norm, FeatureNorm) and isinstance(without.feature_norm, torch.nn.Identity)
    without.load_state_dict(with_norm.state_dict(), strict=False)
    # batch-standardized, the head sees the scans' differences; per-sample LayerNorm alone does not
    spread_norm = with_norm.log_hazard(h).std(0).mean()
    spread_none = without.log_hazard(h).std(0).mean()
    assert spread_norm > 50 * spread_none
    assert torch.isfinite(with_norm.loss(h, time, event, starts))
    zero = TTEHead(12, num_bins=3, num_tasks=5, rank=4, task_init_std=0.0)
    assert zero.task_weight.eq(0).all()
    with pytest.raises(ValueError, match="task_init_std"):
        TTEHead(12, num_bins=3, num_tasks=5, rank=4, task_init_std=-1.0)
    with pytest.raises(ValueError, match="feature_norm"):
        make_feature_norm("layer", 12)
    sup = SupervisedHead(12, 3)
    labels = torch.tensor([[1, 0, -1]] * 4 + [[0, 1, 1]] * 4)
    assert isinstance(sup.feature_norm, FeatureNorm) and torch.isfinite(sup(h, labels))
    assert isinstance(SupervisedHead(12, 3, feature_norm="none").feature_norm, torch.nn.Identity)
    with pytest.raises(ConfigError, match="head.feature_norm"):
        HeadSection(feature_norm="layer")
    with pytest.raises(ConfigError, match="head.task_init_std"):
        HeadSection(task_init_std=-0.1)
