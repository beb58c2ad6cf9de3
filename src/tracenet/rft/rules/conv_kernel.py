"""Which convolution kernel the full forward runs, so that a crop runs the same one.

Exact means the crop adds the same products in the same order as the full forward. On the CPU,
PyTorch picks oneDNN or its native im2col + GEMM kernel per call, from the input's size, the
kernel and the thread count; inside, both libraries pick loops by the output's shape. Measured
(torch 2.14; tests/test_rft_conv_kernel.py): on an AMD EPYC, oneDNN sums a 3x3 convolution with
256-512 channels in another order for outputs up to 13 wide than for wider ones, one with 1-4
output channels up to 54 wide; on an AVX-512 Xeon, GEMM sums a 1x1 one of fewer than 16 pixels
otherwise, and with 1 thread otherwise than with 2. Float32 noise of 1e-7 grows to 1e-4 at a
deep network's heads. So a cropped convolution (1) calls the kernel the full forward called on
the whole map (ATen's own rule, mirrored here) in the same memory layout, (2) is at least as
wide as the narrowest run that matches the full map bit for bit (probed once per layer and map
width, see `min_width`; a narrower crop runs padded with zeros), and (3) where no width does
(kernels that block across rows; the native GEMM on tiny maps, whose rounding follows its
output count), runs on the whole input's shape with zeros outside the crop: the full forward's
very call. Native convolutions also run at the full forward's thread count
(rules.window.Conv.thread_bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils import flop_counter

from tracenet.rft.rules.width_store import WidthStore, store_key
from tracenet.rft.threads import ambient_threads

NATIVE_MAX_NUMEL = 20480  # ATen: a single image up to this size skips oneDNN (small 3x3 kernels)


def onednn_in_full(
    in_shape: Sequence[int], kernel: Sequence[int], strided: bool, dilated: bool, groups: int, threads: int
) -> bool:
    """ATen's choice for a float32 CPU convolution of an input of `in_shape` (its use_mkldnn)."""
    n = in_shape[0]
    one_by_one = tuple(kernel) == (1, 1)
    if not (strided or dilated or n >= 16 or not one_by_one or threads > 1):
        return False  # 1x1 on one thread: the native GEMM is faster
    big_kernel = kernel[0] > 3 and kernel[1] > 3
    return groups > 1 or big_kernel or n > 1 or math.prod(in_shape) > NATIVE_MAX_NUMEL


def tiny_native(in_shape: Sequence[int], layer: Layer) -> bool:
    """Whether the full forward runs the native kernel on this map because it is tiny."""
    return not layer.onednn and math.prod(in_shape) <= NATIVE_MAX_NUMEL


@dataclass(frozen=True)
class Layer:
    """A convolution's shape, as the kernel choice sees it."""

    in_channels: int
    weight_shape: tuple[int, int, int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    channels_last: bool
    onednn: bool  # the kernel ATen picks (see onednn_in_full)
    threads: int  # the count the full forward and its crops run at: both kernels' sums can follow it


CANVAS = 0
"""`min_width`'s answer where no crop is safe: run on the whole input's shape, zero outside the
crop, so every output keeps its place in the kernel's blocking."""

_PROBED: dict[tuple[Layer, int, int, int], int] = {}
_FOUND: dict[Layer, int] = {}  # the latest answer per layer, at whatever map size
_STORE = WidthStore()


def min_width(layer: Layer, in_shape: Sequence[int], out_size: tuple[int, int]) -> int:
    """The narrowest run (output columns) of this layer whose values match the full map's bit
    for bit on the CPU (a narrower crop runs padded with zeros to it), or CANVAS. Probed once
    per layer and map width (oneDNN's loops follow the output's width; the native GEMM's, the
    map's pixel count, so there the height counts too). At a new size the answer found at
    another one is tried first: confirmed by a few runs, it saves most of a probe's. Answers
    are kept on disk for later processes on the same machine and build (width_store.py)."""
    key = (layer, _probe_rows(layer, out_size), in_shape[3], out_size[1])
    if key not in _PROBED:
        stored = _STORE.get(store_key(*key))  # probed by an earlier process on this machine
        if stored is None:
            stored = _probe(layer, in_shape, out_size, _FOUND.get(layer))
            _STORE.put(store_key(*key), stored)
        _PROBED[key] = _FOUND[layer] = stored
    return _PROBED[key]


def _probe_rows(layer: Layer, out_size: tuple[int, int]) -> int:
    """Output rows a probe computes: two for oneDNN (rows run alike), all for the native GEMM."""
    return min(out_size[0], 2) if layer.onednn else out_size[0]


def _probe(layer: Layer, in_shape: Sequence[int], out_size: tuple[int, int], hint: int | None = None) -> int:
    """On random data, a strip of the map's full width: the narrowest padded run matching it at
    the left border and mid-map, for one column and for a run that is all real, on single rows
    and the whole strip (a binary search on single rows unless one column already matches);
    checked on a few wider runs, all real: only runs at the answer's width are ever padded.
    CANVAS when even whole-width rows differ or the check fails. A `hint` (the answer at
    another map size) is kept if single rows confirm it and an all-real run halfway to the
    full width."""
    fmt = torch.channels_last if layer.channels_last else torch.contiguous_format
    (ky, kx), (sy, sx), (dy, dx) = layer.weight_shape[2:], layer.stride, layer.dilation
    px, (ey, ex) = layer.padding[1], (dy * (ky - 1) + 1, dx * (kx - 1) + 1)
    out_width, width = out_size[1], in_shape[3]
    shape = (in_shape[0], layer.in_channels, in_shape[2], width)

    def conv(t: torch.Tensor, pad: int) -> torch.Tensor:
        return convolve(t, weight, None, layer.stride, (0, pad), layer.dilation, layer.groups, shape)

    def strip_of(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random weights and a random input strip for `rows` output rows at the map's width."""
        w, x = _noise(layer.weight_shape, (1, layer.in_channels, (rows - 1) * sy + ey, width))
        return w.contiguous(memory_format=fmt), x.contiguous(memory_format=fmt)

    def exact(run: int, strips: bool = True, padded: bool = True) -> bool:
        """Runs `run` wide match the strip's output, all real and (`padded`) one real column
        padded to the run. Every run of one width has the same call shape (values do not change
        a kernel's order of operations), so the row sets, which check how the kernel handles
        several rows, run once per width: on the all-real run."""
        for real in {1, run} if padded else {run}:
            for a in {0, (out_width - real) // 2}:
                row_sets = (
                    {(0, 1), (strip - 1, 1), (0, strip)} if strips and real == run and a == 0 else {(0, 1)}
                )
                for y0, h in row_sets:
                    rows = x[..., y0 * sy : (y0 + h - 1) * sy + ey, :]
                    lo, hi = a * sx - px, (a + real - 1) * sx - px + ex
                    crop = rows[..., max(lo, 0) : min(hi, width)]
                    crop = F.pad(crop, (max(-lo, 0), max(hi - width, 0) + (run - real) * sx))
                    if not torch.equal(conv(crop, 0)[..., :real], full[..., y0 : y0 + h, a : a + real]):
                        return False
        return True

    with torch.no_grad():
        if hint and hint < out_width:  # checked on single rows: one row of reference is enough
            strip = 1
            weight, x = strip_of(strip)
            full = conv(x, px)
            if exact(hint, strips=False) and exact((hint + out_width) // 2, strips=False, padded=False):
                return hint
        strip = _probe_rows(layer, out_size)
        weight, x = strip_of(strip)
        full = conv(x, px)
        if not exact(out_width, padded=False):
            return CANVAS
        if exact(1) and exact(max(out_width // 2, 1), strips=False, padded=False):  # rows: checked above
            return 1  # most layers: any crop
        lo, hi = 1, out_width
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if exact(mid, strips=False) else (mid + 1, hi)
        if all(
            exact(w, padded=w == lo) for w in {lo, lo + 1, 2 * lo, (lo + out_width) // 2} if w <= out_width
        ):
            return lo
    return CANVAS


_NOISE = torch.empty(0)


def _noise(*shapes: Sequence[int]) -> list[torch.Tensor]:
    """Gaussian tensors of these shapes, disjoint slices of one pool drawn once per process (a
    probe's 2.4M-value weight alone took 6 ms to draw; the values need only be generic)."""
    global _NOISE
    sizes = [math.prod(s) for s in shapes]
    if _NOISE.numel() < sum(sizes):
        _NOISE = torch.randn(max(sum(sizes), 2 * _NOISE.numel()), generator=torch.Generator().manual_seed(0))
    return [t.view(tuple(s)) for t, s in zip(_NOISE[: sum(sizes)].split(sizes), shapes, strict=True)]


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.shape[1] > 1 and t.stride(1) == 1 and not t.is_contiguous()


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """The layout a (possibly sliced) tensor's strides follow."""
    return torch.channels_last if _channels_last(t) else torch.contiguous_format


def convolve(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    full_in_shape: Sequence[int],
) -> torch.Tensor:
    """F.conv2d on `x`, through the kernel the full forward used on `full_in_shape`."""
    if (
        x.device.type != "cpu"
        or x.dtype != torch.float32
        or weight.dtype != torch.float32
        or not torch.backends.mkldnn.is_available()
        or not torch.backends.mkldnn.enabled
    ):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    fmt = torch.channels_last if _channels_last(x) or _channels_last(weight) else torch.contiguous_format
    x, weight = x.contiguous(memory_format=fmt), weight.contiguous(memory_format=fmt)
    kernel = weight.shape[2:]
    strided, dilated = stride != (1, 1), dilation != (1, 1)
    if onednn_in_full(full_in_shape, kernel, strided, dilated, groups, ambient_threads()):
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, padding, stride, dilation, groups)
    if groups == 1 and not dilated:  # ATen's native kernel, which a larger crop would not get
        return torch._C._nn.thnn_conv2d(x, weight, kernel, bias, stride, padding)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _register_macs() -> None:
    """FlopCounterMode counts aten.convolution, but not the oneDNN op called directly, and its
    formula for the native op reads that op's arguments wrongly (a TypeError): give it both,
    so MACs measured around a plan's run include the convolutions it runs this way."""
    aten = torch.ops.aten

    def macs(x_shape, w_shape, *_, out_shape, **__) -> int:
        return flop_counter.conv_flop_count(x_shape, w_shape, out_shape)

    formula = flop_counter.shape_wrapper(macs)
    for op in (aten.mkldnn_convolution, aten._slow_conv2d_forward):
        flop_counter.flop_registry[op] = formula


_register_macs()
