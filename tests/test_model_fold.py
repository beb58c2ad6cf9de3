"""BatchNorm folded into the convolutions for inference: the same function, one pass fewer,
rebuilt when a weight changes, and refused in training mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tracenet import TraceNet
from tracenet.models.fold import fold_batchnorm
from tracenet.rft.verify import randomize_batchnorm

SMALL = {"fpn_channels": 32, "mask_branch_channels": 16, "min_size": 96, "max_size": 128}


@pytest.fixture(scope="module")
def model() -> TraceNet:
    torch.manual_seed(0)
    m = TraceNet.build(backbone="resnet18", **SMALL)
    randomize_batchnorm(m, torch.Generator().manual_seed(0))
    return m.eval()


def test_folded_net_computes_the_dense_net(model):
    net = model.inference_net()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        want, got = model.dense(x), net(x)
    assert want.keys() == got.keys()
    for key in want:
        scale = want[key].abs().max().clamp(min=1.0)
        assert ((got[key] - want[key]).abs().max() / scale).item() <= 1e-5, key


def test_a_shared_tower_convolution_is_folded_once_per_level(model):
    net = model.inference_net()
    per_level = [net.get_submodule(f"heads.cls_tower.norms.0.{level}") for level in range(5)]
    assert all(isinstance(m, nn.Conv2d) for m in per_level)
    assert len({id(m) for m in per_level}) == 5
    assert not torch.equal(per_level[0].weight, per_level[1].weight)  # each level's own statistics


def test_the_folded_net_follows_weight_changes(model):
    x = torch.randn(1, 3, 96, 128)
    before = model.inference_net()
    assert model.inference_net() is before  # nothing changed: the same copy
    bn = next(m for m in model.dense.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_mean.add_(0.5)
        after = model.inference_net()
        assert after is not before
        want, got = model.dense(x)["mask_feats"], after(x)["mask_feats"]
    assert ((got - want).abs().max() / want.abs().max().clamp(min=1.0)).item() <= 1e-5


def test_folding_needs_eval_mode():
    conv_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(conv_bn.train())
    folded = fold_batchnorm(conv_bn.eval())
    assert [type(m) for m in folded.modules()][1:] == [nn.Conv2d]
