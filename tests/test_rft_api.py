"""The tracer's public API: plan memoization, RegionCache reuse and policy, output keys, and
clear errors for bad input."""

from __future__ import annotations

import gc
import time
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from tracenet.rft import RegionCache, TracePlan, trace
from tracenet.rft.capture import capture
from tracenet.rft.verify import counted_macs, outputs, rel_diff


class Pyramid(nn.Module):
    """Two outputs at strides 2 and 4 sharing a stem; returns a dict, like the TraceNet heads."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Conv2d(8, 8, 3, 2, 1)
        self.head = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s2 = self.stem(x)
        return {"p2": self.head(s2), "p4": self.head(self.down(s2))}


class Tupled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x), self.b(x)


class WithDefault(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        return self.conv(x) * scale


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x


SHAPE = (1, 3, 45, 61)


@pytest.fixture
def model() -> Pyramid:
    return Pyramid().eval()


def _sliced(y: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    return y[..., box[0] : box[1], box[2] : box[3]]


def test_plans_are_memoized_per_targets_and_captures_per_shape(model: Pyramid) -> None:
    a = trace(model, SHAPE, {"p2": (1, 3, 4, 6), "p4": (0, 1, 0, 1)})
    b = trace(model, SHAPE, {"p4": (0, 1, 0, 1), "p2": (1, 3, 4, 6)})
    assert a is b and isinstance(a, TracePlan)
    assert trace(model, SHAPE, {"p2": (1, 3, 4, 7)}) is not a
    assert capture(model, SHAPE) is capture(model, SHAPE)
    assert capture(model, (1, 3, 45, 60)) is not capture(model, SHAPE)


def test_capture_does_not_keep_the_model_alive() -> None:
    m = Pyramid().eval()
    trace(m, SHAPE, {"p2": (0, 1, 0, 1)})
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None


def test_several_targets_on_several_outputs_and_output_kinds(model: Pyramid) -> None:
    x = torch.randn(SHAPE)
    targets = {"p2": (0, 2, 29, 31), "p4": (11, 12, 0, 16)}
    got = trace(model, SHAPE, targets).run(x)
    full = model(x)
    for key, box in targets.items():
        assert rel_diff(got[key], _sliced(full[key], box)) <= 1e-4
    tupled = Tupled().eval()
    out = trace(tupled, SHAPE, {1: (3, 5, 0, 2)}).run(x)
    assert set(out) == {1} and rel_diff(out[1], _sliced(tupled(x)[1], (3, 5, 0, 2))) <= 1e-4
    defaulted = WithDefault().eval()
    shape = tuple(np.array(SHAPE))  # numpy integers are fine
    assert rel_diff(trace(defaulted, shape, {0: (0, 2, 0, 2)}).run(x)[0], defaulted(x)[..., :2, :2]) <= 1e-4
    single = nn.Conv2d(3, 2, 5, padding=2).eval()
    assert rel_diff(trace(single, SHAPE, {0: (44, 45, 60, 61)}).run(x)[0], single(x)[..., 44:, 60:]) <= 1e-4


class OddOutputs(nn.Module):
    """Outputs whose two last dims are not (H, W), or that come from an op without a rule."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv(x)
        return {
            "nhwc": y.permute(0, 2, 3, 1),
            "shuffled": F.pixel_shuffle(y, 2),
            "rolled": y.roll(3, dims=-1),
        }


def test_boxes_are_over_the_two_last_dims_of_any_output() -> None:
    model = OddOutputs().eval()
    x = torch.randn(SHAPE)
    full = model(x)
    for key, box in {"nhwc": (10, 12, 2, 5), "shuffled": (0, 3, 119, 122), "rolled": (44, 45, 0, 4)}.items():
        plan = trace(model, SHAPE, {key: box})
        assert rel_diff(plan.run(x)[key], _sliced(full[key], box)) <= 1e-4, key
    assert trace(model, SHAPE, {"rolled": (0, 1, 0, 1)}).fallbacks


def test_region_cache_reuses_covering_slices_and_counts_only_new_work(model: Pyramid) -> None:
    x = torch.randn(SHAPE)
    full = outputs(model(x))
    cache = RegionCache()
    first = trace(model, SHAPE, {"p4": (5, 7, 5, 7)})
    out = first.run(x, cache=cache)
    assert cache.last_macs == first.macs
    assert rel_diff(out["p4"], _sliced(full["p4"], (5, 7, 5, 7))) <= 1e-4
    again = first.run(x, cache=cache)
    assert cache.last_macs == 0 and torch.equal(again["p4"], out["p4"])
    # p2 inside the stem region the first plan computed: only the head runs
    second = trace(model, SHAPE, {"p2": (12, 14, 12, 14)})
    out2 = second.run(x, cache=cache)
    assert 0 < cache.last_macs < second.macs
    assert rel_diff(out2["p2"], _sliced(full["p2"], (12, 14, 12, 14))) <= 1e-4
    third = trace(model, SHAPE, {"p2": (12, 14, 12, 15)})
    counted = counted_macs(lambda: third.run(x, cache=cache))
    assert cache.last_macs == counted < third.macs


def test_region_cache_keeps_the_larger_slice(model: Pyramid) -> None:
    shape = (1, 3, 181, 245)  # maps large enough to crop (tiny ones are computed whole for a cache)
    x = torch.randn(shape)
    cache = RegionCache()
    trace(model, shape, {"p2": (0, 20, 0, 20)}).run(x, cache=cache)
    head = next(n for n in capture(model, shape).order if n.name == "head")
    big = cache.slices[head][0]
    trace(model, shape, {"p2": (21, 22, 21, 22)}).run(x, cache=cache)  # smaller, disjoint
    assert cache.slices[head][0] == big
    out = trace(model, shape, {"p2": (0, 22, 0, 22)}).run(x, cache=cache)
    assert cache.slices[head][0] == (0, 22, 0, 22)
    assert rel_diff(out["p2"], model(x)["p2"][..., :22, :22]) <= 1e-4


def test_a_cache_gets_tiny_maps_whole(model: Pyramid) -> None:
    """On maps PyTorch convolves with its native GEMM (a few thousand values), no crop rounds
    as the whole map does: a session computes them whole, once, and later taps reuse them."""
    x = torch.randn(SHAPE)
    cache = RegionCache()
    first = trace(model, SHAPE, {"p2": (3, 5, 3, 5)})
    out = first.run(x, cache=cache)
    head = next(n for n in capture(model, SHAPE).order if n.name == "head")
    assert cache.slices[head][0] == (0, 23, 0, 31) and first.regions["head"] == (3, 5, 3, 5)
    assert torch.equal(out["p2"], model(x)["p2"][..., 3:5, 3:5])
    trace(model, SHAPE, {"p2": (20, 22, 25, 27)}).run(x, cache=cache)
    assert cache.last_macs == 0


def test_whole_from_computes_nearly_whole_maps_whole_with_the_same_result(model: Pyramid) -> None:
    """A region covering at least `whole_from` of its map is computed whole (no crop copies,
    no kernel probes); smaller regions stay crops. Exact either way."""
    x = torch.randn(SHAPE)
    box = (0, 21, 0, 29)  # of p2's 23 x 31: 86% of the map
    tight, loose = trace(model, SHAPE, {"p2": box}), trace(model, SHAPE, {"p2": box}, whole_from=0.8)
    assert tight.regions["head"] == box and loose.regions["head"] == (0, 23, 0, 31)
    assert loose.input_region == (0, 45, 0, 61) != tight.input_region  # and upstream of it
    assert torch.equal(loose.run(x)["p2"], tight.run(x)["p2"])
    assert trace(model, SHAPE, {"p2": box}, whole_from=0.9).regions["head"] == box
    small = trace(model, SHAPE, {"p2": (3, 5, 3, 5)}, whole_from=0.8)
    assert small.regions["head"] == (3, 5, 3, 5)
    for bad in (0, 1.5, -0.1, True, "0.8"):
        with pytest.raises(ValueError, match="whole_from must be a fraction"):
            trace(model, SHAPE, {"p2": box}, whole_from=bad)  # type: ignore[arg-type]


def test_region_cache_refuses_another_image(model: Pyramid) -> None:
    cache = RegionCache()
    plan = trace(model, SHAPE, {"p4": (0, 1, 0, 1)})
    x = torch.randn(SHAPE)
    plan.run(x, cache=cache)
    plan.run(x.clone(), cache=cache)  # same values: fine
    with pytest.raises(ValueError, match="different input"):
        plan.run(torch.randn(SHAPE), cache=cache)


@pytest.mark.parametrize(
    ("targets", "error", "match"),
    [
        ({"p2": (0, 24, 0, 5)}, ValueError, "outside the output"),
        ({"p2": (-1, 2, 0, 5)}, ValueError, "outside the output"),
        ({"p2": (3, 3, 0, 5)}, ValueError, "empty"),
        ({"p2": (0, 1, 0)}, ValueError, "4 integers"),
        ({"p2": (0.0, 1.0, 0.0, 1.0)}, TypeError, "integers"),
        ({"p3": (0, 1, 0, 1)}, KeyError, "not an output"),
        ({}, ValueError, "non-empty"),
    ],
)
def test_bad_targets_get_clear_errors(model: Pyramid, targets: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        trace(model, SHAPE, targets)


def test_bad_models_and_shapes_get_clear_errors(model: Pyramid) -> None:
    with pytest.raises(TypeError, match="cannot trace DataDependent"):
        trace(DataDependent().eval(), SHAPE, {0: (0, 1, 0, 1)})
    with pytest.raises(ValueError, match="does not fit"):
        trace(model, (1, 4, 45, 61), {"p2": (0, 1, 0, 1)})
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        trace(model, (3, 45, 61), {"p2": (0, 1, 0, 1)})
    with pytest.raises(ValueError, match="positive"):
        trace(model, (1, 3, 0, 61), {"p2": (0, 1, 0, 1)})
    with pytest.raises(ValueError, match="training mode"):
        trace(Pyramid().train(), SHAPE, {"p2": (0, 1, 0, 1)})
    with pytest.raises(TypeError, match=r"nn\.Module"):
        trace(lambda x: x, SHAPE, {0: (0, 1, 0, 1)})  # type: ignore[arg-type]
    classifier = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    ).eval()
    with pytest.raises(ValueError, match="no spatial dims"):
        trace(classifier, SHAPE, {0: (0, 1, 0, 1)})
    plan = trace(model, SHAPE, {"p2": (0, 1, 0, 1)})
    with pytest.raises(ValueError, match="traced for"):
        plan.run(torch.randn(1, 3, 45, 62))


@pytest.mark.slow
def test_planning_new_targets_on_resnet50_fpn_is_fast() -> None:
    fpn = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet50", weights=None
    )
    fpn = fpn.eval()
    shape = (1, 3, 800, 1344)
    trace(fpn, shape, {"0": (0, 1, 0, 1)})  # capture
    times = []
    for i in range(7):
        targets = {key: (i, i + 1, 2 * i, 2 * i + 1) for key in ("0", "1", "2", "3", "pool")}
        start = time.perf_counter()
        plan = trace(fpn, shape, targets)
        times.append(time.perf_counter() - start)
        assert trace(fpn, shape, targets) is plan
    assert sorted(times)[len(times) // 2] < 0.05, times
