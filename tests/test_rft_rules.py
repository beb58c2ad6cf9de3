"""Rule table of the receptive-field tracer on small hand-built models: each model exercises a
family of ops; every plan must be exact, sound and tight against the model itself, and count
the MACs FlopCounterMode counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tracenet.rft import trace
from tracenet.rft.verify import audit, randomize_batchnorm


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    return randomize_batchnorm(model, torch.Generator().manual_seed(seed), mean_scale=0.3).eval()


class Asymmetric(nn.Module):
    """Inception-like branches: 1x7 / 7x1, dilated grouped 3x3, pool + 1x1, then a (3,5) conv
    with stride (2,1)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a1, self.a2 = nn.Conv2d(8, 8, (1, 7), padding=(0, 3)), nn.Conv2d(8, 8, (7, 1), padding=(3, 0))
        self.b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.c = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(8, 4, 1))
        self.head = nn.Conv2d(20, 6, (3, 5), stride=(2, 1), padding=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        return self.head(torch.relu(torch.cat([self.a2(self.a1(x)), self.b(x), self.c(x)], dim=1)))


class Grouped(nn.Module):
    """Even kernels, strides, groups, dilation, 'same' (asymmetric for even kernels), 'valid',
    and padding larger than the kernel (output rows that see only padding)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 4, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU6(inplace=True),
            nn.Conv2d(8, 8, 3, padding=3, dilation=3, groups=8),
            nn.Conv2d(8, 8, 4, padding="same", dilation=2),
            nn.Hardswish(),
            nn.Conv2d(8, 8, 2, padding="valid"),
            nn.Conv2d(8, 6, 5, stride=3, padding=4),
            nn.Conv2d(6, 5, 3, padding=5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PadModes(nn.Module):
    """Conv padding modes and explicit F.pad (constant value, reflect, replicate, circular, negative)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 5, padding=2, padding_mode="reflect")
        self.c2 = nn.Conv2d(6, 6, 3, stride=2, padding=1, padding_mode="replicate")
        self.c3 = nn.Conv2d(6, 6, 3, padding=1, padding_mode="circular")
        self.zero = nn.ZeroPad2d((1, 0, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c1(F.pad(x, (1, 2, 3, 0), value=-1.5))
        x = self.c2(F.pad(x, (2, 1, 1, 2), mode="reflect"))
        x = self.c3(F.pad(x, (1, 1, 0, 2), mode="replicate"))
        x = F.pad(self.zero(x), (2, 1, 1, 1), mode="circular")
        return F.pad(x, (-1, 2, 0, -2))


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(n, -1, h, w)


class Shuffle(nn.Module):
    """ShuffleNetV2 unit: chunk along channels, a branch, cat, channel shuffle by view/transpose
    with sizes read from x.size(), and nn.ChannelShuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU())
        self.shuffle = nn.ChannelShuffle(4)
        self.out = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.stem(x).chunk(2, dim=1)
        x = _shuffle(torch.cat((a, self.branch(b)), dim=1), 2)
        return self.out(self.shuffle(x))


class SqueezeExcite(nn.Module):
    """SE gates (adaptive pool → 1x1 convs → hardsigmoid → N×C×1×1 multiply) and a mean gate:
    each needs the whole map, so the region is the whole input; still exact."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.out = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv(x)
        gate = F.hardsigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))
        y = self.out(x * gate)
        return {
            "se": y,
            "mean": y * torch.sigmoid(y.mean((2, 3), keepdim=True)),
            "local": self.conv(torch.ones_like(x[:, :3])),
        }


class Interp(nn.Module):
    """A stride-2 conv, an interpolate with the given arguments, a conv: optionally the
    FPN pattern, where the size comes from a skip connection's shape."""

    def __init__(self, skip: bool = False, **kwargs: object) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.lateral = nn.Conv2d(3, 6, 1)
        self.out = nn.Conv2d(6, 4, 3, padding=1)
        self.skip, self.kwargs = skip, kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.skip:
            lat = self.lateral(x)
            return self.out(lat + F.interpolate(y, size=lat.shape[-2:], **self.kwargs))
        return self.out(F.interpolate(y, **self.kwargs))


class Upsampler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.near = nn.UpsamplingNearest2d(scale_factor=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.near(self.up(self.down(x)))


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, permute to channels-last, LayerNorm + Linear + GELU + Linear, permute
    back, layer scale (a C×1×1 parameter) and residual."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=4)
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(c), nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.gamma * y


class Pools(nn.Module):
    """ceil_mode max/avg pools, count_include_pad both ways, divisor_override, dilated max pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.p1 = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.p2 = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.p3 = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=True)
        self.p4 = nn.MaxPool2d(2, 1, padding=1, dilation=2)
        self.out = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.p3(self.p2(self.p1(self.conv(x))))
        x = F.avg_pool2d(self.p4(x), 3, 1, 1, divisor_override=5)
        return self.out(F.max_pool2d(x, 2, ceil_mode=True))


class Misc(nn.Module):
    """Spatial slicing (a shift), CBAM-style channel reductions, stack, softmax over channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.att = nn.Conv2d(2, 1, 7, padding=3)
        self.out = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)[:, :, 1:-1, 2:]
        att = torch.sigmoid(self.att(torch.cat([x.mean(1, keepdim=True), x.amax(dim=1, keepdim=True)], 1)))
        x = torch.stack([x * att, x.softmax(dim=1)], dim=1).sum(dim=1)
        return self.out(x)


class Adaptive(nn.Module):
    """Adaptive pools to sizes other than 1: a box on their output reads a sub-window."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((5, 7))
        self.out = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv(x)
        return {
            "avg": self.out(self.pool(x)),
            "max": F.adaptive_max_pool2d(x, (9, None)),
            "uniform": F.adaptive_avg_pool2d(x[:, :, :36, :52], (12, 13)),
        }


class Heads(nn.Module):
    """GroupNorm (whole-map statistics: falls back) and a classifier head (no spatial dims)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.out = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.conv(x)
        logits = self.fc(torch.flatten(F.adaptive_avg_pool2d(feat, 1), 1))
        return {"feat": self.out(F.relu(self.gn(feat))), "local": self.out(feat), "logits": logits}


INTERP_CASES = [
    {"scale_factor": 2, "mode": "nearest"},
    {"scale_factor": 1.5, "mode": "nearest"},
    {"scale_factor": 1.7, "mode": "nearest-exact"},
    {"scale_factor": 0.6, "mode": "nearest"},
    {"skip": True, "mode": "nearest"},
    {"scale_factor": 2, "mode": "bilinear", "align_corners": False},
    {"scale_factor": 1.7, "mode": "bilinear", "align_corners": True},
    {"scale_factor": 0.6, "mode": "bilinear", "align_corners": False},
    {"scale_factor": 1.3, "mode": "bilinear", "align_corners": False, "recompute_scale_factor": True},
    {"skip": True, "mode": "bilinear", "align_corners": False},
    {"skip": True, "mode": "bilinear", "align_corners": True},
    {"scale_factor": 0.45, "mode": "area"},
    {"scale_factor": 0.5, "mode": "area"},
]

MODELS = {
    "asymmetric": Asymmetric,
    "grouped": Grouped,
    "pad_modes": PadModes,
    "shuffle": Shuffle,
    "squeeze_excite": SqueezeExcite,
    "upsample_modules": Upsampler,
    "convnext_block": ConvNeXtBlock,
    "pools": Pools,
    "misc": Misc,
    "adaptive": Adaptive,
    "heads": Heads,
    **{f"interp{i}": (lambda kw=kw: Interp(**kw)) for i, kw in enumerate(INTERP_CASES)},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_rule_table_exact_sound_tight_counted(name: str) -> None:
    audit(_randomize(MODELS[name]()), (1, 3, 37, 53))


@pytest.mark.parametrize("name", ["grouped", "pools", "pad_modes", "interp7", "shuffle"])
def test_rule_table_on_a_batch_of_other_odd_size(name: str) -> None:
    audit(_randomize(MODELS[name]()), (2, 3, 64, 41), seed=1)


def test_fallbacks_are_reported_and_cropping_resumes_after_them() -> None:
    model = _randomize(Heads())
    shape = (1, 3, 160, 160)  # maps above the few thousand values PyTorch convolves natively (run whole)
    plan = trace(model, shape, {"feat": (3, 4, 5, 6)})
    assert any("GroupNorm" in f for f in plan.fallbacks)
    assert plan.input_region == (0, 160, 0, 160)  # group statistics read the whole map
    local = trace(model, shape, {"local": (3, 4, 5, 6)})
    assert local.fallbacks == [] and local.macs < local.full_macs / 10


def test_regions_are_per_node_boxes_in_own_coordinates() -> None:
    model = _randomize(Grouped())
    plan = trace(model, (1, 3, 50, 50), {0: (2, 3, 2, 3)})
    assert plan.regions["x"] == plan.input_region
    assert plan.regions[list(plan.regions)[-1]] == (2, 3, 2, 3)
    for name, (y0, y1, x0, x1) in plan.regions.items():
        assert 0 <= y0 < y1 and 0 <= x0 < x1, name


@pytest.mark.parametrize(("factor", "start", "n"), [(2, 0, 7), (2, 1, 6), (3, 2, 8), (1, 4, 5)])
def test_integer_upsampling_crops_copy_the_full_maps_rows(factor: int, start: int, n: int) -> None:
    """A crop of an integer-factor nearest upsampling (FPN's top-down path) is one
    F.interpolate of the source crop, sliced: the same values as the whole map's."""
    from tracenet.rft.rules.resample import _integer_upsampling

    x = torch.randn(1, 4, 9, 11).contiguous(memory_format=torch.channels_last)
    full = F.interpolate(x, scale_factor=factor, mode="nearest")
    rows = torch.arange(start, start + n) // factor
    cols = torch.arange(start + 1, start + 1 + n) // factor
    y0, x0 = int(rows[0]), int(cols[0])
    up = _integer_upsampling((rows - y0, cols - x0), (int(rows[-1]) + 1 - y0, int(cols[-1]) + 1 - x0))
    crop = x[..., y0 : int(rows[-1]) + 1, x0 : int(cols[-1]) + 1]
    assert up is not None
    assert torch.equal(up(crop), full[..., start : start + n, start + 1 : start + 1 + n])


def test_other_nearest_patterns_keep_the_gather() -> None:
    from tracenet.rft.rules.resample import _integer_upsampling

    rows = (torch.arange(10) * 2) // 3  # a 1.5x upsampling: rows copied once or twice
    assert _integer_upsampling((rows, rows), (int(rows[-1]) + 1,) * 2) is None
