"""Oracles that check a plan against the model itself: exactness against the full forward,
soundness/tightness against the input-gradient support, MACs against FlopCounterMode.
Used by the tests; handy to vet the tracer on a new model."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Hashable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from tracenet.rft.boxes import Box, area
from tracenet.rft.planner import TracePlan, trace

_NONLINEAR_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh,
    nn.LeakyReLU, nn.ELU, nn.Mish, nn.Hardtanh, nn.Softplus,
)  # fmt: skip
_NONLINEAR_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.hardswish, F.hardsigmoid, F.silu, torch.sigmoid, F.sigmoid,
    F.gelu, F.mish, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.hardtanh, F.softplus,
}  # fmt: skip
_NONLINEAR_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}


def randomize_batchnorm(model: nn.Module, generator: torch.Generator, mean_scale: float = 0.1) -> nn.Module:
    """Random running statistics, so eval-mode BatchNorm is no identity an exactness check could hide behind."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * mean_scale)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return model


def outputs(y: Any) -> dict[Hashable, torch.Tensor]:
    """A model's output as {key: tensor}, keyed like trace() targets."""
    if isinstance(y, dict):
        return dict(y)
    if isinstance(y, (list, tuple)):
        return dict(enumerate(y))
    return {0: y}


def rel_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max abs difference over the reference's max magnitude (at least 1)."""
    if got.shape != want.shape:
        raise AssertionError(f"shape {tuple(got.shape)} != {tuple(want.shape)}")
    return ((got - want).abs().max() / want.abs().max().clamp(min=1.0)).item()


def worst_diff(plan: TracePlan, model: nn.Module, x: torch.Tensor, got: dict | None = None) -> float:
    """Worst relative difference between plan.run(x) and the full forward sliced to the boxes."""
    with torch.no_grad():
        full = outputs(model(x))
        got = plan.run(x) if got is None else got
    return max(rel_diff(got[k], full[k][..., b[0] : b[1], b[2] : b[3]]) for k, b in plan.targets.items())


def _identity(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x


def linearized(model: nn.Module) -> fx.GraphModule:
    """A float64 graph copy with activations removed and max-pool modules (and adaptive max
    pools) made average pools: its
    input gradient reaches every pixel of the theoretical receptive field (no dead ReLU, no
    max-pool sparsity), so the gradient support is what an exact tracer must cover."""
    gm = (
        fx.symbolic_trace(copy.deepcopy(model))
        if not isinstance(model, fx.GraphModule)
        else copy.deepcopy(model)
    )
    gm = gm.double()
    for n in gm.graph.nodes:
        if n.op == "call_module":
            m = gm.get_submodule(n.target)
            if isinstance(m, _NONLINEAR_MODULES):
                n.op, n.target, n.args, n.kwargs = "call_function", _identity, (n.args[0],), {}
            elif isinstance(m, nn.MaxPool2d) and m.dilation in (1, (1, 1)):
                n.op, n.target = "call_function", F.avg_pool2d
                n.args, n.kwargs = (n.args[0], m.kernel_size, m.stride, m.padding, m.ceil_mode), {}
            elif isinstance(m, nn.AdaptiveMaxPool2d):
                n.op, n.target, n.args, n.kwargs = (
                    "call_function",
                    F.adaptive_avg_pool2d,
                    (n.args[0], m.output_size),
                    {},
                )
        elif n.op == "call_function" and n.target is F.adaptive_max_pool2d:
            size = n.args[1] if len(n.args) > 1 else n.kwargs["output_size"]
            n.target, n.args, n.kwargs = F.adaptive_avg_pool2d, (n.args[0], size), {}
        elif (n.op == "call_function" and n.target in _NONLINEAR_FUNCTIONS) or (
            n.op == "call_method" and n.target in _NONLINEAR_METHODS
        ):
            n.op, n.target, n.args, n.kwargs = "call_function", _identity, (n.args[0],), {}
    gm.recompile()
    return gm.eval()


def gradient_support(lin: nn.Module, x: torch.Tensor, key: Hashable, box: Box, seed: int = 0) -> Box | None:
    """Bounding box of the input pixels with a nonzero gradient of a random projection of
    output[key] over box, or None when no pixel has one."""
    with torch.enable_grad():
        xg = x.double().clone().requires_grad_(True)
        y = outputs(lin(xg))[key][..., box[0] : box[1], box[2] : box[3]]
        if not y.requires_grad:
            return None
        w = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        g = torch.autograd.grad((y * w).sum(), xg, allow_unused=True)[0]
    if g is None:
        return None
    g = g.abs().sum(dim=tuple(range(xg.dim() - 2)))
    nz = g.nonzero()
    if not len(nz):
        return None
    return (int(nz[:, 0].min()), int(nz[:, 0].max()) + 1, int(nz[:, 1].min()), int(nz[:, 1].max()) + 1)


def counted_macs(fn: Callable[[], Any]) -> int:
    """Multiply-accumulates torch.utils.flop_counter counts while fn runs (it reports 2 × MACs)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def _boxes(h: int, w: int, rng: random.Random) -> list[tuple[int, int, int, int]]:
    """A random box, a box touching a (random) corner, a full-width strip."""
    bh, bw = rng.randint(1, max(1, h // 3)), rng.randint(1, max(1, w // 3))
    y0, x0 = rng.randint(0, h - bh), rng.randint(0, w - bw)
    corners = [(0, 1, 0, min(w, 2)), (h - min(h, 2), h, w - 1, w), (0, min(h, 3), w - 1, w), (h - 1, h, 0, 1)]
    return [(y0, y0 + bh, x0, x0 + bw), corners[rng.randrange(4)], (h // 2, h // 2 + 1, 0, w)]


def audit(
    model: nn.Module,
    shape: tuple[int, int, int, int],
    seed: int = 0,
    keys: tuple[Hashable, ...] | None = None,
) -> None:
    """Traces every spatial output of `model` at a few boxes (random, a corner, a full-width
    strip) and asserts each plan exact (≤ 1e-4), sound and tight (≤ 1.10 in area) against the
    gradient support, and counted like FlopCounterMode. `keys`: only these outputs."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    x = torch.randn(shape)
    with torch.no_grad():
        full = outputs(model(x))
    lin = linearized(model)
    full_macs = counted_macs(lambda: model(x))
    for key, y in full.items():
        if y.dim() != 4 or (keys is not None and key not in keys):
            continue
        for box in _boxes(*y.shape[-2:], rng):
            plan = trace(model, shape, {key: box})
            got = plan.run(x)[key]
            assert rel_diff(got, y[..., box[0] : box[1], box[2] : box[3]]) <= 1e-4, (key, box)
            support = gradient_support(lin, x, key, box)
            r = plan.input_region
            if support is not None:
                assert (
                    r[0] <= support[0] and r[1] >= support[1] and r[2] <= support[2] and r[3] >= support[3]
                ), f"unsound: {key} {box}: gradient support {support} outside input_region {r}"
                assert area(r) <= 1.10 * area(support), f"loose: {key} {box}: {r} vs support {support}"
            assert plan.macs == counted_macs(lambda plan=plan: plan.run(x)), (key, box)
            assert plan.full_macs == full_macs
