"""The tracer on torchvision models (random weights, randomized BatchNorm statistics, odd
input sizes, boxes at random places, at corners and across the full width)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from tracenet.rft import trace
from tracenet.rft.verify import audit, randomize_batchnorm, rel_diff

tv = torchvision.models


def _features(model: nn.Module, nodes: list[str]) -> nn.Module:
    return create_feature_extractor(model, return_nodes={n: n for n in nodes})


def _randomized(model: nn.Module) -> nn.Module:
    return randomize_batchnorm(model, torch.Generator().manual_seed(0)).eval()


def _fpn() -> nn.Module:
    return torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet50", weights=None
    )


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int, int], tuple | None]] = {
    "resnet18": (lambda: _features(tv.resnet18(), ["layer2", "layer4"]), (1, 3, 99, 131), None),
    "resnet50": (lambda: _features(tv.resnet50(), ["layer3"]), (1, 3, 127, 97), None),
    "mobilenet_v3_large": (lambda: _features(tv.mobilenet_v3_large(), ["features.6"]), (1, 3, 113, 89), None),
    "vgg11": (lambda: _features(tv.vgg11(), ["features.20"]), (1, 3, 75, 101), None),
    "densenet121": (lambda: _features(tv.densenet121(), ["features.denseblock2"]), (1, 3, 67, 93), None),
    "fpn_resnet50": (_fpn, (1, 3, 83, 71), ("1",)),
    "convnext_tiny": (lambda: _features(tv.convnext_tiny(), ["features.3"]), (1, 3, 69, 59), None),
    "shufflenet_v2": (lambda: _features(tv.shufflenet_v2_x0_5(), ["stage3"]), (1, 3, 91, 77), None),
}


def test_resnet18_exact_at_a_corner_box() -> None:
    model = _randomized(MODELS["resnet18"][0]())
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        want = model(x)["layer2"][..., 6:, :2]
        got = trace(model, tuple(x.shape), {"layer2": (6, 9, 0, 2)}).run(x)["layer2"]
    assert rel_diff(got, want) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_torchvision_model_exact_sound_tight_counted(name: str) -> None:
    build, shape, keys = MODELS[name]
    audit(_randomized(build()), shape, seed=1, keys=keys)
