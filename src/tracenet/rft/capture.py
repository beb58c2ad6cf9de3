"""Graph capture: torch.fx symbolic tracing plus shape propagation on fake tensors (no real
forward), done once per (module, input shape) and kept alongside the module.

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
from torch import fx
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from tracenet.rft.rules import Facts, Fallback, Op, bind

_CAPTURES: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[int, ...], Capture]] = (
    weakref.WeakKeyDictionary()
)


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
    plans: OrderedDict = field(default_factory=OrderedDict)  # memo: targets -> TracePlan

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
    (so the capture cache, weakly keyed on the model, does not keep it alive)."""
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
    """Runs the graph on fake tensors, recording shapes, non-tensor values and MACs per node."""

    def __init__(self, gm: fx.GraphModule, facts: Facts) -> None:
        super().__init__(gm)
        self.facts, self.macs = facts, {}

    def run_node(self, n: fx.Node) -> Any:
        with FlopCounterMode(display=False) as counter:
            value = super().run_node(n)
        self.macs[n] = counter.get_total_flops() // 2
        f = self.facts
        if isinstance(value, torch.Tensor):
            f.shapes[n], f.dtypes[n] = tuple(value.shape), value.dtype
        elif isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
            f.tuple_shapes[n] = [tuple(v.shape) if isinstance(v, torch.Tensor) else () for v in value]
        elif n.op != "output":
            f.consts[n] = value
        return value


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
    facts = Facts(gm)
    prop = _Propagate(gm, facts)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            prop.run(mode.from_tensor(torch.empty(input_shape)))
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
    return Capture(gm, input_shape, facts, ops, order, prop.macs, _outputs(gm), source)


def capture(model: torch.nn.Module, input_shape: tuple[int, ...]) -> Capture:
    """The model's capture at this input shape, traced on first use and kept with the model."""
    per_model = _CAPTURES.setdefault(model, {})
    if input_shape not in per_model:
        per_model[input_shape] = _capture(model, input_shape)
    return per_model[input_shape]
