"""Planning: from target boxes, one reverse-topological pass (the paper's post-order DFS,
each node once, O(V+E)) gives each node's region, the bounding box of what its consumers
need; then one forward pass turns regions into executor steps. With a RegionCache the same
pass skips nodes whose cached slice covers their region, and everything only they needed."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import fx

from tracenet.rft.boxes import Box, area, check_box, full_box, union
from tracenet.rft.cache import RegionCache
from tracenet.rft.capture import Capture, capture
from tracenet.rft.executor import Narrow, Step, execute, last_uses
from tracenet.rft.rules import Need
from tracenet.rft.rules.conv_kernel import NATIVE_MAX_NUMEL

_MEMO_SIZE = 256
# A step below both is small (about a millisecond of work on one core): for a crop of a few
# cells an OpenMP fork/join can cost more than the work, and far more on shared cores. The
# executor runs small steps on one thread, all of them or the tiniest (executor.py).
SERIAL_MACS = 1 << 27
SERIAL_ELEMENTS = 1 << 18


@dataclass
class Schedule:
    steps: list[Step]
    regions: dict[fx.Node, Box | None]  # needed region per node (cache hits: their cached box)
    hits: set[fx.Node]
    outputs: dict[Hashable, tuple[fx.Node, Narrow]]
    macs: int
    store: set[fx.Node]  # computed nodes worth keeping in a RegionCache (see _worth_storing)


def _narrow(cap: Capture, producer: fx.Node, have: Box | None, need: Need) -> Narrow:
    """How a consumer cuts `need` out of the producer's value, which covers `have`."""
    if need.box is None or need.dims is None:
        return ()
    f = cap.facts
    own = have is not None and f.sdims.get(producer) == need.dims
    offsets = (have[0], have[2]) if own else (0, 0)
    sizes = (have[1] - have[0], have[3] - have[2]) if own else None
    out = []
    for i, dim in enumerate(need.dims):
        if dim is None:
            continue
        start, length = need.box[2 * i] - offsets[i], need.box[2 * i + 1] - need.box[2 * i]
        size = sizes[i] if sizes else f.shapes[producer][dim] if producer in f.shapes else None
        if start != 0 or length != size:
            out.append((dim, start, length))
    return tuple(out)


def _target_need(cap: Capture, key: Hashable, box: Box) -> Need:
    """A target box is over its output's two last dims: full_output[key][..., y0:y1, x0:x1]."""
    nd = len(cap.facts.shapes[cap.outputs[key]])
    return Need((nd - 2, nd - 1), box)


def schedule(
    cap: Capture,
    targets: Mapping[Hashable, Box],
    cache: RegionCache | None = None,
    keep: bool = False,
    whole_from: float = 1.0,
) -> Schedule:
    """The steps computing `targets` (skipping what `cache` covers); with `keep`, which of the
    computed values a RegionCache should hold for later runs. A node whose region covers at
    least `whole_from` of its map is computed whole (see trace)."""
    f, ops = cap.facts, cap.ops
    req: dict[fx.Node, Box | None] = {}
    needs: dict[fx.Node, dict[fx.Node, Need]] = {}

    def require(p: fx.Node, need: Need) -> None:
        dims = f.sdims.get(p)
        if dims is None:
            box = None
        elif need.box is None or need.dims != dims:
            box = full_box(*f.hw(p))
        else:
            box = need.box
        if p in req:
            old = req[p]
            box = None if old is None or box is None else union(old, box)
        req[p] = box

    for key, box in targets.items():
        require(cap.outputs[key], _target_need(cap, key, box))
    hits: set[fx.Node] = set()
    for n in reversed(cap.order):
        if n not in req:
            continue
        if cache is not None and n is not cap.source:
            have = cache.lookup(n, req[n])
            if have is not False:
                req[n] = have  # type: ignore[assignment]
                hits.add(n)
                continue
        if req[n] is not None and (not ops[n].exact_crop or _covers(cap, n, req[n], whole_from)):
            req[n] = full_box(*f.hw(n))  # a fallback computes its whole output; so may a big crop
        needs[n] = ops[n].needs(req[n])
        for p, need in needs[n].items():
            require(p, need)
    if keep:
        _widen_small_maps(cap, req, needs, hits)
    have = dict(req)  # what each value covers: the input is held whole
    have[cap.source] = full_box(*cap.input_shape[2:])
    whole = {n for n in have if _is_whole(cap, n, have[n])}
    steps, macs = [], 0
    for n in cap.order:
        if n not in needs or n is cap.source:
            continue
        cost = ops[n].macs(req[n], cap.full_macs[n])
        serial = (
            cost < SERIAL_MACS and _elements(cap, n, req[n]) < SERIAL_ELEMENTS and not ops[n].thread_bound()
        )
        if n in whole and all(p in whole for p in needs[n]):
            # The whole output from whole inputs: the node's own op, exactly as in the full
            # forward (native padding, no copies of nearly whole crops).
            takes = tuple((p, ()) for p in needs[n])
            steps.append(Step(n, takes, ops[n].whole(), cost, serial))
        else:
            takes = tuple((p, _narrow(cap, p, have[p], need)) for p, need in needs[n].items())
            steps.append(Step(n, takes, ops[n].build(req[n]), cost, serial))
        macs += cost
    outputs = {
        key: (
            cap.outputs[key],
            _narrow(cap, cap.outputs[key], have[cap.outputs[key]], _target_need(cap, key, box)),
        )
        for key, box in targets.items()
    }
    computed = {step.node for step in steps}
    overwritten = _in_place(cap, steps)
    store = set()
    if keep:
        store = {n for n in computed - overwritten if _worth_storing(cap, n, computed, whole)}
    return Schedule(steps, req, hits, outputs, macs, store)


def _widen_small_maps(
    cap: Capture,
    req: dict[fx.Node, Box | None],
    needs: dict[fx.Node, dict[fx.Node, Need]],
    hits: set[fx.Node],
) -> None:
    """For a cache: a node computed from whole inputs is computed whole where that costs next
    to nothing more: a convolution run on a whole-map canvas (rules.window.Conv._width; tiny maps) costs
    its whole map anyway, and any op on a small map (at most conv_kernel.NATIVE_MAX_NUMEL
    values) is cheap. A session's cache then holds it whole for every later tap."""
    whole = {cap.source} | {n for n, box in req.items() if _is_whole(cap, n, box)}
    for n in cap.order:
        if n not in needs or n in hits or n in whole or not all(p in whole for p in needs[n]):
            continue
        full_macs = cap.full_macs[n]
        free = full_macs > 0 and cap.ops[n].macs(req[n], full_macs) >= full_macs
        if free or _elements(cap, n, None) <= NATIVE_MAX_NUMEL:
            req[n] = full_box(*cap.facts.hw(n))
            needs[n] = cap.ops[n].needs(req[n])
            whole.add(n)


def _in_place(cap: Capture, steps: list[Step]) -> set[fx.Node]:
    """Where the model overwrites a tensor (ReLU(inplace=True), x += y), so does the step, if
    that tensor is fresh (made by an earlier step of this run: no cached slice, input, constant
    or view of one), read by nothing else and not an output. The full forward saves those
    copies the same way. Returns the overwritten values: a cache never holds them (a later
    run needing more of one needs more of its only reader, which a stored slice of the
    overwritten value could not give either), and big crops then skip an allocation each."""
    fresh: set[fx.Node] = set()
    overwritten: set[fx.Node] = set()
    for i, step in enumerate(steps):
        n, op = step.node, cap.ops[step.node]
        call = op.in_place()
        if call is not None:
            p, narrow = step.takes[0] if step.takes else (None, ())
            if (
                p is n.args[0]
                and p in fresh
                and not narrow
                and len(p.users) == 1
                and p not in cap.output_nodes
            ):
                steps[i] = replace(step, call=call)
                fresh.add(n)
                overwritten.add(p)
                continue
        if op.fresh:
            fresh.add(n)
    return overwritten


def _shapes(cap: Capture, n: fx.Node) -> list[tuple[int, ...]]:
    f = cap.facts
    return [f.shapes[n]] if n in f.shapes else f.tuple_shapes.get(n, [])


def _map_box(cap: Capture, n: fx.Node) -> Box | None:
    """The node's whole (H, W) map as a box; None without spatial dims (a tuple's parts share
    H and W)."""
    if n in cap.map_boxes:
        return cap.map_boxes[n]
    dims = cap.facts.sdims.get(n)
    shape = None if dims is None else next((s for s in _shapes(cap, n) if len(s) > max(dims)), None)
    box = cap.map_boxes[n] = None if shape is None else full_box(shape[dims[0]], shape[dims[1]])
    return box


def _elements(cap: Capture, n: fx.Node, box: Box | None) -> int:
    """Elements of the node's value over `box` (its whole value when the box is None)."""
    total = sum(math.prod(s) for s in _shapes(cap, n))
    whole = _map_box(cap, n)
    if box is None or whole is None or not total:
        return total
    return total * area(box) // area(whole)


def _covers(cap: Capture, n: fx.Node, box: Box, fraction: float) -> bool:
    """Whether `box` covers at least `fraction` (< 1) of the node's map."""
    whole = _map_box(cap, n) if fraction < 1 else None
    return whole is not None and area(box) >= fraction * area(whole)


def _is_whole(cap: Capture, n: fx.Node, box: Box | None) -> bool:
    return box is None or box == _map_box(cap, n) or _map_box(cap, n) is None


def _worth_storing(cap: Capture, n: fx.Node, computed: set[fx.Node], whole: set[fx.Node]) -> bool:
    """Every crop is kept; a whole value only on the frontier of the whole region: when it is a
    model output or some consumer is not computed whole in this run. A later run can only reach
    a whole value through its consumers, and a whole consumer it reaches is a stored frontier
    value (which covers any need) or, by the same argument, never reached: so the values left
    out are never needed again, and the cache holds a few maps instead of every activation."""
    if n not in whole or n in cap.output_nodes:
        return True
    return any(c not in computed or c not in whole for c in n.users if c.op != "output")


@dataclass(frozen=True)
class NodeRegion:
    """One traced node's region, as ``TracePlan.node_regions()`` lists them."""

    name: str  # the graph node's name, the key of plan.regions
    module: str | None  # qualified name of the submodule the node calls; None for a function or method
    inputs: tuple[str, ...]  # the listed nodes it reads (an add reads two)
    kind: str  # its region rule: conv2d, pointwise, interpolate, fallback, ...
    region: Box  # (y0, y1, x0, x1) on its output map
    size: tuple[int, int]  # (H, W) of its whole output map
    stride: tuple[float, float]  # input pixels per output pixel (y, x): input (H, W) / size


class TracePlan:
    """What to compute, where, for some target boxes of one model at one input shape."""

    def __init__(self, cap: Capture, targets: dict[Hashable, Box], whole_from: float = 1.0) -> None:
        self.capture, self.targets, self.whole_from = cap, targets, whole_from
        self.input_shape = cap.input_shape
        self.full_macs = cap.total_macs

    # A session's first run schedules against its (empty) cache instead, so the cacheless
    # schedule and what derives from it are worked out only when asked for.
    @functools.cached_property
    def _schedule(self) -> Schedule:
        return schedule(self.capture, self.targets, whole_from=self.whole_from)

    def _cached_run(self, cache: RegionCache) -> tuple[Schedule, list[tuple[fx.Node, ...]]]:
        """The steps of a run against ``cache`` and where each value is last used."""
        sched = schedule(self.capture, self.targets, cache, keep=True, whole_from=self.whole_from)
        return sched, last_uses(sched.steps, {node for node, _ in sched.outputs.values()} | sched.store)

    @functools.cached_property
    def _first_cached(self) -> tuple[Schedule, list[tuple[fx.Node, ...]]]:
        """The steps a run with an empty cache takes, the same every time: small maps are
        computed whole to be kept (_widen_small_maps), so they may cost more than ``macs``."""
        return self._cached_run(RegionCache())

    @functools.cached_property
    def _free(self) -> list[tuple[fx.Node, ...]]:
        return last_uses(self._schedule.steps, {node for node, _ in self._schedule.outputs.values()})

    @property
    def macs(self) -> int:
        """MACs of a run without a cache."""
        return self._schedule.macs

    @property
    def macs_in_session(self) -> int:
        """MACs of a run with an empty cache: a session's first tap (TraceNet.segment's count)."""
        return self._first_cached[0].macs

    @functools.cached_property
    def input_region(self) -> Box:
        return self._schedule.regions.get(self.capture.source) or (0, 0, 0, 0)

    @functools.cached_property
    def regions(self) -> dict[str, Box]:
        """Each node's computed region on its output map, by node name (spatial nodes only)."""
        cap, regions = self.capture, self._schedule.regions
        return {
            n.name: box
            for n in cap.order
            if n in regions and (box := regions[n]) is not None and cap.facts.sdims.get(n)
        }

    @functools.cached_property
    def fallbacks(self) -> list[str]:
        """The nodes computed whole because no rule bounds them, with the reason."""
        cap = self.capture
        return [
            f"{s.node.name} ({cap.ops[s.node].reason})"
            for s in self._schedule.steps
            if cap.ops[s.node].kind == "fallback"
        ]

    def __repr__(self) -> str:
        return (
            f"TracePlan(targets={self.targets}, input_region={self.input_region}, "
            f"macs={self.macs / 1e9:.3f}G of {self.full_macs / 1e9:.3f}G, fallbacks={len(self.fallbacks)})"
        )

    def node_regions(self) -> list[NodeRegion]:
        """Every node with a region (those in ``plan.regions``), input to output, with its module,
        the nodes it reads, its output map's size and stride: enough to group regions by stage
        and map them back to input pixels without reading the graph capture."""
        cap, f = self.capture, self.capture.facts
        height, width = cap.input_shape[2:]
        listed = [n for n in cap.order if n.name in self.regions]
        names = {n.name for n in listed}
        out = []
        for n in listed:
            h, w = f.hw(n)
            out.append(
                NodeRegion(
                    name=n.name,
                    module=str(n.target) if n.op == "call_module" else None,
                    inputs=tuple(p.name for p in n.all_input_nodes if p.name in names),
                    kind=cap.ops[n].kind,
                    region=self.regions[n.name],
                    size=(h, w),
                    stride=(height / h, width / w),
                )
            )
        return out

    def run(self, x: torch.Tensor, cache: RegionCache | None = None) -> dict[Hashable, torch.Tensor]:
        """{key: full_output[key][..., y0:y1, x0:x1]}, computed on crops only."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"plan.run expects a tensor, got {type(x).__name__}")
        if tuple(x.shape) != tuple(self.input_shape):
            raise ValueError(
                f"input of shape {tuple(x.shape)} given to a plan traced for {tuple(self.input_shape)}"
            )
        src = self.capture.source
        if cache is None:
            return execute(self._schedule.steps, {src: x}, self._schedule.outputs, self._free)
        cache.bind_input(x)
        sched, free = self._cached_run(cache) if len(cache) else self._first_cached
        env: dict[fx.Node, Any] = {n: cache.value(n) for n in sched.hits}
        env[src] = x
        out = execute(sched.steps, env, sched.outputs, free)
        for step in sched.steps:
            if step.node in sched.store:
                cache.store(step.node, sched.regions[step.node], env[step.node])
        cache.last_macs = sched.macs
        return {k: v.clone() for k, v in out.items()}


def _check_targets(cap: Capture, targets: object) -> dict[Hashable, Box]:
    if not isinstance(targets, Mapping) or not targets:
        raise ValueError(
            f"targets must be a non-empty dict {{output key: (y0, y1, x0, x1)}}, got {targets!r}"
        )
    out = {}
    for key, box in targets.items():
        node = cap.outputs.get(key)
        if node is None:
            raise KeyError(
                f"target key {key!r} is not an output of the model; its outputs are {list(cap.outputs)}"
            )
        shape = cap.facts.shapes.get(node)
        if shape is None or len(shape) < 3:
            raise ValueError(f"output {key!r} (shape {shape}) has no spatial dims (H, W) to put a box on")
        out[key] = check_box(box, shape[-2], shape[-1], f"target {key!r}")
    return out


def _check_shape(input_shape: object) -> tuple[int, int, int, int]:
    if not isinstance(input_shape, (tuple, list, torch.Size)) or len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {input_shape!r}")
    try:
        shape = tuple(operator.index(v) for v in input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 4 or isinstance(input_shape[0], bool) or min(shape) <= 0:
        raise ValueError(f"input_shape must hold 4 positive integers (N, C, H, W), got {input_shape!r}")
    return shape  # type: ignore[return-value]


def trace(
    model: torch.nn.Module,
    input_shape: tuple[int, int, int, int],
    targets: Mapping[Hashable, Box],
    whole_from: float = 1.0,
) -> TracePlan:
    """Plan exact cropped inference of `model` for `targets` (boxes on its outputs).

    `whole_from` < 1 trades MACs for wall-clock time: a node whose region covers at least that
    fraction of its map is computed whole, with the full forward's own call. Cropping it would
    save little arithmetic but costs copies of the crop and, the first time a layer is cropped
    at a map size, kernel probes (rules/conv_kernel.py). The result stays exact either way."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"trace expects an nn.Module, got {type(model).__name__}")
    if not isinstance(whole_from, (int, float)) or isinstance(whole_from, bool) or not 0 < whole_from <= 1:
        raise ValueError(f"whole_from must be a fraction in (0, 1], got {whole_from!r}")
    shape = _check_shape(input_shape)
    if model.training:
        raise ValueError(f"{type(model).__name__} is in training mode; call model.eval() before trace()")
    cap = capture(model, shape)
    boxes = _check_targets(cap, targets)
    key = (torch.get_num_threads(), float(whole_from), frozenset(boxes.items()))  # kernels follow threads
    plan = cap.plans.get(key)
    if plan is None:
        plan = cap.plans[key] = TracePlan(cap, boxes, float(whole_from))
        if len(cap.plans) > _MEMO_SIZE:
            cap.plans.popitem(last=False)
    else:
        cap.plans.move_to_end(key)
    return plan
