"""Adaptive average / max pooling: output row i pools input rows
[floor(i*H/OH), ceil((i+1)*H/OH)) (PyTorch's start/end index), so a box on the output reads
a sub-window of the input, not the whole map. Pooling is separable (rows, then columns), and
each axis is pooled with a strided pool when its windows are uniform, else window by window.
F.interpolate(mode="area") is adaptive average pooling to the output size, so it is one too."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from tracenet.rft.boxes import Box
from tracenet.rft.rules.base import WHOLE, Call, Facts, Need, NoRule, Op, SDims, constant_args

_AVG = (nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d)
_MAX = (nn.AdaptiveMaxPool2d, F.adaptive_max_pool2d)


def _start(i: int, size: int, out: int) -> int:
    return (i * size) // out


def _end(i: int, size: int, out: int) -> int:
    return ((i + 1) * size + out - 1) // out


class AdaptivePool(Op):
    kind = "adaptive_pool2d"

    def __init__(self, node: fx.Node, facts: Facts, is_max: bool) -> None:
        super().__init__(node, facts)
        if node.op == "call_module":
            if getattr(facts.module(node.target), "return_indices", False):
                raise NoRule("adaptive max pool returning indices")
        elif is_max:
            args, kwargs = constant_args(node, facts)
            if kwargs.get("return_indices", args[2] if len(args) > 2 else False):
                raise NoRule("adaptive max pool returning indices")
        self.source = node.args[0] if node.args else node.kwargs["input"]
        shape_in, shape_out = facts.shapes.get(self.source, ()), facts.shapes.get(node, ())
        if len(shape_in) != 4 or len(shape_out) != 4:
            raise NoRule("adaptive pool rule covers 4-D NCHW tensors only")
        self.sizes = tuple(zip(shape_in[2:], shape_out[2:], strict=True))  # (in, out) per axis
        self.is_max = is_max

    def out_sdims(self) -> SDims | None:
        return (2, 3)

    def _range(self, axis: int, a: int, b: int) -> tuple[int, int]:
        n, m = self.sizes[axis]
        return _start(a, n, m), _end(b - 1, n, m)

    def needs(self, box: Box | None) -> dict[fx.Node, Need]:
        assert box is not None
        out = dict.fromkeys(self.inputs, WHOLE)
        out[self.source] = Need((2, 3), (*self._range(0, box[0], box[1]), *self._range(1, box[2], box[3])))
        return out

    def _axis(self, axis: int, a: int, b: int) -> Callable[[torch.Tensor], torch.Tensor]:
        n, m = self.sizes[axis]
        dim, r0 = 2 + axis, _start(a, n, m)
        if n == m:
            return lambda x: x
        if n % m == 0:
            k = (n // m, 1) if axis == 0 else (1, n // m)
            pool = F.max_pool2d if self.is_max else F.avg_pool2d
            return lambda x: pool(x, k, k)
        windows = [(_start(i, n, m) - r0, _end(i, n, m) - _start(i, n, m)) for i in range(a, b)]
        if self.is_max:
            return lambda x: torch.cat(
                [x.narrow(dim, s, length).amax(dim, keepdim=True) for s, length in windows], dim
            )
        return lambda x: torch.cat(
            [x.narrow(dim, s, length).mean(dim, keepdim=True) for s, length in windows], dim
        )

    def build(self, box: Box | None) -> Call:
        assert box is not None
        rows, cols, source = self._axis(0, box[0], box[1]), self._axis(1, box[2], box[3]), self.source

        def call(env: Mapping[fx.Node, Any]) -> Any:
            return cols(rows(env[source]))

        return call


def bind_adaptive(node: fx.Node, facts: Facts) -> Op | None:
    if node.op == "call_module":
        m = facts.module(node.target)
        if isinstance(m, (_AVG[0], _MAX[0])):
            return AdaptivePool(node, facts, isinstance(m, _MAX[0]))
        return None
    if node.op == "call_function" and node.target in _AVG[1:] + _MAX[1:]:
        return AdaptivePool(node, facts, node.target in _MAX[1:])
    return None
