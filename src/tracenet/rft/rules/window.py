"""Sliding-window ops (Conv2d, MaxPool2d, AvgPool2d, F.pad): AutoCrop + AutoPad.

Output row i reads padded input rows [i*s - p, i*s - p + e) with e = dilation*(k-1)+1. For an
output range we read the real rows that window touches (for reflect/replicate/circular
padding: the rows the padding copies), rebuild the padding explicitly only where the window
crosses the true border, and run the op with padding=0: every output value sees exactly the
operands it sees in the full forward.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from tracenet.rft.boxes import Box
from tracenet.rft.rules import conv_kernel
from tracenet.rft.rules.base import WHOLE, Call, Facts, Need, NoRule, Op, SDims, constant_args
from tracenet.rft.threads import ambient_threads


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a window op, in input rows."""

    size: int  # input length
    extent: int  # rows one window spans: dilation*(kernel-1)+1
    stride: int
    before: int  # padding before row 0 (negative: F.pad cropping)
    mode: str  # constant | reflect | replicate | circular

    def window(self, a: int, b: int) -> tuple[int, int]:
        """Padded-input rows [lo, hi) that output rows [a, b) read (lo may be < 0, hi > size)."""
        return a * self.stride - self.before, (b - 1) * self.stride - self.before + self.extent

    def sources(self, lo: int, hi: int) -> torch.Tensor | None:
        """Real row feeding each window row (non-constant modes), None for constant padding."""
        if self.mode == "constant":
            return None
        j = torch.arange(lo, hi)
        n = self.size
        if self.mode == "reflect":
            j = j.abs()
            return torch.where(j >= n, 2 * (n - 1) - j, j)
        if self.mode == "replicate":
            return j.clamp(0, n - 1)
        return j.remainder(n)  # circular

    def read(self, lo: int, hi: int) -> tuple[int, int]:
        """Real rows [r0, r1) the window [lo, hi) needs; never empty (a border row if none)."""
        src = self.sources(lo, hi)
        if src is not None:
            return int(src.min()), int(src.max()) + 1
        r0, r1 = max(lo, 0), min(hi, self.size)
        if r0 >= r1:  # the window lies entirely in the padding: read one border row, use none of it
            r0 = min(max(lo, 0), self.size - 1)
            return r0, r0 + 1
        return r0, r1


@dataclass(frozen=True)
class AxisCut:
    """How to turn the real rows [r0, r1) into the padded window along one axis."""

    take: tuple[int, int]  # narrow(start, length) within the read rows
    pad: tuple[int, int]  # constant rows to add before / after
    index: torch.Tensor | None  # or: gather these rows (non-constant padding)


def _cut(axis: Axis, lo: int, hi: int) -> AxisCut:
    r0, r1 = axis.read(lo, hi)
    src = axis.sources(lo, hi)
    if src is not None:
        interior = lo >= 0 and hi <= axis.size
        return AxisCut((0, r1 - r0), (0, 0), None if interior else src - r0)
    if hi <= 0 or lo >= axis.size:  # nothing real in the window
        return AxisCut((0, 0), (hi - lo, 0), None)
    return AxisCut((0, r1 - r0), (r0 - lo, hi - r1), None)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1])) if len(v) in (1, 2) else _bad(v)
    return int(v), int(v)


def _bad(v: Any) -> tuple[int, int]:
    raise NoRule(f"expected one or two ints, got {v!r}")


def _bind(spec: Any, node: fx.Node, facts: Facts) -> dict[str, Any]:
    args, kwargs = constant_args(node, facts)
    bound = inspect.signature(spec).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _conv_spec(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1): ...
def _max_spec(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
): ...
def _avg_spec(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
): ...
def _pad_spec(input, pad, mode="constant", value=None): ...


class Window(Op):
    """Base of the window ops: subclasses set self.axes, self.fill and implement apply()."""

    kind = "window"
    axes: tuple[Axis, Axis]
    fill: float = 0.0

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        self.source = node.args[0] if node.args else node.kwargs.get("input")
        if not isinstance(self.source, fx.Node) or not facts.is_data(self.source):
            raise NoRule("window op without a tensor input")
        shape = facts.shapes.get(self.source)
        if shape is None or len(shape) != 4 or len(facts.shapes.get(node, ())) != 4:
            raise NoRule("window rules cover 4-D NCHW tensors only")
        self.in_shape = shape

    def _axes(
        self, extent: tuple[int, int], stride: tuple[int, int], before: tuple[int, int], mode: str
    ) -> None:
        if mode not in ("constant", "reflect", "replicate", "circular"):
            raise NoRule(f"padding mode {mode!r}")
        h, w = self.in_shape[2:]
        self.axes = (
            Axis(h, extent[0], stride[0], before[0], mode),
            Axis(w, extent[1], stride[1], before[1], mode),
        )

    def out_sdims(self) -> SDims | None:
        return (2, 3)

    def _windows(self, box: Box) -> tuple[tuple[int, int], tuple[int, int]]:
        return self.axes[0].window(box[0], box[1]), self.axes[1].window(box[2], box[3])

    def needs(self, box: Box | None) -> dict[fx.Node, Need]:
        if box is None:
            raise NoRule("window op asked for a whole output without spatial dims")
        (ylo, yhi), (xlo, xhi) = self._windows(box)
        ry, rx = self.axes[0].read(ylo, yhi), self.axes[1].read(xlo, xhi)
        out = dict.fromkeys(self.inputs, WHOLE)
        out[self.source] = Need((2, 3), (*ry, *rx))
        return out

    def build(self, box: Box | None) -> Call:
        assert box is not None
        (ylo, yhi), (xlo, xhi) = self._windows(box)
        cy, cx = _cut(self.axes[0], ylo, yhi), _cut(self.axes[1], xlo, xhi)
        apply, source, fill = self.applier(box), self.source, self.fill
        pads = (*cx.pad, *cy.pad)
        narrow = (cy.take, cx.take)

        def call(env: Mapping[fx.Node, Any]) -> Any:
            x = env[source]
            if narrow[0][1] != x.shape[2]:
                x = x.narrow(2, *narrow[0])
            if narrow[1][1] != x.shape[3]:
                x = x.narrow(3, *narrow[1])
            if cy.index is not None:
                x = x.index_select(2, cy.index.to(x.device))
            if cx.index is not None:
                x = x.index_select(3, cx.index.to(x.device))
            if any(pads):
                x = F.pad(x, pads, value=fill)
            return apply(x, env)

        return call

    def applier(self, box: Box) -> Any:
        raise NotImplementedError


class Conv(Window):
    """A convolution on a crop, through the same kernel as the full forward (see conv_kernel)."""

    kind = "conv2d"
    fresh = True

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        if node.op == "call_module":
            m = facts.module(node.target)
            k, s, d, p, g = m.kernel_size, m.stride, m.dilation, m.padding, m.groups
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            self.params = lambda env: (m.weight, m.bias)
            self.module, self.weight_shape = m, tuple(m.weight.shape)
        else:
            a = _bind(_conv_spec, node, facts)
            weight, bias = a["weight"], a["bias"]
            k, s, d, p, g = facts.shapes[weight][2:], a["stride"], a["dilation"], a["padding"], a["groups"]
            mode = "constant"
            self.params = lambda env: (env[weight], env[bias] if isinstance(bias, fx.Node) else bias)
            self.module, self.weight_shape = None, tuple(facts.shapes[weight])
        k, s, d = _pair(k), _pair(s), _pair(d)
        extent = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
        if p == "valid":
            p = (0, 0)
        elif p == "same":
            p = ((extent[0] - 1) // 2, (extent[1] - 1) // 2)
        self._axes(extent, s, _pair(p), mode)
        self.stride, self.dilation, self.groups = s, d, g
        self._layers: dict[tuple[int, tuple[int, ...] | None], conv_kernel.Layer] = {}
        # The convolution call the full forward makes: zero padding inside the kernel, or (other
        # modes) the module's own padding of the input first, then none.
        n, c, h, w = self.in_shape
        (py, px) = _pair(p)
        if mode == "constant":
            self.call_shape, self.call_padding = self.in_shape, (py, px)
        else:
            self.call_shape, self.call_padding = (n, c, h + 2 * py, w + 2 * px), (0, 0)

    def _width(self) -> int:
        """The narrowest exact run (output columns), or conv_kernel.CANVAS. A map so small that
        the full forward runs ATen's native kernel (a few thousand values: P7 at 800×1333,
        every map of a toy model) always runs on a canvas: that GEMM rounds an output
        differently with the number of outputs it computes, so no crop matches it, and the
        whole map is cheap. (The planner computes such a map whole when its inputs are whole.)"""
        layer = self._layer()
        if conv_kernel.tiny_native(self.call_shape, layer):
            return conv_kernel.CANVAS
        return conv_kernel.min_width(layer, self.call_shape, self.facts.hw(self.node))

    def thread_bound(self) -> bool:
        """Both kernels' sums can follow the thread count: ATen's native one (im2col + GEMM)
        splits a 3×3 convolution's sums differently on one thread than on two, and oneDNN a
        1-channel predictor's on a crop of a few cells (both measured on AVX-512 Xeons). So a
        crop runs at the count its width was probed at: the full forward's."""
        return True

    def _layer(self) -> conv_kernel.Layer:
        """The kernel choice's view of this layer, at the thread count and weight layout now
        (planning asks for it per node and tap; built once per pair)."""
        weight = self.module.weight if self.module is not None else None
        key = (ambient_threads(), None if weight is None else weight.stride())
        if key not in self._layers:
            self._layers[key] = self._layer_at(key[0], weight)
        return self._layers[key]

    def _layer_at(self, threads: int, weight: torch.Tensor | None) -> conv_kernel.Layer:
        return conv_kernel.Layer(
            in_channels=self.in_shape[1],
            weight_shape=self.weight_shape,  # type: ignore[arg-type]
            stride=self.stride,
            dilation=self.dilation,
            padding=self.call_padding,
            groups=self.groups,
            # the layout the full forward convolves in: a k×k weight's, and for a 1×1 weight
            # (whose strides are the same in both) the model's: NHWC weights make NHWC activations
            channels_last=weight is not None
            and (
                conv_kernel.memory_format(weight) == torch.channels_last
                or (self.weight_shape[2:] == (1, 1) and self.facts.channels_last)
            ),
            onednn=conv_kernel.onednn_in_full(
                self.call_shape,
                self.weight_shape[2:],
                self.stride != (1, 1),
                self.dilation != (1, 1),
                self.groups,
                threads,
            ),
            threads=threads,
        )

    def macs(self, box: Box | None, full_macs: int) -> int:
        h, w = self.facts.hw(self.node)
        if box is None or full_macs == 0 or box == (0, h, 0, w):
            return full_macs  # the whole map: the full call, nothing to probe
        width = self._width()
        if width == conv_kernel.CANVAS:
            return full_macs
        return full_macs * (box[1] - box[0]) * max(box[3] - box[2], width) // (h * w)

    def whole(self) -> Call:
        if self.axes[0].mode != "constant":  # the module pads its input itself
            return super().whole()
        if not hasattr(self, "_whole"):
            source, pad, apply = self.source, self.call_padding, self._convolver()
            self._whole = lambda env: apply(env[source], env, pad)
        return self._whole

    def applier(self, box: Box) -> Any:
        """A crop narrower than the exact width runs padded with zeros on the right (each output
        value reads only its own window; the extra columns are cut off). CANVAS: the padded
        window is placed where it lies in the full call's input, zeros elsewhere, and the full
        call is made, so every output keeps its place in the kernel's blocking."""
        apply, width = self._convolver(), box[3] - box[2]
        run = self._width()
        if run == conv_kernel.CANVAS:
            return self._canvas(box)
        extra = (max(width, run) - width) * self.stride[1]
        if not extra:
            return lambda x, env: apply(x, env, (0, 0))

        def padded(x: torch.Tensor, env: Mapping[fx.Node, Any]) -> torch.Tensor:
            return _compact(apply(F.pad(x, (0, extra)), env, (0, 0))[..., :width])

        return padded

    def _canvas(self, box: Box) -> Any:
        apply, shape, pad = self._convolver(), self.call_shape, self.call_padding
        (ylo, _), (xlo, _) = self._windows(box)
        # the window's first row and column in the call's input (which starts at -pad)
        oy, ox = ylo + self.axes[0].before - pad[0], xlo + self.axes[1].before - pad[1]

        def call(x: torch.Tensor, env: Mapping[fx.Node, Any]) -> torch.Tensor:
            canvas = x.new_zeros(shape).contiguous(memory_format=conv_kernel.memory_format(x))
            y0, x0 = max(oy, 0), max(ox, 0)
            y1, x1 = min(oy + x.shape[2], shape[2]), min(ox + x.shape[3], shape[3])
            if y1 > y0 and x1 > x0:  # else the window lies in the padding
                canvas[..., y0:y1, x0:x1] = x[..., y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            return _compact(apply(canvas, env, pad)[..., box[0] : box[1], box[2] : box[3]])

        return call

    def _convolver(self) -> Any:
        s, d, g, params, shape = self.stride, self.dilation, self.groups, self.params, self.call_shape

        def apply(x: torch.Tensor, env: Mapping[fx.Node, Any], padding: tuple[int, int]) -> torch.Tensor:
            weight, bias = params(env)
            return conv_kernel.convolve(x, weight, bias, s, padding, d, g, shape)

        return apply


def _compact(t: torch.Tensor) -> torch.Tensor:
    """A sliced result made dense in its layout: pointwise kernels (batch norm) take another,
    differently rounding path on views than on the full forward's dense maps."""
    return t.contiguous(memory_format=conv_kernel.memory_format(t))


class MaxPool(Window):
    kind = "max_pool2d"
    fresh = True
    fill = float("-inf")

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        if node.op == "call_module":
            m = facts.module(node.target)
            a = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                 "dilation": m.dilation, "return_indices": m.return_indices}  # fmt: skip
        else:
            a = _bind(_max_spec, node, facts)
        if a["return_indices"]:
            raise NoRule("max pool returning indices")
        k, d = _pair(a["kernel_size"]), _pair(a["dilation"])
        s = _pair(a["stride"]) if a["stride"] not in (None, [], ()) else k
        self.k, self.s, self.d = k, s, d
        self._axes((d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1), s, _pair(a["padding"]), "constant")

    def applier(self, box: Box) -> Any:
        k, s, d = self.k, self.s, self.d
        return lambda x, env: F.max_pool2d(x, k, s, 0, d)


class AvgPool(Window):
    kind = "avg_pool2d"
    fresh = True

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        if node.op == "call_module":
            m = facts.module(node.target)
            a = {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
                 "count_include_pad": m.count_include_pad, "divisor_override": m.divisor_override}  # fmt: skip
        else:
            a = _bind(_avg_spec, node, facts)
        k = _pair(a["kernel_size"])
        s = _pair(a["stride"]) if a["stride"] not in (None, [], ()) else k
        self.k, self.s, self.p = k, s, _pair(a["padding"])
        self.include_pad, self.divisor = bool(a["count_include_pad"]), a["divisor_override"]
        self._axes(k, s, self.p, "constant")

    def _counts(self, axis: int, a: int, b: int) -> torch.Tensor:
        """PyTorch's per-window divisor along one axis (padding counted up to size+pad only)."""
        n, k, s, p = self.in_shape[2 + axis], self.k[axis], self.s[axis], self.p[axis]
        start = torch.arange(a, b) * s - p
        end = (start + k).clamp(max=n + p)
        if self.include_pad:
            return end - start
        return end.clamp(max=n) - start.clamp(min=0)

    def applier(self, box: Box) -> Any:
        k, s = self.k, self.s
        if self.divisor:
            divisor = self.divisor
            return lambda x, env: F.avg_pool2d(x, k, s, 0, divisor_override=divisor)
        counts = self._counts(0, box[0], box[1])[:, None] * self._counts(1, box[2], box[3])[None, :]
        if bool((counts == k[0] * k[1]).all()):
            return lambda x, env: F.avg_pool2d(x, k, s, 0)

        def apply(x: torch.Tensor, env: Mapping[fx.Node, Any]) -> torch.Tensor:
            return F.avg_pool2d(x, k, s, 0, divisor_override=1) / counts.to(x.device, x.dtype)

        return apply


_PAD_MODULES = {
    nn.ZeroPad2d: "constant",
    nn.ConstantPad2d: "constant",
    nn.ReflectionPad2d: "reflect",
    nn.ReplicationPad2d: "replicate",
    nn.CircularPad2d: "circular",
}


class Pad(Window):
    """F.pad / nn.*Pad2d on the two last dims: a window op with a 1x1 kernel."""

    kind = "pad"

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        if node.op == "call_module":
            m = facts.module(node.target)
            pad, mode, value = m.padding, _PAD_MODULES[type(m)], getattr(m, "value", 0.0)
        else:
            a = _bind(_pad_spec, node, facts)
            pad, mode, value = a["pad"], a["mode"], a["value"]
        pad = [int(v) for v in pad]
        if len(pad) % 2 or len(pad) < 2 or any(pad[4:]):
            raise NoRule(f"pad {pad} touches dims other than the last two")
        pad = [*pad, 0, 0][:4]
        self.fill = 0.0 if value is None else float(value)
        self._axes((1, 1), (1, 1), (pad[2], pad[0]), mode)

    def applier(self, box: Box) -> Any:
        return lambda x, env: x


def bind_window(node: fx.Node, facts: Facts) -> Op | None:
    """The window op for this node, or None when the node is not a window op."""
    if node.op == "call_module":
        m = facts.module(node.target)
        if type(m) in _PAD_MODULES:
            return Pad(node, facts)
        for cls, op in ((nn.Conv2d, Conv), (nn.MaxPool2d, MaxPool), (nn.AvgPool2d, AvgPool)):
            if isinstance(m, cls):
                return op(node, facts)
        return None
    if node.op == "call_function":
        if node.target in (F.conv2d, torch.conv2d):
            return Conv(node, facts)
        if node.target in (F.max_pool2d, torch.max_pool2d):
            return MaxPool(node, facts)
        if node.target in (F.avg_pool2d, torch._C._nn.avg_pool2d):
            return AvgPool(node, facts)
        if node.target in (F.pad, torch._C._nn.pad):
            return Pad(node, facts)
    return None
