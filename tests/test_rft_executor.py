"""How the tracer runs a plan: which values a RegionCache keeps, in-place ops, whole-map steps,
one-thread small steps, and the capture's meta-tensor shape propagation. Each check compares
against the full forward or against the slower way it replaces."""

from __future__ import annotations

import operator

import pytest
import torch
import torchvision
from torch import fx, nn
from torchvision.models.feature_extraction import create_feature_extractor

from tracenet.rft import RegionCache, planner, trace
from tracenet.rft import capture as capture_module
from tracenet.rft.capture import capture
from tracenet.rft.verify import randomize_batchnorm, rel_diff

SHAPE = (1, 3, 67, 83)


def _resnet18() -> nn.Module:
    """layer2 and layer4 outputs: ReLU(inplace=True) and `out += identity` in every block."""
    model = create_feature_extractor(torchvision.models.resnet18(), {"layer2": "c3", "layer4": "c5"})
    return randomize_batchnorm(model, torch.Generator().manual_seed(0)).eval()


def _full_values(model: nn.Module, x: torch.Tensor) -> dict[fx.Node, torch.Tensor]:
    """Every node's value in a full forward of the capture's graph."""
    cap = capture(model, tuple(x.shape))
    values: dict[fx.Node, torch.Tensor] = {}

    class Record(fx.Interpreter):
        def run_node(self, n: fx.Node):
            value = super().run_node(n)
            if isinstance(value, torch.Tensor):
                values[n] = value.clone()
            return value

    with torch.no_grad():
        Record(cap.gm).run(x)
    return values


TAPS = [
    {"c5": (1, 2, 1, 2)},  # whole layer4 input region: a large whole part
    {"c3": (3, 5, 2, 4)},
    {"c3": (3, 5, 2, 4), "c5": (0, 1, 2, 3)},
    {"c3": (0, 9, 0, 11)},  # whole c3
    {"c3": (8, 9, 10, 11)},
]


def test_cache_keeps_crops_and_the_whole_frontier_and_loses_no_reuse(monkeypatch) -> None:
    model = _resnet18()
    x = torch.randn(SHAPE)
    full = _full_values(model, x)
    cache = RegionCache()
    macs = []
    with torch.no_grad():
        for targets in TAPS:
            out = trace(model, SHAPE, targets).run(x, cache=cache)
            for key, (y0, y1, x0, x1) in targets.items():
                node = capture(model, SHAPE).outputs[key]
                assert rel_diff(out[key], full[node][..., y0:y1, x0:x1]) <= 1e-4
            macs.append(cache.last_macs)
    cap = capture(model, SHAPE)
    whole_kept = [n for n, (box, _) in cache.slices.items() if planner._is_whole(cap, n, box)]
    assert 0 < len(whole_kept) < 0.2 * len(cap.order)  # a frontier, not every activation
    # every kept slice still holds the full forward's values: no in-place op overwrote one
    for node, (box, value) in cache.slices.items():
        want = full[node] if box is None else full[node][..., box[0] : box[1], box[2] : box[3]]
        assert rel_diff(value, want) <= 1e-4, node.name
    # the same runs with a cache that keeps every computed value reuse exactly as much
    monkeypatch.setattr(planner, "_worth_storing", lambda *args: True)
    cap.plans.clear()  # memoized plans hold schedules made with the real policy
    cache_all = RegionCache()
    with torch.no_grad():
        for targets, m in zip(TAPS, macs, strict=True):
            trace(model, SHAPE, targets).run(x, cache=cache_all)
            assert cache_all.last_macs == m
    assert len(cache_all) > len(cache)


def test_in_place_steps_overwrite_only_values_nothing_else_reads() -> None:
    model = _resnet18()
    x = torch.randn(SHAPE)
    x0 = x.clone()
    cap = capture(model, SHAPE)
    plan = trace(model, SHAPE, {"c3": (2, 6, 3, 8), "c5": (0, 3, 0, 3)})
    in_place = [s for s in plan._schedule.steps if s.call is cap.ops[s.node].in_place()]
    assert len(in_place) >= 10  # the blocks' ReLUs and `+=` on fresh conv/BatchNorm outputs
    # fx records a block's `out += identity` as an out-of-place add: it still runs in place
    assert any(s.node.target is operator.add for s in in_place)
    with torch.no_grad():
        want = model(x)
        got = plan.run(x)
        again = plan.run(x)
    assert torch.equal(x, x0)
    for key, (y0, y1, x0_, x1) in plan.targets.items():
        assert rel_diff(got[key], want[key][..., y0:y1, x0_:x1]) <= 1e-4
        assert torch.equal(got[key], again[key])


def test_whole_steps_run_the_models_own_op_and_small_steps_run_on_one_thread() -> None:
    model = _resnet18()
    cap = capture(model, SHAPE)
    plan = trace(model, SHAPE, {"c5": (1, 2, 1, 2)})
    whole = [s for s in plan._schedule.steps if s.call is cap.ops[s.node].whole()]
    assert any(cap.ops[s.node].kind == "conv2d" for s in whole)  # native padding, no copies
    assert any(s.serial for s in plan._schedule.steps)
    big = trace(model, (1, 3, 512, 512), {"c3": (0, 64, 0, 64)})
    assert not all(s.serial for s in big._schedule.steps)
    threads = torch.get_num_threads()
    with torch.no_grad():
        plan.run(torch.randn(SHAPE))
    assert torch.get_num_threads() == threads


class _Devices(nn.Module):
    """Reads x.device: shape propagation on meta tensors would record the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + torch.ones(1, 4, 1, 1, device=x.device)


class _CpuTensor(nn.Module):
    """Adds a CPU tensor sized from the input: it cannot meet a meta tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + torch.arange(x.shape[-1], dtype=torch.float32)


class _Convs(nn.Module):
    """Convolutions the capture sizes by formula on meta tensors (strides, dilations, groups,
    asymmetric kernels, a channels-last weight), unary functions it skips, and a padding mode
    and a string padding it leaves to the meta kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.b = nn.Conv2d(8, 8, (3, 5), dilation=(2, 1), padding=(1, 3), groups=2, bias=False)
        self.c = nn.Conv2d(8, 6, 1).to(memory_format=torch.channels_last)
        self.d = nn.Conv2d(6, 6, 3, padding="same")
        self.e = nn.Conv2d(6, 4, 3, stride=(1, 3), padding=1, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.b(torch.relu(self.a(x))))
        return self.e(nn.functional.relu(self.d(self.c(x)), inplace=False))


def test_meta_propagation_matches_fake_tensors_and_falls_back_to_them() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tracenet.rft.rules import Facts

    for model in (_resnet18(), _Devices().eval(), _CpuTensor().eval(), _Convs().eval()):
        gm = capture_module._graph_module(model)
        facts, macs = capture_module._propagate(gm, SHAPE)
        fake = Facts(gm)
        prop = capture_module._Propagate(gm, fake)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            prop.run(mode.from_tensor(torch.empty(SHAPE)))
        assert facts.shapes == fake.shapes and facts.consts == fake.consts and macs == prop.macs
        assert facts.dtypes == fake.dtypes
        x = torch.randn(SHAPE)
        with torch.no_grad():
            got = trace(model, SHAPE, {next(iter(capture(model, SHAPE).outputs)): (0, 2, 3, 5)}).run(x)
            want = model(x)
            want = want if isinstance(want, torch.Tensor) else next(iter(want.values()))
            assert rel_diff(next(iter(got.values())), want[..., :2, 3:5]) <= 1e-4


def test_graph_is_traced_once_per_model_unless_a_submodule_is_replaced() -> None:
    model = _Devices().eval()
    a = capture(model, SHAPE)
    b = capture(model, (1, 3, 40, 50))
    assert a is not b and a.gm is b.gm
    model.conv = nn.Conv2d(3, 4, 5, padding=2).eval()
    c = capture(model, (1, 3, 41, 50))
    assert c.gm is not a.gm
    x = torch.randn(1, 3, 41, 50)
    with torch.no_grad():
        got = trace(model, (1, 3, 41, 50), {0: (0, 3, 0, 3)}).run(x)[0]
        assert rel_diff(got, model(x)[..., :3, :3]) <= 1e-4


def test_small_steps_go_serial_under_load_only(monkeypatch) -> None:
    """On idle cores every step keeps all threads; on oversubscribed ones every step the
    planner marked small drops to one (a descheduled OpenMP worker would stall the team)."""
    from tracenet.rft import executor

    threads = torch.get_num_threads()
    if threads < 2:
        pytest.skip("needs torch with at least 2 threads")
    graph = fx.Graph()
    x = graph.placeholder("x")
    nodes = [graph.call_function(torch.relu, (x,)) for _ in range(3)]
    seen: dict[str, int] = {}

    def step(node: fx.Node, macs: int, serial: bool) -> executor.Step:
        return executor.Step(
            node, (), lambda _: seen.__setitem__(node.name, torch.get_num_threads()), macs, serial
        )

    steps = [step(nodes[0], 1 << 20, True), step(nodes[1], 1 << 26, True), step(nodes[2], 1 << 30, False)]
    for busy, want in ((False, [threads, threads, threads]), (True, [1, 1, threads])):
        monkeypatch.setattr(executor, "_oversubscribed", lambda busy=busy: busy)
        executor.execute(steps, {}, {})
        assert [seen[n.name] for n in nodes] == want
        assert torch.get_num_threads() == threads
