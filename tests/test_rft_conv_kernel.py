"""Cropped convolutions run the full forward's kernel: trace equals full bit for bit on the
layer shapes where oneDNN's loops depend on the crop's shape (deep 3x3 convs, predictors with
few output channels), on one thread and several, and MACs stay counted."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tracenet.rft import trace
from tracenet.rft.rules import conv_kernel
from tracenet.rft.verify import counted_macs

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="the kernel choice mirrored here is oneDNN's"
)


class DeepHead(nn.Module):
    """A 512-channel 3x3 conv (oneDNN sums narrow outputs in another order) feeding a 1-channel
    predictor (blocking across rows) and a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.deep = nn.Conv2d(512, 512, 3, padding=1)
        self.pred = nn.Conv2d(512, 1, 3, padding=1)
        self.mix = nn.Conv2d(512, 64, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = torch.relu(self.deep(x))
        return {"pred": self.pred(y), "mix": self.mix(y)}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return DeepHead().eval().to(memory_format=torch.channels_last)


SHAPE = (1, 512, 25, 42)
TARGETS = [
    {"pred": (0, 1, 0, 1), "mix": (3, 4, 40, 42)},  # corner cells
    {"pred": (12, 13, 20, 21), "mix": (10, 15, 5, 9)},  # inside, narrow
    {"pred": (24, 25, 41, 42)},
]


@pytest.mark.parametrize("threads", [1, 2])
def test_crops_match_the_full_forward_bit_for_bit(model, threads: int) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(SHAPE).contiguous(memory_format=torch.channels_last) * 4
        with torch.no_grad():
            full = model(x)
            for targets in TARGETS:
                out = trace(model, SHAPE, targets).run(x)
                for key, (y0, y1, x0, x1) in targets.items():
                    assert torch.equal(out[key], full[key][..., y0:y1, x0:x1]), (threads, key)
    finally:
        torch.set_num_threads(before)


def test_plain_f_conv2d_crops_would_not_match(model) -> None:
    """The check above can fail: a narrow crop through F.conv2d rounds differently."""
    x = torch.randn(SHAPE).contiguous(memory_format=torch.channels_last) * 4
    with torch.no_grad():
        full = model.deep(x)
        crop = F.conv2d(F.pad(x[..., :4, :4], (1, 0, 1, 0)), model.deep.weight, model.deep.bias)
    assert not torch.equal(crop[..., :3, :3], full[..., :3, :3])


def test_macs_count_the_padded_runs(model) -> None:
    x = torch.randn(SHAPE).contiguous(memory_format=torch.channels_last)
    for targets in TARGETS:
        plan = trace(model, SHAPE, targets)
        assert plan.macs == counted_macs(lambda plan=plan: plan.run(x))
        assert plan.macs < plan.full_macs


@pytest.mark.parametrize(
    ("in_shape", "kernel", "strided", "threads", "onednn"),
    [
        ((1, 256, 7, 11), (3, 3), False, 2, False),  # 19712 values: ATen's native kernel
        ((1, 256, 8, 11), (3, 3), False, 2, True),
        ((1, 256, 8, 11), (1, 1), False, 1, False),  # 1x1 on one thread: native
        ((1, 256, 8, 11), (1, 1), True, 1, True),
        ((1, 3, 4, 4), (7, 7), True, 1, True),  # large kernels always go to oneDNN
    ],
)
def test_kernel_choice_mirrors_aten(in_shape, kernel, strided, threads, onednn) -> None:
    assert conv_kernel.onednn_in_full(in_shape, kernel, strided, False, 1, threads) is onednn
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        x = torch.randn(in_shape)
        w = torch.randn(64, in_shape[1], *kernel)
        stride, pad = (2, 2) if strided else (1, 1), (kernel[0] // 2, kernel[1] // 2)
        with torch.no_grad():
            aten = F.conv2d(x, w, None, stride, pad)
            ours = conv_kernel.convolve(x, w, None, stride, pad, (1, 1), 1, in_shape)
            other = (
                torch._C._nn.thnn_conv2d(x, w, kernel, None, stride, pad)
                if onednn
                else torch.ops.aten.mkldnn_convolution(x, w, None, pad, stride, (1, 1), 1)
            )
    finally:
        torch.set_num_threads(before)
    assert torch.equal(ours, aten)
    if torch.equal(other, aten):  # CPU-dependent: all of these differ on AMD EPYC, not all on Xeons
        pytest.skip("both kernels round alike here on this CPU: the choice cannot be told apart")
