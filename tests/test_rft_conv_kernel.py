"""Cropped convolutions run the full forward's kernel: trace equals full bit for bit on the
layer shapes where oneDNN's loops depend on the crop's shape (deep 3x3 convs, predictors with
few output channels), on one thread and several, and MACs stay counted."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tracenet.rft import trace
from tracenet.rft.rules import conv_kernel
from tracenet.rft.verify import counted_macs

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="the kernel choice mirrored here is oneDNN's"
)


class DeepHead(nn.Module):
    """A 512-channel 3x3 conv (oneDNN sums narrow outputs in another order) feeding a 1-channel
    predictor (blocking across rows) and a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.deep = nn.Conv2d(512, 512, 3, padding=1)
        self.pred = nn.Conv2d(512, 1, 3, padding=1)
        self.mix = nn.Conv2d(512, 64, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = torch.relu(self.deep(x))
        return {"pred": self.pred(y), "mix": self.mix(y)}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return DeepHead().eval().to(memory_format=torch.channels_last)


SHAPE = (1, 512, 25, 42)
TARGETS = [
    {"pred": (0, 1, 0, 1), "mix": (3, 4, 40, 42)},  # corner cells
    {"pred": (12, 13, 20, 21), "mix": (10, 15, 5, 9)},  # inside, narrow
    {"pred": (24, 25, 41, 42)},
]


@pytest.mark.parametrize("threads", [1, 2])
def test_crops_match_the_full_forward_bit_for_bit(model, threads: int) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(SHAPE).contiguous(memory_format=torch.channels_last) * 4
        with torch.no_grad():
            full = model(x)
            for targets in TARGETS:
                out = trace(model, SHAPE, targets).run(x)
                for key, (y0, y1, x0, x1) in targets.items():
                    assert torch.equal(out[key], full[key][..., y0:y1, x0:x1]), (threads, key)
    finally:
        torch.set_num_threads(before)


def test_crops_match_under_load_too(model, monkeypatch) -> None:
    """On oversubscribed cores small steps run on one thread; convolutions never do, since
    their widths were probed at the full forward's count (a 1-channel predictor's crop of one
    cell rounds otherwise on two threads than on one, here)."""
    from tracenet.rft import executor

    monkeypatch.setattr(executor, "_oversubscribed", lambda: True)
    before = torch.get_num_threads()
    try:
        x = torch.randn(SHAPE).contiguous(memory_format=torch.channels_last) * 4
        with torch.no_grad():
            for threads in (1, 2):  # widths probed at each count, crops run at it
                torch.set_num_threads(threads)
                full = model(x)
                for targets in TARGETS:
                    plan = trace(model, SHAPE, targets)
                    assert not any(
                        s.serial for s in plan._schedule.steps if s.node.name in ("deep", "pred", "mix")
                    )
                    out = plan.run(x)
                    for key, (y0, y1, x0, x1) in targets.items():
                        assert torch.equal(out[key], full[key][..., y0:y1, x0:x1]), (threads, key)
    finally:
        torch.set_num_threads(before)


def test_plain_f_conv2d_crops_would_not_match(model) -> None:
    """The check above can fail: a narrow crop through F.conv2d rounds differently."""
    x = torch.randn(SHAPE).contiguous(memory_format=torch.channels_last) * 4
    with torch.no_grad():
        full = model.deep(x)
        crop = F.conv2d(F.pad(x[..., :4, :4], (1, 0, 1, 0)), model.deep.weight, model.deep.bias)
    assert not torch.equal(crop[..., :3, :3], full[..., :3, :3])


def test_macs_count_the_padded_runs(model) -> None:
    x = torch.randn(SHAPE).contiguous(memory_format=torch.channels_last)
    for targets in TARGETS:
        plan = trace(model, SHAPE, targets)
        assert plan.macs == counted_macs(lambda plan=plan: plan.run(x))
        assert plan.macs < plan.full_macs


@pytest.mark.parametrize(
    ("in_shape", "kernel", "strided", "threads", "onednn"),
    [
        ((1, 256, 7, 11), (3, 3), False, 2, False),  # 19712 values: ATen's native kernel
        ((1, 256, 8, 11), (3, 3), False, 2, True),
        ((1, 256, 8, 11), (1, 1), False, 1, False),  # 1x1 on one thread: native
        ((1, 256, 8, 11), (1, 1), True, 1, True),
        ((1, 3, 4, 4), (7, 7), True, 1, True),  # large kernels always go to oneDNN
    ],
)
def test_kernel_choice_mirrors_aten(in_shape, kernel, strided, threads, onednn) -> None:
    assert conv_kernel.onednn_in_full(in_shape, kernel, strided, False, 1, threads) is onednn
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        x = torch.randn(in_shape)
        w = torch.randn(64, in_shape[1], *kernel)
        stride, pad = (2, 2) if strided else (1, 1), (kernel[0] // 2, kernel[1] // 2)
        with torch.no_grad():
            aten = F.conv2d(x, w, None, stride, pad)
            ours = conv_kernel.convolve(x, w, None, stride, pad, (1, 1), 1, in_shape)
            other = (
                torch._C._nn.thnn_conv2d(x, w, kernel, None, stride, pad)
                if onednn
                else torch.ops.aten.mkldnn_convolution(x, w, None, pad, stride, (1, 1), 1)
            )
    finally:
        torch.set_num_threads(before)
    assert torch.equal(ours, aten)
    if torch.equal(other, aten):  # CPU-dependent: all of these differ on AMD EPYC, not all on Xeons
        pytest.skip("both kernels round alike here on this CPU: the choice cannot be told apart")


class TinyTail(nn.Module):
    """Maps under ATen's 20480-value bound: the full forward convolves them with its native
    GEMM, whose sums split differently with the thread count and the number of outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(256, 256, 3, padding=1)
        self.b = nn.Conv2d(256, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_tiny_maps_run_the_full_forwards_call_at_its_thread_count() -> None:
    torch.manual_seed(0)
    model = TinyTail().eval().to(memory_format=torch.channels_last)
    shape = (1, 256, 7, 10)  # P7 at 800x1216
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last) * 4
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            full = model(x)
            for box in [(0, 1, 0, 1), (2, 5, 3, 8), (6, 7, 9, 10)]:
                plan = trace(model, shape, {0: box})
                convs = [s for s in plan._schedule.steps if s.node.name in ("a", "b")]
                assert convs and not any(s.serial for s in convs)  # never dropped to one thread
                assert plan.macs == plan.full_macs  # whole-map canvases, counted as such
                assert torch.equal(plan.run(x)[0], full[..., box[0] : box[1], box[2] : box[3]])
    finally:
        torch.set_num_threads(before)


def test_a_new_map_size_confirms_the_width_found_at_another(monkeypatch) -> None:
    layer = conv_kernel.Layer(256, (256, 256, 3, 3), (1, 1), (1, 1), (1, 1), 1, True, True, 2)
    calls = []
    real = conv_kernel.convolve
    monkeypatch.setattr(conv_kernel, "convolve", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(conv_kernel, "_PROBED", {})
    monkeypatch.setattr(conv_kernel, "_FOUND", {})
    conv_kernel.min_width(layer, (1, 256, 50, 76), (50, 76))
    calls.clear()
    hinted = conv_kernel.min_width(layer, (1, 256, 50, 68), (50, 68))
    hinted_calls = len(calls)
    assert conv_kernel.min_width(layer, (1, 256, 9, 68), (9, 68)) == hinted  # same width: no probe
    assert len(calls) == hinted_calls
    conv_kernel._FOUND.clear()
    calls.clear()
    assert conv_kernel._probe(layer, (1, 256, 50, 68), (50, 68)) == hinted  # as a fresh probe finds
    assert hinted_calls < len(calls)


def test_probed_widths_are_kept_on_disk_for_later_processes(monkeypatch, tmp_path) -> None:
    from tracenet.rft.rules import width_store

    layer = conv_kernel.Layer(256, (64, 256, 3, 3), (1, 1), (1, 1), (1, 1), 1, True, True, 2)
    calls = []
    real = conv_kernel.convolve
    monkeypatch.setattr(conv_kernel, "convolve", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv(width_store.ENV, str(tmp_path))

    def fresh_process() -> int:
        monkeypatch.setattr(conv_kernel, "_PROBED", {})
        monkeypatch.setattr(conv_kernel, "_FOUND", {})
        monkeypatch.setattr(conv_kernel, "_STORE", width_store.WidthStore())
        calls.clear()
        return conv_kernel.min_width(layer, (1, 256, 20, 40), (20, 40))

    width = fresh_process()
    assert calls and len(list(tmp_path.glob("conv-widths-*.json"))) == 1
    assert fresh_process() == width and not calls  # read back: no probe
    next(tmp_path.glob("conv-widths-*.json")).write_text("{not json")
    assert fresh_process() == width and calls  # a damaged file only costs the probe again
    assert fresh_process() == width and not calls  # ...and was replaced
    monkeypatch.setenv(width_store.ENV, "off")
    assert fresh_process() == width and calls


def test_an_unwritable_width_store_warns_once_and_keeps_working(monkeypatch, tmp_path) -> None:
    from tracenet.rft.rules import width_store

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(width_store.ENV, str(blocker / "sub"))  # a folder inside a file
    store = width_store.WidthStore()
    with pytest.warns(UserWarning, match="TRACENET_CACHE_DIR"):
        store.put("a", 3)
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        store.put("b", 1)
    assert later == [] and store.get("a") == 3 and store.get("b") == 1


def test_probe_noise_comes_in_disjoint_slices_of_one_pool() -> None:
    w, x = conv_kernel._noise((4, 3, 3, 3), (1, 3, 5, 7))
    assert w.shape == (4, 3, 3, 3) and x.shape == (1, 3, 5, 7)
    assert w.data_ptr() + w.numel() * w.element_size() <= x.data_ptr()  # x starts after w ends
    again, _ = conv_kernel._noise((4, 3, 3, 3), (1,))
    assert torch.equal(again, w) and w.std() > 0.5  # the same generic values every call


def _rounding_otherwise(monkeypatch, runs: range) -> list[tuple[int, ...]]:
    """The real kernel, but an output whose width is in `runs` is one ulp off, as oneDNN's
    loops for other output widths sum in another order; returns the calls' output shapes."""
    real, shapes = conv_kernel.convolve, []

    def convolve(*args):
        out = real(*args)
        shapes.append(tuple(out.shape))
        return torch.nextafter(out, torch.full_like(out, float("inf"))) if out.shape[-1] in runs else out

    monkeypatch.setattr(conv_kernel, "convolve", convolve)
    return shapes


PROBED = conv_kernel.Layer(64, (64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1, True, True, 2)
MAP = ((1, 64, 50, 76), (50, 76))


@pytest.mark.parametrize(
    ("runs", "width"),
    [
        (range(0), 1),  # any crop
        (range(1, 14), 14),  # narrow outputs sum otherwise (3x3 256-512 channels on an EPYC)
        (range(30, 60), 60),  # so do some wider ones: found although one column matches
        (range(1, 76), 76),  # only the map's own width: crops run padded to it
    ],
)
def test_probes_find_the_narrowest_run_that_sums_as_the_full_map(monkeypatch, runs, width) -> None:
    _rounding_otherwise(monkeypatch, runs)
    assert conv_kernel._probe(PROBED, *MAP) == width
    assert conv_kernel._probe(PROBED, *MAP, hint=width) == width  # a right hint is confirmed
    if width > 1:  # a narrower one (found at another map size) is not
        assert conv_kernel._probe(PROBED, *MAP, hint=width // 2) == width


def test_a_hint_is_confirmed_on_one_row_and_rejected_when_wider_runs_differ(monkeypatch) -> None:
    shapes = _rounding_otherwise(monkeypatch, range(0))
    assert conv_kernel._probe(PROBED, *MAP, hint=1) == 1
    assert {s[2] for s in shapes} == {1}  # one-row reference and runs: no multi-row strip
    assert len(shapes) <= 5  # reference, one column at the border and mid-map, a halfway run twice
    _rounding_otherwise(monkeypatch, range(30, 60))  # the halfway run (38 wide) sums otherwise
    assert conv_kernel._probe(PROBED, *MAP, hint=1) == 60
