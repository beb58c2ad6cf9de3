"""Ops that move or group data without mixing spatial positions: reshape/view/flatten that
leave (H, W) intact (channel shuffle), permute/transpose (channels-last blocks), indexing
that keeps or shifts spatial dims, cat/stack/split along non-spatial dims, and reductions
over non-spatial dims."""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import fx, nn

from tracenet.rft.boxes import Box
from tracenet.rft.rules.base import WHOLE, Call, Facts, Need, NoRule, Op, SDims, constant_args


def _source(node: fx.Node) -> fx.Node:
    src = node.args[0] if node.args else next(iter(node.kwargs.values()))
    if not isinstance(src, fx.Node):
        raise NoRule("first argument is not a node")
    return src


class Unary(Op):
    """Base for ops whose output box reads the same-sized box of one input."""

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        self.source = _source(node)
        self.in_dims = facts.sdims.get(self.source)
        if self.in_dims is None:
            raise NoRule("input has no spatial dims")
        self.sdims: SDims | None = self.in_dims

    def out_sdims(self) -> SDims | None:
        return self.sdims

    def needs(self, box: Box | None) -> dict[fx.Node, Need]:
        out = dict.fromkeys(self.inputs, WHOLE)
        if box is not None:
            out[self.source] = Need(self.in_dims, box)
        return out


class Reshape(Unary):
    """A reshape that regroups the dims before (H, W) and those after them independently
    (row-major order keeps every (h, w) block in place); run with H, W set to the crop's."""

    kind = "reshape"

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        shape_in, shape_out = facts.shapes[self.source], facts.shapes.get(node)
        h, w = self.in_dims
        if shape_out is None or w != h + 1:
            raise NoRule("reshape of non-adjacent spatial dims")
        pre, post = math.prod(shape_in[:h]), math.prod(shape_in[h + 2 :])
        for p in range(len(shape_out) - 1):
            if (
                tuple(shape_out[p : p + 2]) == tuple(shape_in[h : h + 2])
                and math.prod(shape_out[:p]) == pre
                and math.prod(shape_out[p + 2 :]) == post
            ):
                self.sdims, self.out_shape = (p, p + 1), list(shape_out)
                return
        raise NoRule(f"reshape {tuple(shape_in)} -> {tuple(shape_out)} mixes spatial dims")

    def build(self, box: Box | None) -> Call:
        shape, source = list(self.out_shape), self.source
        if box is not None:
            assert self.sdims is not None
            shape[self.sdims[0]], shape[self.sdims[1]] = box[1] - box[0], box[3] - box[2]
        return lambda env: env[source].reshape(shape)


class Permute(Unary):
    kind = "permute"

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        nd = len(facts.shapes[self.source])
        args, kwargs = constant_args(node, facts)
        rest = list(args[1:]) or list(kwargs.values())
        if node.target in ("transpose", torch.transpose, "swapaxes", torch.swapaxes):
            a, b = (int(v) % nd for v in rest[:2])
            perm = list(range(nd))
            perm[a], perm[b] = b, a
        else:
            perm = list(rest[0]) if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else list(rest)
            perm = [int(v) % nd for v in perm]
        h, w = self.in_dims
        self.sdims = (perm.index(h), perm.index(w))


class Index(Unary):
    """x[...] with slices, ints and None: spatial dims must be step-1 slices (a shift)."""

    kind = "getitem"

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        shape = facts.shapes[self.source]
        index = constant_args(node, facts)[0][1]
        items = list(index) if isinstance(index, tuple) else [index]
        if any(isinstance(i, (fx.Node, torch.Tensor, list)) for i in items) or items.count(Ellipsis) > 1:
            raise NoRule("advanced indexing")
        if Ellipsis in items:
            e = items.index(Ellipsis)
            used = sum(i is not None for i in items) - 1
            items[e : e + 1] = [slice(None)] * (len(shape) - used)
        items += [slice(None)] * (len(shape) - sum(i is not None for i in items))
        dim_in = dim_out = 0
        starts, out_pos, kept = {}, {}, []
        for item in items:
            if item is None:
                kept.append(None)
                dim_out += 1
                continue
            if dim_in in self.in_dims:
                if not isinstance(item, slice) or item.step not in (None, 1):
                    raise NoRule("spatial dim indexed with an int or a stride")
                starts[dim_in] = item.indices(shape[dim_in])[0]
                out_pos[dim_in] = dim_out
                kept.append(slice(None))
            else:
                kept.append(item)
            dim_in += 1
            dim_out += not isinstance(item, int)
        self.shift = (starts[self.in_dims[0]], starts[self.in_dims[1]])
        self.sdims = (out_pos[self.in_dims[0]], out_pos[self.in_dims[1]])
        self.kept = tuple(kept)

    def needs(self, box: Box | None) -> dict[fx.Node, Need]:
        if box is None:
            return {self.source: WHOLE}
        dy, dx = self.shift
        return {self.source: Need(self.in_dims, (box[0] + dy, box[1] + dy, box[2] + dx, box[3] + dx))}

    def build(self, box: Box | None) -> Call:
        source, kept = self.source, self.kept
        return lambda env: env[source][kept]


class Select(Op):
    """getitem on a tuple of tensors (the result of split/chunk): the element shares the box."""

    kind = "select"

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        self.source = _source(node)
        self.sdims = facts.sdims.get(self.source)

    def out_sdims(self) -> SDims | None:
        return self.sdims

    def needs(self, box: Box | None) -> dict[fx.Node, Need]:
        return {self.source: Need(self.sdims, box) if box is not None else WHOLE}


class Split(Unary):
    """split/chunk along a non-spatial dim: a tuple whose every element has the input's box."""

    kind = "split"

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        args, kwargs = constant_args(node, facts)
        dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
        if int(dim) % len(facts.shapes[self.source]) in self.in_dims:
            raise NoRule("split along a spatial dim")
        if node not in facts.tuple_shapes:
            raise NoRule("split without a tuple of tensors")


def _tensor_list(node: fx.Node) -> tuple[list[fx.Node], int]:
    seq = node.args[0] if node.args else node.kwargs["tensors"]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(seq, (list, tuple)) or not all(isinstance(n, fx.Node) for n in seq):
        raise NoRule("cat/stack of a non-list")
    return list(seq), dim


class Cat(Op):
    """cat along a non-spatial dim (or stack): every input contributes the same box."""

    kind = "cat"

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        self.parts, dim = _tensor_list(node)
        if isinstance(dim, fx.Node):
            dim = facts.consts[dim]
        out_nd = len(facts.shapes[node])
        self.stack = node.target is torch.stack
        dim = int(dim) % out_nd
        found = set()
        for p in self.parts:
            dims = facts.sdims.get(p)
            if dims is not None:
                found.add(tuple(d + (self.stack and d >= dim) for d in dims))
        if len(found) != 1:
            raise NoRule("cat inputs without one agreed pair of spatial dims")
        self.sdims: SDims = found.pop()  # type: ignore[assignment]
        if dim in self.sdims:
            raise NoRule("cat along a spatial dim")
        self.in_dims = tuple(d - (self.stack and d > dim) for d in self.sdims)

    def out_sdims(self) -> SDims | None:
        return self.sdims

    def needs(self, box: Box | None) -> dict[fx.Node, Need]:
        return {p: Need(self.in_dims, box) if box is not None else WHOLE for p in self.inputs}  # type: ignore[arg-type]


class Reduce(Unary):
    """mean/sum/amax/amin over non-spatial dims."""

    kind = "reduce"

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        super().__init__(node, facts)
        args, kwargs = constant_args(node, facts)
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        if dim is None or node not in facts.shapes:
            raise NoRule("reduction over all dims")
        nd = len(facts.shapes[self.source])
        dims = {int(d) % nd for d in (dim if isinstance(dim, (list, tuple)) else [dim])}
        if dims & set(self.in_dims):
            raise NoRule("reduction over a spatial dim")
        self.sdims = self.in_dims if keep else tuple(d - sum(r < d for r in dims) for d in self.in_dims)  # type: ignore[assignment]


_RESHAPES_F = {torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze, torch.unflatten}
_RESHAPES_M = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten", "view_as", "reshape_as"}
_PERMUTES = {torch.permute, torch.transpose, torch.swapaxes, "permute", "transpose", "swapaxes"}
_SPLITS = {torch.split, torch.chunk, "split", "chunk"}
_REDUCES = {torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"}


def bind_layout(node: fx.Node, facts: Facts) -> Op | None:
    target: Any = node.target
    if node.op == "call_module":
        m = facts.module(target)
        return Reshape(node, facts) if isinstance(m, (nn.Flatten, nn.Unflatten)) else None
    if node.op not in ("call_function", "call_method"):
        return None
    if target is operator.getitem:
        src = node.args[0]
        return (
            Select(node, facts)
            if isinstance(src, fx.Node) and src in facts.tuple_shapes
            else Index(node, facts)
        )
    if target in (torch.cat, torch.concat, torch.concatenate, torch.stack):
        return Cat(node, facts)
    for group, cls in (
        (_RESHAPES_F | _RESHAPES_M, Reshape),
        (_PERMUTES, Permute),
        (_SPLITS, Split),
        (_REDUCES, Reduce),
    ):
        if target in group:
            return cls(node, facts)
    return None
