"""TraceNet/FullNet: dense outputs, full-mode decoding, input checking, checkpoints, weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracenet import TraceNet
from tracenet.models.config import LEVELS, MASK_PARAMS, ModelConfig
from tracenet.rft.verify import randomize_batchnorm

SMALL = {"fpn_channels": 32, "mask_branch_channels": 16, "min_size": 128, "max_size": 192}


@pytest.fixture(scope="module")
def model() -> TraceNet:
    torch.manual_seed(0)
    return randomize_batchnorm(
        TraceNet.build(backbone="resnet18", **SMALL), torch.Generator().manual_seed(0)
    ).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(0).random((96, 140, 3)) * 255).astype(np.uint8)


def test_dense_outputs_per_level_shapes(model):
    with torch.no_grad():
        out = model(torch.rand(2, 3, 100, 130))  # padded to 128 × 160
    assert out["mask_feats"].shape == (2, 8, 16, 20)
    for lvl in LEVELS:
        h, w = 128, 160
        for _ in range(lvl):
            h, w = (h + 1) // 2, (w + 1) // 2
        assert out[f"cls{lvl}"].shape == (2, 1, h, w)
        assert out[f"box{lvl}"].shape == (2, 4, h, w)
        assert out[f"ctr{lvl}"].shape == (2, 1, h, w)
        assert out[f"controller{lvl}"].shape == (2, MASK_PARAMS, h, w)
        assert (out[f"box{lvl}"] >= 0).all()


def test_dense_is_fx_traceable_and_equal(model):
    gm = torch.fx.symbolic_trace(model.dense)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        a, b = model.dense(x), gm(x)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("backbone", ["resnet50", "mobilenet_v3_large"])
def test_other_backbones_build_and_run(backbone):
    model = TraceNet.build(backbone=backbone, fpn_channels=16, mask_branch_channels=8).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 96))
    assert out["mask_feats"].shape == (1, 8, 8, 12) and out["cls7"].shape == (1, 1, 1, 1)


def test_full_macs_match_flop_counter(model):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, 64, 96)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.dense(x)
    assert model.full_macs(x.shape) == fc.get_total_flops() // 2 > 0


def test_full_segment_result(model, image):
    r = model.segment(image, click=(70, 40), mode="full")
    assert r.mask.shape == image.shape[:2] and r.mask.dtype == bool
    assert r.level in LEVELS and 0 <= r.score <= 1
    assert sorted(r.heads) == list(LEVELS)
    assert r.heads[3]["controller"].shape == (MASK_PARAMS,)
    assert r.macs > model.full_macs((1, 3, 128, 192)) and r.seconds > 0
    x0, y0, x1, y1 = r.box
    assert 0 <= x0 <= x1 <= image.shape[1] and 0 <= y0 <= y1 <= image.shape[0]


def test_mask_is_zero_outside_the_region(model, image):
    # a large explicit box away from the left half: nothing may be set outside its region
    r = model.segment(image, click=(120, 50), mode="full", box=(100, 30, 139, 90))
    _, _, x0, x1 = r.region
    scale = 128 / 96  # resized / input
    cols = np.arange(image.shape[1])
    outside = ((cols + 0.5) * scale < x0 * 8) | ((cols + 0.5) * scale >= x1 * 8)
    assert not r.mask[:, outside].any()
    assert x0 > 0  # the region really excludes part of the image


def test_decode_matches_full_segment(model, image):
    prep = model.prepare(image)
    with torch.no_grad():
        dense = model.dense(prep.tensor)
    clicks = [(0, 0), (139, 95), (70, 40)]
    rs = model.decode(dense, clicks, image_size=image.shape[:2])
    for click, r in zip(clicks, rs, strict=True):
        full = model.segment(image, click=click, mode="full")
        assert np.array_equal(r.mask, full.mask) and r.level == full.level


def test_taps_in_one_stride8_cell_give_one_mask(model, image):
    # resized scale 128/96: input pixels 0..5 all map into the first stride-8 cell
    a = model.segment(image, click=(1, 1), mode="full")
    b = model.segment(image, click=(5, 5), mode="full")
    assert np.array_equal(a.mask, b.mask) and a.score == b.score


def test_grayscale_rgba_pil_and_tensor_inputs_agree(model, image):
    from PIL import Image

    gray = image[:, :, 0]
    ref = model.segment(np.repeat(gray[:, :, None], 3, axis=2), click=(70, 40), mode="full").mask
    assert np.array_equal(model.segment(gray, click=(70, 40), mode="full").mask, ref)
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 7, np.uint8)], axis=2)
    want = model.segment(image, click=(70, 40), mode="full").mask
    assert np.array_equal(model.segment(rgba, click=(70, 40), mode="full").mask, want)
    assert np.array_equal(model.segment(Image.fromarray(image), click=(70, 40), mode="full").mask, want)
    chw = torch.from_numpy(image).permute(2, 0, 1)
    assert np.array_equal(model.segment(chw, click=(70, 40), mode="full").mask, want)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((0, 0, 3), np.uint8), ValueError, "empty"),
        (np.zeros((4, 300, 3), np.uint8), ValueError, "at least 8 pixels"),
        (np.zeros((40, 40, 3), np.uint16), TypeError, "16-bit"),
        (np.zeros((40, 40, 2), np.uint8), ValueError, "H×W×3"),
        (np.full((40, 40, 3), 2.0, np.float32), ValueError, r"\[0, 1\]"),
        ([[0, 1], [2, 3]], TypeError, "numpy array"),
    ],
)
def test_bad_images_are_rejected_clearly(model, image, error, match):
    with pytest.raises(error, match=match):
        model.segment(image, click=(0, 0), mode="full")


def test_16bit_pil_image_is_rejected(model):
    from PIL import Image

    with pytest.raises(TypeError, match="16/32-bit"):
        model.segment(Image.fromarray(np.zeros((40, 40), np.uint16)), click=(0, 0), mode="full")


@pytest.mark.parametrize(
    ("click", "box", "error", "match"),
    [
        ((140, 10), None, ValueError, "outside the 140×96 image"),
        ((-1, 10), None, ValueError, "outside"),
        ((float("nan"), 1), None, ValueError, "outside"),
        ((1,), None, TypeError, r"\(x, y\)"),
        ((5, 5), (10, 10, 5, 20), ValueError, "x0 < x1"),
        ((5, 5), (200, 0, 300, 20), ValueError, "outside"),
    ],
)
def test_bad_taps_and_boxes_are_rejected(model, image, click, box, error, match):
    with pytest.raises(error, match=match):
        model.segment(image, click=click, mode="full", box=box)


def test_unknown_mode_and_training_mode_are_rejected(model, image):
    with pytest.raises(ValueError, match="mode must be"):
        model.segment(image, click=(1, 1), mode="fast")
    model.train()
    try:
        with pytest.raises(RuntimeError, match=r"model\.eval\(\)"):
            model.segment(image, click=(1, 1), mode="full")
    finally:
        model.eval()


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="unknown model options"):
        TraceNet.build(backbone="resnet18", fpn_chanels=64)
    with pytest.raises(ValueError, match="backbone"):
        ModelConfig(backbone="vgg16")
    for bad in (0.0, 1.2):
        with pytest.raises(ValueError, match="whole_from must be a fraction"):
            ModelConfig(whole_from=bad)


def test_checkpoint_round_trip(model, image, tmp_path):
    path = model.save_checkpoint(tmp_path / "sub" / "m.pt")
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temp file left behind
    loaded = TraceNet.from_checkpoint(path)
    assert not loaded.training and loaded.cfg == model.cfg
    a = model.segment(image, click=(70, 40), mode="full")
    b = loaded.segment(image, click=(70, 40), mode="full")
    assert np.array_equal(a.mask, b.mask) and a.heads[5]["cls"].item() == b.heads[5]["cls"].item()


def test_checkpoint_with_nan_weights_is_rejected(model, tmp_path):
    path = model.save_checkpoint(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["dense.heads.cls_logits.weight"][0, 0, 0, 0] = float("nan")
    torch.save(payload, path)
    with pytest.raises(ValueError, match="non-finite"):
        TraceNet.from_checkpoint(path)


class _Payload:
    """Not a tensor: pickle would run code to rebuild it, which weights_only refuses."""


def test_checkpoint_loading_runs_no_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "tracenet-v1", "options": {}, "state_dict": {}, "x": _Payload()}, path)
    with pytest.raises(ValueError, match="not a loadable TraceNet checkpoint"):
        TraceNet.from_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        TraceNet.from_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "other.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a loadable"):
        TraceNet.from_checkpoint(tmp_path / "other.pt")


def test_checkpoint_of_another_architecture_is_rejected(model, tmp_path):
    other = TraceNet.build(backbone="resnet18", **{**SMALL, "fpn_channels": 16})
    path = other.save_checkpoint(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["options"] = model.cfg.to_dict()
    torch.save(payload, path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        TraceNet.from_checkpoint(path)


def test_pretrained_from_local_file(tmp_path):
    import torchvision

    net = torchvision.models.resnet18()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    model = TraceNet.build(backbone="resnet18", pretrained=tmp_path / "r18.pth", **SMALL)
    assert torch.equal(model.dense.backbone.conv1.weight, net.conv1.weight)
    with pytest.raises(FileNotFoundError, match="neither a file nor"):
        TraceNet.build(backbone="resnet18", pretrained=tmp_path / "none.pth", **SMALL)


def test_pretrained_offline_says_how_to_provide_the_file(monkeypatch):
    from urllib.error import URLError

    from torchvision.models import ResNet18_Weights

    def offline(self, *args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(type(ResNet18_Weights.DEFAULT), "get_state_dict", offline)
    with pytest.raises(RuntimeError, match=r"pretrained='/path/to/resnet18-.*\.pth'"):
        TraceNet.build(backbone="resnet18", pretrained="DEFAULT", **SMALL)


def test_cpu_inference_runs_channels_last_and_training_does_not(image):
    torch.manual_seed(0)
    model = TraceNet.build(backbone="resnet18", **SMALL)
    conv = model.dense.backbone.conv1.weight
    contiguous = torch.contiguous_format
    assert conv.is_contiguous(memory_format=contiguous)
    model.eval()
    want = model.dense(model.prepare(image).tensor)["mask_feats"]
    r_full = model.segment(image, click=(70, 40), mode="full")
    r_trace = model.segment(image, click=(70, 40), mode="trace")
    assert model.dense.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert np.array_equal(r_full.mask, r_trace.mask)
    got = model.dense(model.prepare(image).tensor)["mask_feats"]
    assert torch.allclose(got, want, atol=1e-5)  # the layout changes speed, not values
    model.train()
    assert model.dense.backbone.conv1.weight.is_contiguous(memory_format=contiguous)
