"""Static-shape tap networks (tracenet.export.static/host): exact against the PyTorch model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tracenet.export import host
from tracenet.export.build import check_formats
from tracenet.export.static import TapNet
from tracenet.models.config import LEVELS
from tracenet.models.tracenet import TraceNet

SIZE = 128
H, W = 90, 120
# Corners, border midpoints, centre, near-corner, interior: every level's window crosses a border.
TAPS = [(0, 0), (W - 1, 0), (0, H - 1), (W - 1, H - 1), (W // 2, 0), (0, H // 2), (W // 2, H // 2), (33, 71)]


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
        logits = TapNet(model, SIZE, "full")(torch.from_numpy(fi.image), host_cells(fi, (W // 2, H // 2)))[3]
        model.dense.heads.controller.bias[168] -= logits.median()
    return model


def reference(model: TraceNet, size: int) -> TraceNet:
    """The PyTorch model with the artifact's resize rule (long side = size)."""
    ref = TraceNet(host.fixed_config(model.cfg, size))
    ref.load_state_dict(model.state_dict())
    return ref.eval()


def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def as_outputs(level, score, box, logits) -> dict[str, np.ndarray]:
    return {"level": level.numpy(), "score": score.numpy(), "box": box.numpy(), "logits": logits.numpy()}


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
def test_windowed_heads_equal_dense_heads_at_every_level(backbone: str) -> None:
    """The (2R+1)² window with validity masks reproduces the padded convs, borders included."""
    model = tiny_model(backbone)
    fi = host.prepare(image(), model.cfg, SIZE)
    x = torch.from_numpy(fi.image)
    net = TapNet(model, SIZE, "trace").eval()
    with torch.no_grad():
        feats = model.dense.fpn(model.dense.backbone(x))
        dense = model.dense.heads(feats)
        for tap in TAPS:
            cells = torch.from_numpy(host.tap_cells(fi.geo, tap))
            for i, (lvl, got) in enumerate(zip(LEVELS, net._heads_window(feats, cells), strict=True)):
                r, c = cells[i].tolist()
                for key, value in zip(("cls", "box", "ctr", "controller"), got, strict=True):
                    want = dense[f"{key}{lvl}"][0, :, r, c]
                    torch.testing.assert_close(value, want, atol=1e-5, rtol=1e-4, msg=f"{key}{lvl} at {tap}")


def test_unmasked_window_would_differ_at_the_border(r18: TraceNet) -> None:
    """Control: without the validity masks the border taps are wrong, so the test above can fail."""
    model = r18
    fi = host.prepare(image(), model.cfg, SIZE)
    net = TapNet(model, SIZE, "trace").eval()
    with torch.no_grad():
        feats = model.dense.fpn(model.dense.backbone(torch.from_numpy(fi.image)))
        cells = torch.from_numpy(host.tap_cells(fi.geo, (0, 0)))
        ones = torch.ones(2 * net.radius + 1, 2 * net.radius + 1)
        x = (
            feats[0]
            .index_select(2, (cells[0, 0] + torch.arange(-5, 6)).clamp(0))
            .index_select(3, (cells[0, 1] + torch.arange(-5, 6)).clamp(0))
        )
        from tracenet.export.static import _tower

        unmasked = _tower(model.dense.heads.box_tower, x, ones)
        masked = _tower(
            model.dense.heads.box_tower, x * _valid(cells[0], feats[0]), _valid(cells[0], feats[0])
        )
    assert not torch.allclose(unmasked[..., 1, 1], masked[..., 1, 1], atol=1e-3)


def _valid(cell: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    span = torch.arange(-5, 6)
    rows, cols = cell[0] + span, cell[1] + span
    h, w = feat.shape[-2:]
    return ((rows >= 0) & (rows < h)).float().view(-1, 1) * ((cols >= 0) & (cols < w)).float().view(1, -1)


@pytest.fixture(scope="module")
def r18() -> TraceNet:
    return tiny_model()


@pytest.mark.parametrize("mode", ["full", "trace"])
def test_tap_network_masks_equal_the_model(mode: str, r18: TraceNet) -> None:
    model = r18
    ref = reference(model, SIZE)
    fi = host.prepare(image(), model.cfg, SIZE)
    x = torch.from_numpy(fi.image)
    net = TapNet(model, SIZE, mode).eval()
    nonempty = 0
    with torch.no_grad():
        dense = ref.dense(x)
        for tap in TAPS:
            out = as_outputs(*net(x, host_cells(fi, tap)))
            for b in (None, (0, 0, W / 2, H / 2)):  # predicted box, then a prompt box (large region)
                want = ref.decode(dense, [tap], None if b is None else [b], image_size=fi.geo.image)[0]
                got = host.decode_outputs(out, fi.geo, model.cfg, b)
                assert (got.level, got.region) == (want.level, want.region), tap
                assert got.score == pytest.approx(want.score, rel=1e-4)
                np.testing.assert_array_equal(got.mask, want.mask)
                nonempty += bool(want.mask.any())
    assert nonempty >= len(TAPS)  # the prompt-box masks at least are not trivially empty


def host_cells(fi: host.FixedInput, tap) -> torch.Tensor:
    return torch.from_numpy(host.tap_cells(fi.geo, tap))


def test_prepare_pads_to_the_square_input(r18: TraceNet) -> None:
    fi = host.prepare(image(), r18.cfg, 256)
    assert fi.image.shape == (1, 3, 256, 256) and fi.image.dtype == np.float32
    assert fi.geo.resized == (192, 256) and fi.geo.padded == (256, 256)
    assert not fi.image[..., 192:, :].any()  # zeros after normalizing, as the model pads


def test_bad_input_is_rejected_early() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="multiple of 128"):
        TapNet(model, 200, "trace")
    with pytest.raises(ValueError, match="mode must be one of"):
        TapNet(model, SIZE, "fast")
    with pytest.raises(ValueError, match="unsupported export formats"):
        check_formats(["onnx", "coreml"])
    with pytest.raises(ValueError, match="also request 'tflite'"):
        check_formats(["tflite_int8"])
    fi = host.prepare(image(), model.cfg, SIZE)
    with pytest.raises(ValueError, match="outside"):
        host.tap_cells(fi.geo, (W, 0))
    model.dense.heads.cls_tower[0][0].padding = (0, 0)
    with pytest.raises(ValueError, match="3×3 stride-1 pad-1"):
        TapNet(model, SIZE, "trace")


@pytest.mark.realdata
def test_verify_catches_a_wrong_artifact(r18: TraceNet, coco_mini, monkeypatch) -> None:
    """verify() on a stand-in runtime (the PyTorch TapNet), then on one that flips the logits."""
    from pathlib import Path

    from tracenet.export import verify as vf

    net = TapNet(r18, SIZE, "trace").eval()

    def run(image: np.ndarray, cells: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return as_outputs(*net(torch.from_numpy(image), torch.from_numpy(cells)))

    def flipped(image: np.ndarray, cells: np.ndarray) -> dict[str, np.ndarray]:
        out = run(image, cells)
        return {**out, "logits": -out["logits"]}

    runtimes = {"good.onnx": run, "flipped.tflite": flipped}
    monkeypatch.setattr(vf.metadata, "read", lambda p: {"input_size": [SIZE, SIZE]})
    monkeypatch.setattr(vf.runners, "load", lambda p, threads: runtimes[Path(p).name])
    samples = vf.coco_samples(coco_mini, max_images=1)
    report = vf.verify(r18, [Path(n) for n in runtimes], samples)
    good, bad = report["good.onnx"], report["flipped.tflite"]
    assert good["taps"] == 8 and good["min_iou"] == 1.0 and good["max_logit_diff"] < 1e-4
    assert bad["min_iou"] < 0.5 and bad["max_logit_diff"] > 1e-3
