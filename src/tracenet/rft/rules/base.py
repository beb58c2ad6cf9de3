"""What every region rule shares: the facts captured about the graph, the `Need` a rule puts
on each input, the generic way to call a node's op on crops, and the whole-region fallback."""

from __future__ import annotations

import copy
import operator
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from tracenet.rft.boxes import Box, area

SDims = tuple[int, int]
"""Positions of the (height, width) dims of a tensor, e.g. (2, 3) for NCHW, (1, 2) for NHWC."""

Call = Callable[[Mapping[fx.Node, Any]], Any]


class NoRule(Exception):
    """Raised while binding when no exact cropping rule applies; the node falls back."""


@dataclass(frozen=True)
class Need:
    """What a consumer reads from one input: `box` over the input's `dims` (a dim may be None
    when that axis does not exist in the input), or the whole input when `box` is None."""

    dims: tuple[int | None, int | None] | None = None
    box: Box | None = None


WHOLE = Need()


@dataclass
class Facts:
    """Everything shape propagation learned, by node: rules read it, never the real data."""

    gm: fx.GraphModule
    shapes: dict[fx.Node, tuple[int, ...]] = field(default_factory=dict)  # tensor nodes
    tuple_shapes: dict[fx.Node, list[tuple[int, ...]]] = field(default_factory=dict)  # tuple-of-tensor nodes
    dtypes: dict[fx.Node, torch.dtype] = field(default_factory=dict)
    consts: dict[fx.Node, Any] = field(default_factory=dict)  # non-tensor nodes: their full-graph values
    sdims: dict[fx.Node, SDims | None] = field(default_factory=dict)
    channels_last: bool = False  # some 4-d weight is laid out NHWC: the activations then are too

    def module(self, target: str) -> torch.nn.Module:
        """The submodule a call_module node calls."""
        try:
            return modules_by_name(self.gm)[target]
        except KeyError:
            return self.gm.get_submodule(target)  # raises get_submodule's own error

    def is_data(self, node: fx.Node) -> bool:
        """A tensor (or tuple of tensors) computed at run time, as opposed to a constant."""
        return node in self.shapes or node in self.tuple_shapes

    def data_inputs(self, node: fx.Node) -> list[fx.Node]:
        return [n for n in node.all_input_nodes if self.is_data(n)]

    def hw(self, node: fx.Node) -> tuple[int, int]:
        shape, dims = self.shapes[node], self.sdims[node]
        assert dims is not None
        return shape[dims[0]], shape[dims[1]]


_MODULES: weakref.WeakKeyDictionary[fx.GraphModule, dict[str, torch.nn.Module]] = weakref.WeakKeyDictionary()


def modules_by_name(gm: fx.GraphModule) -> dict[str, torch.nn.Module]:
    """The traced graph's submodules by qualified name, listed once per graph (RFT never
    changes a graph it traced): gm.get_submodule walks the path on every call, which took a
    quarter of an R-50 capture's time at a new input size."""
    if gm not in _MODULES:
        _MODULES[gm] = dict(gm.named_modules(remove_duplicate=False))
    return _MODULES[gm]


_OUT_OF_PLACE = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


_IN_PLACE = {v: k for k, v in _OUT_OF_PLACE.items()}


def _module(facts: Facts, node: fx.Node) -> torch.nn.Module:
    module = facts.module(node.target)
    if getattr(module, "inplace", False):
        # Crops may be views of cached slices: never let an op overwrite its input.
        module = copy.copy(module)
        module.inplace = False
    return module


def op_callable(node: fx.Node, facts: Facts) -> Callable[..., Any]:
    """The node's operation as a plain function of its (mapped) args, in-place variants replaced."""
    if node.op == "call_module":
        return _module(facts, node)
    if node.op == "call_method":
        name = str(node.target)
        if name.endswith("_") and not name.endswith("__") and hasattr(torch.Tensor, name[:-1]):
            name = name[:-1]
        return lambda self, *args, **kwargs: getattr(self, name)(*args, **kwargs)
    if node.op == "call_function":
        return _OUT_OF_PLACE.get(node.target, node.target)
    raise NoRule(f"cannot call a {node.op} node")


def constant_args(node: fx.Node, facts: Facts, in_place: bool = False) -> tuple[tuple, dict]:
    """Node args with every non-data node replaced by its full-graph value (shapes, sizes...);
    an `inplace=True` argument turned off unless `in_place`."""

    def const(n: fx.Node) -> Any:
        return n if facts.is_data(n) else facts.consts[n]

    args = fx.node.map_arg(node.args, const)
    kwargs = dict(fx.node.map_arg(node.kwargs, const))
    if kwargs.get("inplace") and not in_place:
        kwargs["inplace"] = False
    return args, kwargs


def _calling(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Call:
    def call(env: Mapping[fx.Node, Any]) -> Any:
        return fn(*fx.node.map_arg(args, env.__getitem__), **fx.node.map_arg(kwargs, env.__getitem__))

    return call


def generic_call(node: fx.Node, facts: Facts) -> Call:
    """Calls the node's own op on whatever tensors the environment holds for its inputs."""
    if node.op == "get_attr":
        owner, _, name = str(node.target).rpartition(".")
        module = facts.module(owner) if owner else facts.gm
        return lambda env: getattr(module, name)
    return _calling(op_callable(node, facts), *constant_args(node, facts))


def writes_in_place(node: fx.Node, facts: Facts) -> bool:
    """Whether the model's own op overwrites its first argument (ReLU(inplace=True), x += y,
    x.relu_()): the full forward reuses that tensor's memory."""
    if node.op == "call_module":
        return bool(getattr(facts.module(node.target), "inplace", False))
    if node.op == "call_method":
        name = str(node.target)
        return name.endswith("_") and not name.endswith("__")
    if node.op == "call_function":
        return node.target in _OUT_OF_PLACE or bool(node.kwargs.get("inplace"))
    return False


def may_overwrite(node: fx.Node, facts: Facts) -> bool:
    """Whether the node's op can write its result into its first argument with the same values:
    the model's own in-place op, or an out-of-place arithmetic operator (fx records `out +=
    identity` on a traced tensor as `add`) whose result has the first argument's shape and dtype."""
    first = node.args[0] if node.args else None
    if not isinstance(first, fx.Node) or facts.shapes.get(first) != facts.shapes.get(node):
        return False
    if writes_in_place(node, facts):
        return True
    return (
        node.op == "call_function"
        and node.target in _IN_PLACE
        and facts.dtypes.get(first) == facts.dtypes.get(node)
    )


def in_place_call(node: fx.Node, facts: Facts) -> Call:
    """The node's op overwriting its first argument (see may_overwrite). The planner uses it
    only where that argument is a fresh tensor nothing else reads, stores or shares."""
    fn: Callable[..., Any]
    if node.op == "call_module":
        fn = facts.module(node.target)
    elif node.op == "call_method":
        name = str(node.target)
        fn = lambda self, *args, **kwargs: getattr(self, name)(*args, **kwargs)  # noqa: E731
    else:
        fn = _IN_PLACE.get(node.target, node.target)
    return _calling(fn, *constant_args(node, facts, in_place=True))


class Op:
    """A node bound to its region rule. Subclasses raise NoRule from __init__ when the node's
    arguments are outside what the rule proves exact."""

    kind = "op"
    exact_crop = True
    fresh = False  # its output is always a new tensor (no view or alias of an input or constant)

    def __init__(self, node: fx.Node, facts: Facts) -> None:
        self.node, self.facts = node, facts
        self.inputs = facts.data_inputs(node)

    def out_sdims(self) -> SDims | None:
        raise NotImplementedError

    def needs(self, box: Box | None) -> dict[fx.Node, Need]:
        """What each data input must provide for the output region `box` (None: whole output)."""
        raise NotImplementedError

    def build(self, box: Box | None) -> Call:
        """A function from the needed input crops to the output crop over `box`."""
        if not hasattr(self, "_call"):
            self._call = generic_call(self.node, self.facts)  # box-independent: build once
        return self._call

    def in_place(self) -> Call | None:
        """A call overwriting the first input, where the model's op does so; else None."""
        return None

    def thread_bound(self) -> bool:
        """Whether the op's float rounding depends on the thread count (a GEMM splitting its
        sums across threads): the executor then never runs it on one thread as a small step."""
        return False

    def whole(self) -> Call:
        """The node's own op on whole inputs: its whole output, as the full forward computes it."""
        if not hasattr(self, "_whole"):
            self._whole = generic_call(self.node, self.facts)
        return self._whole

    def macs(self, box: Box | None, full_macs: int) -> int:
        """MACs on the crop: every rule's op costs in proportion to its output area."""
        if box is None or full_macs == 0:
            return full_macs
        h, w = self.facts.hw(self.node)
        return full_macs * area(box) // (h * w)


class Fallback(Op):
    """No proven rule: compute the whole output from whole inputs (exact, never approximate)."""

    kind = "fallback"
    exact_crop = False

    def __init__(
        self, node: fx.Node, facts: Facts, reason: str = "no rule", sdims: SDims | None = None
    ) -> None:
        super().__init__(node, facts)
        self.reason, self.sdims = reason, sdims

    def out_sdims(self) -> SDims | None:
        return self.sdims

    def needs(self, box: Box | None) -> dict[fx.Node, Need]:
        return dict.fromkeys(self.inputs, WHOLE)

    def macs(self, box: Box | None, full_macs: int) -> int:
        return full_macs
