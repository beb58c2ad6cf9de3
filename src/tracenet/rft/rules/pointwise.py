"""Ops where each output position reads only the same position of its inputs: activations,
eval-mode BatchNorm, element-wise arithmetic with broadcasting (incl. N×C×1×1 gates), and
ops acting along non-spatial dims only (Linear / LayerNorm / softmax over channels)."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from tracenet.rft.boxes import Box
from tracenet.rft.rules.base import (
    WHOLE,
    Call,
    Facts,
    Need,
    NoRule,
    Op,
    SDims,
    constant_args,
    in_place_call,
    may_overwrite,
)

_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign,
    nn.Tanhshrink, nn.Threshold, nn.LogSigmoid, nn.Identity, nn.Dropout, nn.Dropout2d,
    nn.AlphaDropout, nn.ChannelShuffle, nn.Softmax2d,
)  # fmt: skip

_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.sigmoid, F.tanh, F.softplus, F.softsign, F.logsigmoid,
    F.dropout, F.dropout2d, F.channel_shuffle, torch.channel_shuffle, torch.relu, torch.sigmoid,
    torch.tanh, torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.abs, torch.neg, torch.erf,
    torch.add, torch.sub, torch.mul, torch.div, torch.true_divide, torch.maximum, torch.minimum,
    torch.pow, torch.clamp, torch.clip, torch.where, torch.lerp, torch.square, torch.reciprocal,
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow,
    operator.iadd, operator.isub, operator.imul, operator.itruediv,
}  # fmt: skip

_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "log", "sqrt", "rsqrt", "abs",
    "neg", "pow", "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "clamp", "clamp_",
    "clamp_min", "clamp_min_", "clamp_max", "clip", "masked_fill", "where", "square", "reciprocal",
    "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type", "type_as",
    "lerp", "maximum", "minimum", "__add__", "__mul__", "__sub__", "__truediv__", "__radd__",
    "__rmul__", "__rsub__", "__rtruediv__",
}  # fmt: skip

_ONLY_SELF = {"to", "type", "type_as"}  # a tensor argument there gives a dtype, not data

# Ops whose (out-of-place) result is always a new tensor: arithmetic and activations.
_FRESH_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
    operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, F.relu, torch.relu,
}  # fmt: skip
_FRESH_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh)


class Pointwise(Op):
    """Element-wise with NumPy broadcasting: output position p reads the broadcast-aligned
    position of every input (index 0 along a dim where that input has size 1)."""

    kind = "pointwise"

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        if node not in facts.shapes:
            raise NoRule("element-wise op without a tensor output")
        self.out_shape = facts.shapes[node]
        self.broadcast = self.inputs
        if node.op == "call_method" and node.target in _ONLY_SELF:
            self.broadcast = self.inputs[:1]
        found = set()
        for p in self.broadcast:
            dims, shape = facts.sdims.get(p), facts.shapes.get(p)
            if dims is None or shape is None:
                continue
            off = len(self.out_shape) - len(shape)
            aligned = (dims[0] + off, dims[1] + off)
            if all(shape[d] == self.out_shape[a] for d, a in zip(dims, aligned, strict=True)):
                found.add(aligned)
        if len(found) > 1:
            raise NoRule(f"inputs disagree on the spatial dims ({sorted(found)})")
        self.sdims = found.pop() if found else None
        if node.op == "call_module":
            self.fresh = type(facts.module(node.target)) in _FRESH_MODULES
        else:
            self.fresh = node.op == "call_function" and node.target in _FRESH_FUNCTIONS
        self._overwrites = may_overwrite(node, facts)

    def in_place(self) -> Call | None:
        if not self._overwrites:
            return None
        if not hasattr(self, "_in_place"):
            self._in_place = in_place_call(self.node, self.facts)
        return self._in_place

    def out_sdims(self) -> SDims | None:
        return self.sdims

    def needs(self, box: Box | None) -> dict[fx.Node, Need]:
        out = dict.fromkeys(self.inputs, WHOLE)
        if box is None or self.sdims is None:
            return out
        nd = len(self.out_shape)
        for p in self.broadcast:
            shape = self.facts.shapes.get(p)
            if shape is None:
                continue
            off = nd - len(shape)
            dims = tuple(d - off if d - off >= 0 else None for d in self.sdims)
            if dims == (None, None):
                continue
            ranges = []
            for d, (a, b) in zip(dims, ((box[0], box[1]), (box[2], box[3])), strict=True):
                ranges.extend((0, 1) if d is not None and shape[d] == 1 else (a, b))
            out[p] = Need(dims, tuple(ranges))  # type: ignore[arg-type]
        return out


class Channelwise(Op):
    """An op acting along non-spatial dims only (Linear on the last dim, LayerNorm over
    trailing channel dims, softmax over channels, eval BatchNorm): crop-in, crop-out."""

    kind = "channelwise"
    fresh = True

    def __init__(self, node: fx.Node, facts: Facts, touched: tuple[int, ...]) -> None:
        super().__init__(node, facts)
        self.source = node.args[0] if node.args else next(iter(node.kwargs.values()))
        dims = facts.sdims.get(self.source)
        nd = len(facts.shapes.get(self.source, ()))
        if dims is None or (facts.shapes.get(node, ()) and len(facts.shapes[node]) != nd):
            raise NoRule("channel-wise op on a tensor without spatial dims")
        if {d % nd for d in touched} & set(dims):
            raise NoRule(f"op reduces over spatial dims {touched}")
        self.sdims = dims

    def out_sdims(self) -> SDims | None:
        return self.sdims

    def needs(self, box: Box | None) -> dict[fx.Node, Need]:
        out = dict.fromkeys(self.inputs, WHOLE)
        if box is not None:
            out[self.source] = Need(self.sdims, box)
        return out


def _batchnorm_uses_batch_stats(m: nn.Module) -> bool:
    return m.training or not m.track_running_stats or m.running_mean is None


def _channel_touched(node: fx.Node, facts: Facts) -> tuple[int, ...] | None:
    """Dims a channel-wise op works along, or None when the node is not such an op."""
    args, kwargs = constant_args(node, facts)
    if node.op == "call_module":
        m = facts.module(node.target)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if _batchnorm_uses_batch_stats(m):
                raise NoRule("BatchNorm using batch statistics (training mode)")
            return (1,)
        if isinstance(m, nn.Linear):
            return (-1,)
        if isinstance(m, nn.LayerNorm):
            return tuple(range(-len(m.normalized_shape), 0))
        if isinstance(m, (nn.Softmax, nn.LogSoftmax)) and m.dim is not None:
            return (m.dim,)
        return None
    if node.op == "call_function":
        if node.target is F.linear:
            return (-1,)
        if node.target is F.layer_norm:
            shape = kwargs.get("normalized_shape", args[1] if len(args) > 1 else None)
            return tuple(range(-len(shape), 0))
        if node.target is F.batch_norm:
            if kwargs.get("training", args[5] if len(args) > 5 else False):
                raise NoRule("batch_norm in training mode")
            return (1,)
        if node.target in (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            return None if dim is None else (dim,)
        return None
    if node.op == "call_method" and node.target in ("softmax", "log_softmax"):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        return None if dim is None else (dim,)
    return None


def bind_pointwise(node: fx.Node, facts: Facts) -> Op | None:
    touched = _channel_touched(node, facts)
    if touched is not None:
        return Channelwise(node, facts, touched)
    if node.op == "call_module" and isinstance(facts.module(node.target), _MODULES):
        return Pointwise(node, facts)
    if node.op == "call_function" and node.target in _FUNCTIONS:
        return Pointwise(node, facts)
    if node.op == "call_method" and node.target in _METHODS:
        return Pointwise(node, facts)
    return None


__all__ = ["Channelwise", "Pointwise", "bind_pointwise"]
