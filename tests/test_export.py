"""Static-shape tap networks (tracenet.export.static/host): exact against the PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tracenet.export import host
from tracenet.export.build import check_formats
from tracenet.export.static import OUTPUTS, TapNet, _Pyramid, window_start
from tracenet.models.config import LEVELS
from tracenet.models.tracenet import TraceNet

SIZE = 128  # the artifacts' size in test_export_artifacts (conversion time)
WIN_SIZE = 256  # P3 and P4 maps (32, 16) larger than the head window (11): every crop path runs
MASK_WINDOW = 8
H, W = 90, 120
# Corners, border midpoints, centre, near-corner, interior: every level's window crosses a border.
TAPS = [(0, 0), (W - 1, 0), (0, H - 1), (W - 1, H - 1), (W // 2, 0), (0, H // 2), (W // 2, H // 2), (33, 71)]
# Prompt boxes: a large one (its region exceeds MASK_WINDOW cells at WIN_SIZE) and small ones.
BOXES = [None, (0, 0, W / 2, H / 2), (W - 12, H - 9, W, H), (50, 30, 60, 40)]


def tiny_model(backbone: str = "resnet18") -> TraceNet:
    """Small channels; BatchNorm statistics far from identity, so wrong border padding shows."""
    torch.manual_seed(0)
    model = TraceNet.build(backbone=backbone, fpn_channels=32, mask_branch_channels=16)
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
    nn.init.normal_(model.dense.heads.controller.weight, std=0.1)  # instance-specific masks
    model.eval()
    # Centre the mask logits of an untrained head on zero (channel 168 is the last bias, b3),
    # so that masks have both signs and a wrong pixel shows.
    fi = host.prepare(image(), model.cfg, SIZE)
    with torch.no_grad():
        logits = TapNet(model, SIZE, "full")(**feed(fi, (W // 2, H // 2)))[3]
        model.dense.heads.controller.bias[168] -= logits.median()
    return model


def reference(model: TraceNet, size: int) -> TraceNet:
    """The PyTorch model with the artifact's resize rule (long side = size)."""
    ref = TraceNet(host.fixed_config(model.cfg, size))
    ref.load_state_dict(model.state_dict())
    return ref.eval()


def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def feed(fi: host.FixedInput, tap, box=None) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in host.tap_inputs(fi, tap, box).items()}


def as_outputs(*outs: torch.Tensor) -> dict[str, np.ndarray]:
    return {name: t.numpy() for name, t in zip(OUTPUTS, outs, strict=True)}


@pytest.fixture(scope="module")
def r18() -> TraceNet:
    return tiny_model()


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
def test_windowed_heads_equal_dense_heads_at_every_level(backbone: str) -> None:
    """Heads on (2R+1)² windows of windowed P3/P4 (validity masks) reproduce the padded convs."""
    model = tiny_model(backbone)
    fi = host.prepare(image(), model.cfg, WIN_SIZE)
    x = torch.from_numpy(fi.image)
    net = TapNet(model, WIN_SIZE, "trace", MASK_WINDOW).eval()
    assert net.crop and net.maps[1] > 2 * net.radius + 1  # P4's heads run on a window too
    with torch.no_grad():
        c = model.dense.backbone(x)
        dense = model.dense.heads(model.dense.fpn(c))
        pyr = _Pyramid(model.dense.fpn, c, crop=True)
        for tap in TAPS:
            cells = feed(fi, tap)["cells"]
            for i, lvl in enumerate(LEVELS):
                r, col = cells[i].tolist()
                got = net._heads_at(pyr, i, cells[i])
                for key, value in zip(("cls", "box", "ctr", "controller"), got, strict=True):
                    want = dense[f"{key}{lvl}"][0, :, r, col]
                    torch.testing.assert_close(value, want, atol=1e-5, rtol=1e-4, msg=f"{key}{lvl} at {tap}")


def test_windowed_pyramid_equals_the_fpn(r18: TraceNet) -> None:
    """P3/P4 windows from gathered C3/C4 and the top-down path: the FPN's values, zero outside."""
    fi = host.prepare(image(), r18.cfg, WIN_SIZE)
    with torch.no_grad():
        c = r18.dense.backbone(torch.from_numpy(fi.image))
        fpn = r18.dense.fpn(c)
        pyr = _Pyramid(r18.dense.fpn, c, crop=True)
        for i in (0, 1):
            h = fpn[i].shape[-1]
            padded = nn.functional.pad(fpn[i], (20, 20, 20, 20))
            for r0, c0 in [(-6, -6), (-1, h - 9), (h - 5, 3), (7, 8), (0, 0)]:
                k = 13 if i == 0 else 9
                got = pyr.window(
                    i, torch.tensor(r0, dtype=torch.int32), torch.tensor(c0, dtype=torch.int32), k
                )
                want = padded[..., r0 + 20 : r0 + 20 + k, c0 + 20 : c0 + 20 + k]
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=f"P{i + 3} at {(r0, c0)}")
            torch.testing.assert_close(pyr.full(i), fpn[i], atol=1e-4, rtol=1e-4)


def test_unmasked_window_would_differ_at_the_border(r18: TraceNet) -> None:
    """Control: without the validity masks the border taps are wrong, so the tests above can fail."""
    from tracenet.export.static import _tower, _valid

    model = r18
    fi = host.prepare(image(), model.cfg, SIZE)
    with torch.no_grad():
        feats = model.dense.fpn(model.dense.backbone(torch.from_numpy(fi.image)))
        cells = feed(fi, (0, 0))["cells"]
        r0, c0 = cells[0, 0] - 5, cells[0, 1] - 5
        ones = torch.ones(1, 1, 11, 11)
        x = (
            feats[0]
            .index_select(2, (r0 + torch.arange(11)).clamp(0))
            .index_select(3, (c0 + torch.arange(11)).clamp(0))
        )
        valid = _valid(r0, c0, 11, feats[0].shape[-1])
        unmasked = _tower(model.dense.heads.box_tower, 0, x, ones)
        masked = _tower(model.dense.heads.box_tower, 0, x * valid, valid)
    assert not torch.allclose(unmasked[..., 1, 1], masked[..., 1, 1], atol=1e-3)


@pytest.mark.parametrize(
    ("mode", "size", "mask_window"),
    [("full", SIZE, None), ("trace", SIZE, None), ("trace", WIN_SIZE, MASK_WINDOW)],
    ids=["full", "trace-dense-mask", "trace-mask-window"],
)
def test_tap_network_masks_equal_the_model(mode: str, size: int, mask_window, r18: TraceNet) -> None:
    """Every tap's mask equals the PyTorch model's; where the mask region exceeds the mask
    window, it equals the model's over the region clipped to the window (verify's reference)."""
    from tracenet.export.verify import windowed_reference

    model = r18
    ref = reference(model, size)
    fi = host.prepare(image(), model.cfg, size)
    net = TapNet(model, size, mode, mask_window).eval()
    seen = {"exact": 0, "clipped": 0, "nonempty": 0}
    with torch.no_grad():
        dense = ref.dense(torch.from_numpy(fi.image))
        for tap in TAPS:
            for b in BOXES:
                out = as_outputs(*net(**feed(fi, tap, b)))
                want = ref.decode(dense, [tap], None if b is None else [b], image_size=fi.geo.image)[0]
                got = host.decode_outputs(out, fi.geo, model.cfg, b)
                assert (got.level, got.region) == (want.level, want.region), tap
                assert got.score == pytest.approx(want.score, rel=1e-4)
                n = size // 8
                start = (
                    window_start(*want.region[:2], net.mask_window, n),
                    window_start(*want.region[2:], net.mask_window, n),
                )
                assert got.window[::2] == start, (tap, b)
                expected = (
                    windowed_reference(ref, dense, fi.geo, tap, want, got.window)
                    if got.clipped
                    else want.mask
                )
                np.testing.assert_array_equal(got.mask, expected, err_msg=f"{tap} {b}")
                seen["clipped" if got.clipped else "exact"] += 1
                seen["nonempty"] += bool(expected.any())
    assert seen["nonempty"] >= len(TAPS) // 2  # masks are not trivially empty
    if mask_window is None:
        assert seen["clipped"] == 0
    else:  # both cases were exercised
        assert seen["clipped"] >= len(TAPS) and seen["exact"] >= 2 * len(TAPS), seen


def test_window_start_contains_any_region_that_fits() -> None:
    n, m = 16, 6
    for lo in range(n):
        for hi in range(lo + 1, n + 1):
            s = window_start(lo, hi, m, n)
            assert 0 <= s <= n - m
            if hi - lo <= m:
                assert s <= lo and hi <= s + m
            else:  # the window's centre part of the region
                assert lo <= s and s + m <= hi and (s - lo) - (hi - s - m) in (0, 1)


def test_mask_window_costs_fewer_macs(r18: TraceNet) -> None:
    from tracenet.export.metadata import network_macs

    full = network_macs(TapNet(r18, WIN_SIZE, "full"))
    dense_mask = network_macs(TapNet(r18, WIN_SIZE, "trace"))
    windowed = network_macs(TapNet(r18, WIN_SIZE, "trace", MASK_WINDOW))
    assert windowed < dense_mask < full
    assert TapNet(r18, WIN_SIZE, "trace", 10_000).mask_window == WIN_SIZE // 8  # whole map: dense


def test_prepare_pads_to_the_square_input(r18: TraceNet) -> None:
    fi = host.prepare(image(), r18.cfg, 256)
    assert fi.image.shape == (1, 3, 256, 256) and fi.image.dtype == np.float32
    assert fi.geo.resized == (192, 256) and fi.geo.padded == (256, 256)
    assert not fi.image[..., 192:, :].any()  # zeros after normalizing, as the model pads
    inputs = host.tap_inputs(fi, (0, 0), (0, 0, W / 2, H / 2))
    assert inputs["extent"].tolist() == [24, 32] and inputs["extent"].dtype == np.int32
    np.testing.assert_allclose(inputs["prompt"], [0, 0, 128, 96], rtol=1e-6)
    assert not host.tap_inputs(fi, (0, 0))["prompt"].any()  # zeros: the predicted box


def test_bad_input_is_rejected_early() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="multiple of 128"):
        TapNet(model, 200, "trace")
    with pytest.raises(ValueError, match="mode must be one of"):
        TapNet(model, SIZE, "fast")
    with pytest.raises(ValueError, match="mask_window must be"):
        TapNet(model, SIZE, "trace", 0)
    with pytest.raises(ValueError, match="unsupported export formats"):
        check_formats(["onnx", "coreml"])
    with pytest.raises(ValueError, match="also request 'tflite'"):
        check_formats(["tflite_int8"])
    fi = host.prepare(image(), model.cfg, SIZE)
    with pytest.raises(ValueError, match="outside"):
        host.tap_cells(fi.geo, (W, 0))
    model.dense.mask_branch.tower[0][0].padding = (0, 0)
    with pytest.raises(ValueError, match="mask branch"):
        TapNet(model, WIN_SIZE, "trace", MASK_WINDOW)
    TapNet(model, WIN_SIZE, "trace")  # a dense mask branch does not care
    model.dense.heads.cls_tower.convs[0].padding = (0, 0)
    with pytest.raises(ValueError, match="3×3 stride-1 pad-1"):
        TapNet(model, SIZE, "trace")


@pytest.mark.realdata
def test_verify_catches_a_wrong_artifact(r18: TraceNet, coco_mini, monkeypatch) -> None:
    """verify() on a stand-in runtime (the PyTorch TapNet), then on one that flips the logits."""
    from pathlib import Path

    from tracenet.export import verify as vf

    net = TapNet(r18, SIZE, "trace").eval()

    def run(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return as_outputs(*net(**{k: torch.from_numpy(v) for k, v in inputs.items()}))

    def flipped(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        out = run(**inputs)
        return {**out, "logits": -out["logits"]}

    runtimes = {"good.onnx": run, "flipped.tflite": flipped}
    monkeypatch.setattr(vf.metadata, "read", lambda p: {"input_size": [SIZE, SIZE]})
    monkeypatch.setattr(vf.runners, "load", lambda p, threads: runtimes[Path(p).name])
    samples = vf.coco_samples(coco_mini, max_images=1)
    report = vf.verify(r18, [Path(n) for n in runtimes], samples)
    good, bad = report["good.onnx"], report["flipped.tflite"]
    assert good["taps"] == 8 and good["min_iou"] == 1.0 and good["max_logit_diff"] < 1e-4
    assert bad["min_iou"] < 0.5 and bad["max_logit_diff"] > 1e-3


def torch_runner(net: TapNet):
    """A stand-in runtime: the PyTorch TapNet with the runners' call form, counting its calls."""

    def run(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        run.calls += 1
        with torch.no_grad():
            return as_outputs(*net(**{k: torch.from_numpy(v) for k, v in inputs.items()}))

    run.calls = 0
    return run


@pytest.mark.parametrize("exact", ["tracedense", "full"])
def test_exact_tap_falls_back_where_the_window_clips(exact: str, r18: TraceNet) -> None:
    """Every tap's mask equals the model's unclipped mask: a region larger than the mask window
    (a big prompt box) is answered by the exact artifact (the dense-mask TraceNet the export
    stage writes as the default fallback, or FullNet), and the result says so."""
    from tracenet.export.fallback import ExactTap, prompt_fits

    ref = reference(r18, WIN_SIZE)
    fi = host.prepare(image(), r18.cfg, WIN_SIZE)
    trace = torch_runner(TapNet(r18, WIN_SIZE, "trace", MASK_WINDOW).eval())
    full = torch_runner(
        TapNet(r18, WIN_SIZE, *(("trace", None) if exact == "tracedense" else ("full",))).eval()
    )
    tap_net = ExactTap(trace, full, r18.cfg, MASK_WINDOW)
    seen = {"fallback": 0, "exact": 0, "clipped_without_fallback": 0, "skipped_trace": 0}
    with torch.no_grad():
        dense = ref.dense(torch.from_numpy(fi.image))
    for tap in TAPS:
        for b in BOXES:
            want = ref.decode(dense, [tap], None if b is None else [b], image_size=fi.geo.image)[0]
            calls = trace.calls, full.calls
            got = tap_net(fi, tap, b)
            assert not got.clipped and (got.level, got.region) == (want.level, want.region)
            np.testing.assert_array_equal(got.mask, want.mask, err_msg=f"{tap} {b}")
            fits = prompt_fits(fi, r18.cfg, b, MASK_WINDOW)
            assert trace.calls - calls[0] == int(fits)  # a prompt region too big: no TraceNet call
            assert full.calls - calls[1] == int(got.fallback)
            seen["skipped_trace"] += not fits
            seen["fallback" if got.fallback else "exact"] += 1
            raw = host.decode_outputs(trace(**host.tap_inputs(fi, tap, b)), fi.geo, r18.cfg, b)
            assert raw.clipped == got.fallback  # falls back exactly where TraceNet clips
            seen["clipped_without_fallback"] += not np.array_equal(raw.mask, want.mask)
    # both paths ran, and without the fallback some masks would differ from the model's
    assert seen["fallback"] >= len(TAPS) and seen["exact"] >= 2 * len(TAPS), seen
    assert seen["clipped_without_fallback"] >= 2 and seen["skipped_trace"] >= len(TAPS), seen


def test_exact_tap_needs_a_fallback_artifact(r18: TraceNet, tmp_path, monkeypatch) -> None:
    import json
    from pathlib import Path

    from tracenet.export import fallback

    with pytest.raises(ValueError, match="exact artifact to fall back to"):
        fallback.ExactTap(lambda **kw: None, None, r18.cfg, MASK_WINDOW)
    fallback.ExactTap(lambda **kw: None, None, r18.cfg, None)  # a window-free artifact is exact itself
    assert fallback.partner("a/resnet50_trace_384_int8.tflite").name == "resnet50_full_384_int8.tflite"
    assert [p.name for p in fallback.exact_candidates("resnet50_trace_384.onnx")] == [
        "resnet50_tracedense_384.onnx",
        "resnet50_full_384.onnx",
    ]
    with pytest.raises(ValueError, match="not a TraceNet artifact"):
        fallback.partner("resnet50_full_384.tflite")
    assert fallback.window_cells({"input_size": [384, 384], "mask_window": {"cells": 20}}) == 20
    assert fallback.window_cells({"input_size": [384, 384], "mask_window": {"cells": 48}}) is None
    trace = tmp_path / "resnet18_trace_256.onnx"
    trace.write_bytes(b"")
    meta = {"input_size": [256, 256], "mask_window": {"cells": MASK_WINDOW}, "backbone": "resnet18"}
    (tmp_path / "resnet18_trace_256.onnx.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match=r"resnet18_tracedense_256\.onnx or resnet18_full_256\.onnx"):
        fallback.load(trace, r18.cfg)
    other = tmp_path / "resnet18_trace_256_windowed.onnx"  # not exact itself: refused as a fallback
    other.write_bytes(b"")
    (tmp_path / "resnet18_trace_256_windowed.onnx.json").write_text(
        json.dumps({**meta, "backbone": "resnet18"})
    )
    with pytest.raises(ValueError, match="not an exact artifact"):
        fallback.load(trace, r18.cfg, exact=other)
    # the dense-mask TraceNet is the default fallback; FullNet where it is absent
    exact = {"input_size": [256, 256], "mask_window": {"cells": 32}, "backbone": "resnet18"}
    for kind in ("full", "tracedense"):
        (tmp_path / f"resnet18_{kind}_256.onnx").write_bytes(b"")
        (tmp_path / f"resnet18_{kind}_256.onnx.json").write_text(json.dumps({**exact, "mode": kind}))
    assert fallback.exact_artifact(trace).name == "resnet18_tracedense_256.onnx"
    loaded = []
    monkeypatch.setattr(fallback.runners, "load", lambda p, threads: loaded.append(Path(p).name) or p)
    tap = fallback.load(trace, r18.cfg)
    assert (
        loaded == ["resnet18_tracedense_256.onnx", "resnet18_trace_256.onnx"]
        and tap.mask_window == MASK_WINDOW
    )
    (tmp_path / "resnet18_tracedense_256.onnx").unlink()
    assert fallback.exact_artifact(trace).name == "resnet18_full_256.onnx"


def test_expected_ratio_counts_fallbacks() -> None:
    from tracenet.export.profile import markdown, ratios

    key = {
        "backbone": "resnet50",
        "format": "tflite",
        "precision": "float32",
        "input_size": 384,
        "threads": 1,
    }
    rows = [
        {**key, "mode": m, "median_ms": ms, "macs": macs, "artifact": f"resnet50_{m}_384.tflite"}
        for m, ms, macs in [("trace", 9, 4), ("full", 10, 8)]
    ]
    pair = {**key, "trace_ms": 40.0, "full_ms": 100.0, "mac_ratio": 0.5, "full": "resnet50_full_384.tflite"}
    rates = {"resnet50": {"prompt_box": 0.25, "predicted_box": 0.1}}
    (sep,) = ratios(rows)
    assert not sep["alternated"] and sep["latency_ratio"] == 0.9 and "expected_ratio_prompt_box" not in sep
    assert sep["exact"] == "resnet50_full_384.tflite" and sep["exact_ratio"] == 1.0
    # FullNet as the fallback: a FullNet call instead of (prompt) or after (predicted) TraceNet
    (r,) = ratios(rows, [pair], rates)
    assert r["alternated"] and r["latency_ratio"] == pytest.approx(0.4) and r["mac_ratio"] == 0.5
    assert r["expected_ratio_prompt_box"] == pytest.approx(0.75 * 0.4 + 0.25)
    assert r["expected_ratio_predicted_box"] == pytest.approx(0.4 + 0.1)
    assert "| 0.40 alt | 0.50 | resnet50_full_384.tflite (1.00) | 25.0% / 10.0% | 0.55 / 0.50 |" in markdown(
        [], [r]
    )
    # the dense-mask TraceNet as the fallback (what the host uses when exported): its latency counts
    dense = {**pair, "exact": "resnet50_tracedense_384.tflite", "exact_ms": 60.0}
    (r,) = ratios(rows, [dense], rates)
    assert r["expected_ratio_prompt_box"] == pytest.approx(0.75 * 0.4 + 0.25 * 0.6)
    assert r["expected_ratio_predicted_box"] == pytest.approx(0.4 + 0.1 * 0.6)
    assert "resnet50_tracedense_384.tflite (0.60) | 25.0% / 10.0% | 0.45 / 0.46 |" in markdown([], [r])
    rows.append({**key, "mode": "tracedense", "median_ms": 6, "macs": 5, "artifact": "d.tflite"})
    (sep,) = ratios(rows, None, rates)
    assert sep["exact"] == "d.tflite" and sep["expected_ratio_prompt_box"] == pytest.approx(
        0.75 * 0.9 + 0.25 * 0.6
    )


def test_random_weights_are_recalibrated_for_export(tmp_path) -> None:
    """Random weights as built have BatchNorm statistics (0, 1): the mask logits are nearly
    constant over the map (and ~1e-8 at MobileNetV3-L), so masks are decided by float rounding.
    The export stage recalibrates the statistics, so the logits have a trained model's scale and
    vary over the map; a checkpoint is exported untouched."""
    from omegaconf import OmegaConf

    from tracenet.export import stage
    from tracenet.export.calibrate import synthetic_images

    p = OmegaConf.create(
        {
            "checkpoint": None,
            "backbones": ["resnet18"],
            "input_size": SIZE,
            "verify": {"data": str(tmp_path / "absent")},
        }
    )
    ((model, weights),) = stage.models(p)
    assert not model.training and weights["batchnorm"]["recalibrated"]
    assert "synthetic" in weights["batchnorm"]["data"] and weights["batchnorm"]["layers"] > 50
    torch.manual_seed(stage.SEED)
    as_built = TraceNet.build(backbone="resnet18").eval()  # the same weights, initial statistics
    picture = synthetic_images(1, seed=1)[0]  # like the calibration images, not one of them

    def logits(m: TraceNet) -> torch.Tensor:
        fi = host.prepare(picture, m.cfg, SIZE)
        with torch.no_grad():
            return TapNet(m, SIZE, "full")(**feed(fi, (160, 120)))[3]

    flat = logits(as_built)
    assert flat.std() < 1e-2 and flat.abs().max() < 0.1, (flat.std(), flat.abs().max())  # degenerate
    got = logits(model)
    assert got.std() > 0.05 and 0.02 < got.abs().median() < 50, (got.std(), got.abs().median())
    for name, value in as_built.state_dict().items():  # only BatchNorm statistics changed
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0, msg=name)

    ckpt = tiny_model().save_checkpoint(tmp_path / "model.pt")
    ((trained, weights),) = stage.models(
        OmegaConf.create({**OmegaConf.to_container(p), "checkpoint": str(ckpt)})
    )
    assert weights["batchnorm"] == "as trained"
    for name, value in tiny_model().state_dict().items():
        torch.testing.assert_close(trained.state_dict()[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.realdata
def test_verify_checks_the_host_result_with_fallback(r18: TraceNet, coco_mini, monkeypatch) -> None:
    """A windowed TraceNet stand-in with its exact fallback (the dense-mask TraceNet, else
    FullNet): every tap reaches IoU 1 against the model's unclipped mask, clipped taps fell back,
    and the rates over coco_mini are counted."""
    from pathlib import Path

    from tracenet.export import verify as vf

    runtimes = {
        "r18_trace_256.onnx": torch_runner(TapNet(r18, WIN_SIZE, "trace", MASK_WINDOW).eval()),
        "r18_tracedense_256.onnx": torch_runner(TapNet(r18, WIN_SIZE, "trace").eval()),
        "r18_full_256.onnx": torch_runner(TapNet(r18, WIN_SIZE, "full").eval()),
    }
    metas = {
        "r18_trace_256.onnx": {"input_size": [WIN_SIZE] * 2, "mask_window": {"cells": MASK_WINDOW}},
        "r18_tracedense_256.onnx": {"input_size": [WIN_SIZE] * 2, "mask_window": {"cells": WIN_SIZE // 8}},
        "r18_full_256.onnx": {"input_size": [WIN_SIZE] * 2, "mask_window": {"cells": WIN_SIZE // 8}},
    }

    def load(p, threads):
        if Path(p).name not in runtimes:
            raise FileNotFoundError(p)
        return runtimes[Path(p).name]

    monkeypatch.setattr(vf.metadata, "read", lambda p: metas[Path(p).name])
    monkeypatch.setattr(vf.runners, "load", load)
    samples = vf.coco_samples(coco_mini, max_images=1)
    for fallback_name in ("r18_tracedense_256.onnx", "r18_full_256.onnx"):
        calls = runtimes[fallback_name].calls
        report = vf.verify(r18, [Path("r18_trace_256.onnx")], samples)
        trace = report["r18_trace_256.onnx"]
        assert trace["fallback_artifact"] == fallback_name
        assert trace["taps"] == 8 and trace["min_iou"] == 1.0 and trace["same_level"] == 8
        assert 0 < trace["clipped"] == trace["fallback"] < 8 and trace["min_iou_window"] == 1.0
        assert all(r["fallback"] == r["clipped"] for r in trace["rows"])
        assert runtimes[fallback_name].calls - calls == trace["fallback_calls"]
        assert trace["max_logit_diff"] < 1e-4 and trace["median_max_abs_logit"] > 1e-2
        runtimes.pop("r18_tracedense_256.onnx", None)  # then FullNet: the fallback where it is absent

    rates = vf.fallback_rates(coco_mini, r18, WIN_SIZE, MASK_WINDOW, max_images=8)
    assert rates["taps"] >= 20 and 0 < rates["prompt_box"] < 1 and 0 <= rates["predicted_box"] <= 1
