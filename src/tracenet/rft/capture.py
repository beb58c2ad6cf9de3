"""Graph capture: torch.fx symbolic tracing (once per module) plus shape propagation on meta
tensors (no real forward; fake tensors when an op needs them), done once per (module, input
shape) and kept alongside the module.

It records, per node: tensor shapes, the full-graph value of every non-tensor node (x.shape,
sizes, python arithmetic on them: executed crops reuse these, so e.g. FPN's interpolate size
stays the full map's), the MACs of the node in a full forward (FlopCounterMode / 2), the
spatial dims of each tensor, and the node's region rule.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import conv_flop_count, flop_registry

from tracenet.rft.rules import Facts, Fallback, Op, bind
from tracenet.rft.rules.base import modules_by_name
from tracenet.rft.rules.conv_kernel import memory_format

_CAPTURES: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[int, ...], Capture]] = (
    weakref.WeakKeyDictionary()
)
_GRAPHS: weakref.WeakKeyDictionary[torch.nn.Module, fx.GraphModule] = weakref.WeakKeyDictionary()

_BN_DIMS = {nn.BatchNorm2d: 4, nn.BatchNorm3d: 5}
_SAME_SHAPE_MODULES = {
    *_BN_DIMS, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid,
    nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d,
}  # fmt: skip
# Not rules.pointwise's lists: those hold ops with other arities or results (torch.where(x)
# returns a tuple, torch.clamp(x) raises), which the meta kernel must still see.
_SAME_SHAPE_FUNCTIONS = {
    torch.relu, F.relu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.silu, F.gelu, F.hardswish,
    F.hardsigmoid, F.relu6, F.leaky_relu,
}  # fmt: skip
# Values that differ between meta and real tensors: a graph reading them is propagated on fake
# tensors, whose device is the real one.
_DEVICE_ATTRS = {"device", "is_cpu", "is_cuda", "is_meta", "get_device"}


class Source(Op):
    """The model input: always available whole."""

    kind = "input"

    def out_sdims(self) -> tuple[int, int] | None:
        return (2, 3)

    def needs(self, box: Any) -> dict:
        return {}


class Const(Fallback):
    """A tensor that does not depend on the input (parameters, buffers, tensors made from
    them): computed whole on every run; not a fallback."""

    kind = "const"


@dataclass
class Capture:
    gm: fx.GraphModule
    input_shape: tuple[int, ...]
    facts: Facts
    ops: dict[fx.Node, Op]
    order: list[fx.Node]  # data nodes, topological
    full_macs: dict[fx.Node, int]
    outputs: dict[Hashable, fx.Node]
    source: fx.Node
    plans: OrderedDict = field(default_factory=OrderedDict)  # memo: (threads, targets) -> TracePlan
    map_boxes: dict = field(default_factory=dict)  # memo: node -> its whole (H, W) map box (planner)
    output_nodes: frozenset[fx.Node] = field(init=False)

    def __post_init__(self) -> None:
        self.output_nodes = frozenset(self.outputs.values())

    @property
    def total_macs(self) -> int:
        return sum(self.full_macs.values())


def _inline_into(
    graph: fx.Graph, gm: fx.GraphModule, node: fx.Node, env: dict[fx.Node, Any]
) -> fx.Node | None:
    """Copies the traced body of a non-leaf call_module node into `graph` (None if it cannot)."""
    try:
        sub = fx.symbolic_trace(gm.get_submodule(node.target))
    except Exception:
        return None
    params = [p for p in sub.graph.nodes if p.op == "placeholder"]
    out = next(p for p in sub.graph.nodes if p.op == "output").args[0]
    if not isinstance(out, fx.Node) or len(node.args) > len(params):
        return None
    args = fx.node.map_arg((node.args, node.kwargs), env.__getitem__)
    sub_env: dict[fx.Node, Any] = {}
    for i, p in enumerate(params):
        if i < len(args[0]):
            sub_env[p] = args[0][i]
        elif p.target in args[1]:
            sub_env[p] = args[1][p.target]
        elif p.args:
            sub_env[p] = p.args[0]
        else:
            return None
    for sn in sub.graph.nodes:
        if sn.op in ("placeholder", "output"):
            continue
        new = graph.node_copy(sn, sub_env.__getitem__)
        if new.op in ("call_module", "get_attr"):
            new.target = f"{node.target}.{sn.target}"
        sub_env[sn] = new
    return sub_env[out]


def _inline(gm: fx.GraphModule) -> fx.GraphModule:
    """Inlines composite modules a custom tracer kept as leaves (create_feature_extractor keeps
    torchvision's Conv2dNormActivation, SqueezeExcitation...) so every op gets its own rule."""
    leaf = fx.Tracer().is_leaf_module
    graph, env = fx.Graph(), {}
    for n in gm.graph.nodes:
        if n.op == "call_module" and not leaf(gm.get_submodule(n.target), str(n.target)):
            inlined = _inline_into(graph, gm, n, env)
            if inlined is not None:
                env[n] = inlined
                continue
        env[n] = graph.node_copy(n, env.__getitem__)
    return fx.GraphModule(gm, graph)


def _graph_module(model: torch.nn.Module) -> fx.GraphModule:
    """An fx GraphModule over the model's submodules, holding no reference to the model itself
    (so the capture cache, weakly keyed on the model, does not keep it alive). Traced once per
    model and shared by its captures at every input shape, unless a submodule it calls has been
    replaced since."""
    gm = _GRAPHS.get(model)
    if gm is None or not _same_submodules(model, gm):
        gm = _GRAPHS[model] = _trace_graph(model)
    return gm


def _same_submodules(model: torch.nn.Module, gm: fx.GraphModule) -> bool:
    now, traced = dict(model.named_modules(remove_duplicate=False)), modules_by_name(gm)
    return all(
        now.get(str(n.target), now) is traced.get(str(n.target))
        for n in gm.graph.nodes
        if n.op == "call_module"
    )


def _trace_graph(model: torch.nn.Module) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return _inline(model)
    try:
        return fx.symbolic_trace(model)
    except Exception as e:
        raise TypeError(
            f"RFT cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: {e}). "
            "The model must be symbolically traceable: no Python control flow on tensor values; "
            "wrap such code in an fx leaf module/function or pass an fx.GraphModule."
        ) from e


class _Propagate(fx.Interpreter):
    """Runs the graph on meta or fake tensors, recording shapes, non-tensor values and MACs per
    node. Plain convolutions and unary same-shape ops on meta tensors skip their meta kernels
    (in Python; batch_norm's decomposes, torch.relu's took 0.4 ms a call): their shapes and MACs
    follow from a formula, which made a capture of the R-50 TraceNet 80 -> 40 ms."""

    def __init__(self, gm: fx.GraphModule, facts: Facts) -> None:
        super().__init__(gm)
        self.facts, self.macs, self.counter = facts, {}, _MacCounter()

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        m = self.facts.module(target)
        if _keeps_meta_shape(m, args, kwargs):
            return torch.empty_like(args[0])
        out = _meta_conv2d(m, args, kwargs)
        if out is not None:
            self.counter.macs += conv_flop_count(args[0].shape, m.weight.shape, out.shape) // 2
            return out
        with self.counter:
            return super().call_module(target, args, kwargs)

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target in _SAME_SHAPE_FUNCTIONS and _meta_float(args) and not kwargs.get("inplace"):
            return torch.empty_like(args[0])
        with self.counter:
            return super().call_function(target, args, kwargs)

    def call_method(self, target: Any, args: tuple, kwargs: dict) -> Any:
        with self.counter:
            return super().call_method(target, args, kwargs)

    def run_node(self, n: fx.Node) -> Any:
        self.counter.macs = 0
        value = super().run_node(n)
        self.macs[n] = self.counter.macs
        f = self.facts
        if isinstance(value, torch.Tensor):
            f.shapes[n], f.dtypes[n] = tuple(value.shape), value.dtype
        elif isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
            f.tuple_shapes[n] = [tuple(v.shape) if isinstance(v, torch.Tensor) else () for v in value]
        elif n.op != "output":
            f.consts[n] = value
        return value


def _meta_float(args: tuple) -> bool:
    """A single floating-point meta tensor."""
    return (
        len(args) == 1
        and isinstance(args[0], torch.Tensor)
        and args[0].is_meta
        and args[0].is_floating_point()
    )


def _keeps_meta_shape(m: nn.Module, args: tuple, kwargs: dict) -> bool:
    if type(m) not in _SAME_SHAPE_MODULES or kwargs or not _meta_float(args):
        return False
    x = args[0]
    if type(m) in _BN_DIMS:  # the checks batch_norm itself makes
        return x.dim() == _BN_DIMS[type(m)] and x.shape[1] == m.num_features
    return True


def _meta_conv2d(m: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A plain Conv2d's output on a meta input, from the output-size formula (None: let the meta
    kernel decide, and raise where the shapes do not fit)."""
    if type(m) is not nn.Conv2d or len(args) != 1 or kwargs or m.padding_mode != "zeros":
        return None
    x = args[0]
    if not isinstance(x, torch.Tensor) or not x.is_meta or x.dim() != 4 or x.shape[1] != m.in_channels:
        return None
    if isinstance(m.padding, str) or x.dtype != m.weight.dtype:
        return None
    size = [
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, p, d, k, s in zip(x.shape[2:], m.padding, m.dilation, m.kernel_size, m.stride, strict=True)
    ]
    if min(size) <= 0:
        return None
    layouts = (memory_format(x), memory_format(m.weight))
    layout = torch.channels_last if torch.channels_last in layouts else torch.contiguous_format
    return torch.empty(
        (x.shape[0], m.out_channels, *size), dtype=x.dtype, device="meta", memory_format=layout
    )


class _MacCounter(TorchDispatchMode):
    """FlopCounterMode's formulas (its registry, so the same MACs: FLOPs / 2) without its
    per-context bookkeeping, which cost the capture 0.3 ms per convolution: entered around
    each node that runs a kernel (see _Propagate) and read per node."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.macs += formula(*args, **kwargs, out_val=out) // 2
        return out


class _Reparametrized(nn.Module):
    """Runs the propagation with the graph's parameters and buffers swapped for meta tensors."""

    def __init__(self, gm: fx.GraphModule, prop: _Propagate) -> None:
        super().__init__()
        self.gm, self.prop = gm, [prop]

    def forward(self, x: torch.Tensor) -> Any:
        return self.prop[0].run(x)


def _propagate(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> tuple[Facts, dict[fx.Node, int]]:
    """Shapes, constants and MACs per node: on meta tensors (fast), or on fake tensors when an
    op cannot run on meta (e.g. it mixes the input with a real tensor it creates)."""
    channels_last = any(memory_format(p) == torch.channels_last for p in gm.parameters())
    if not _reads_device(gm):
        facts = Facts(gm, channels_last=channels_last)
        prop = _Propagate(gm, facts)
        tensors = {
            **dict(gm.named_parameters(remove_duplicate=False)),
            **dict(gm.named_buffers(remove_duplicate=False)),
        }
        meta = {f"gm.{k}": torch.empty_like(v, device="meta") for k, v in tensors.items()}
        try:
            torch.func.functional_call(
                _Reparametrized(gm, prop), meta, (torch.empty(input_shape, device="meta"),)
            )
            return facts, prop.macs
        except Exception:  # e.g. a tensor the graph creates on the CPU meets a meta one
            pass
    facts = Facts(gm, channels_last=channels_last)
    prop = _Propagate(gm, facts)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        prop.run(mode.from_tensor(torch.empty(input_shape)))
    return facts, prop.macs


def _reads_device(gm: fx.GraphModule) -> bool:
    for n in gm.graph.nodes:
        if n.op == "call_method" and n.target in _DEVICE_ATTRS:
            return True
        if n.op == "call_function" and n.target is getattr and len(n.args) > 1 and n.args[1] in _DEVICE_ATTRS:
            return True
    return False


def _outputs(gm: fx.GraphModule) -> dict[Hashable, fx.Node]:
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if isinstance(out, dict):
        items = out.items()
    elif isinstance(out, (tuple, list)):
        items = enumerate(out)
    else:
        items = [(0, out)]
    return {k: v for k, v in items if isinstance(v, fx.Node)}


def _capture(model: torch.nn.Module, input_shape: tuple[int, ...]) -> Capture:
    training = [name for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(f"submodule {training[0]!r} is in training mode; call model.eval() before trace()")
    gm = _graph_module(model)
    sources = [n for n in gm.graph.nodes if n.op == "placeholder" and not n.args]  # args: a default value
    if len(sources) != 1 or next(n for n in gm.graph.nodes if n.op == "placeholder") is not sources[0]:
        raise TypeError(
            f"RFT needs a model taking exactly one tensor (other arguments need defaults); "
            f"its graph has {len(sources)} required inputs"
        )
    try:
        facts, macs = _propagate(gm, input_shape)
    except Exception as e:
        raise ValueError(
            f"input_shape {input_shape} does not fit {type(model).__name__}: shape propagation failed "
            f"with {type(e).__name__}: {str(e)[:300]}"
        ) from e
    source = sources[0]
    ops: dict[fx.Node, Op] = {}
    dependent = {source}
    order = []
    for n in gm.graph.nodes:
        if not facts.is_data(n):
            continue
        order.append(n)
        if n is source:
            ops[n] = Source(n, facts)
        elif any(p in dependent for p in n.all_input_nodes):
            dependent.add(n)
            try:
                ops[n] = bind(n, facts)
            except Exception as e:  # a rule that cannot bind must not cost exactness
                ops[n] = Fallback(n, facts, f"rule failed to bind: {type(e).__name__}: {e}")
        else:
            ops[n] = Const(n, facts, "constant")
        facts.sdims[n] = ops[n].out_sdims()
    return Capture(gm, input_shape, facts, ops, order, macs, _outputs(gm), source)


def capture(model: torch.nn.Module, input_shape: tuple[int, ...]) -> Capture:
    """The model's capture at this input shape, traced on first use and kept with the model."""
    per_model = _CAPTURES.setdefault(model, {})
    if input_shape not in per_model:
        per_model[input_shape] = _capture(model, input_shape)
    return per_model[input_shape]
