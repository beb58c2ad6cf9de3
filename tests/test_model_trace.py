"""Trace mode (RFT) against full mode: same heads and masks, fewer MACs, sessions reuse crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracenet import TraceNet
from tracenet.models.config import LEVELS
from tracenet.rft.verify import randomize_batchnorm

SMALL = {"fpn_channels": 32, "mask_branch_channels": 16, "min_size": 160, "max_size": 240}


def _diamond_params(g: torch.Generator) -> torch.Tensor:
    """Dynamic-head parameters whose mask is a diamond around the tap's cell, bent by the mask
    features: partial masks that depend on both, so IoU checks compare real masks."""
    w1 = torch.zeros(8, 10)
    w1[0, 0], w1[1, 0], w1[2, 1], w1[3, 1] = 1, -1, 1, -1  # |rx|, |ry| through ReLUs
    w1[4:, 2:] = torch.randn(4, 8, generator=g) * 0.2
    w3 = torch.tensor([-4.0, -4, -4, -4, 1, -1, 1, -1])
    return torch.cat([w1.flatten(), torch.eye(8).flatten(), w3, torch.zeros(16), torch.ones(1)])


def random_model(backbone: str = "resnet18", seed: int = 0, **options) -> TraceNet:
    """Random weights with randomized BatchNorm statistics; the controller's bias gives
    diamond-shaped masks (see _diamond_params) and its weights vary them per location."""
    torch.manual_seed(seed)
    model = TraceNet.build(backbone=backbone, **{**SMALL, **options})
    g = torch.Generator().manual_seed(seed)
    randomize_batchnorm(model, g)
    with torch.no_grad():
        model.dense.heads.controller.weight.normal_(0, 0.01, generator=g)
        model.dense.heads.controller.bias.copy_(_diamond_params(g))
        model.dense.heads.box_pred.bias.fill_(2.0)  # boxes of a few strides: regions larger than a cell
    return model.eval()


def head_diff(a, b) -> float:
    return max(
        ((a.heads[lvl][k] - b.heads[lvl][k]).abs().max() / b.heads[lvl][k].abs().max().clamp(min=1.0)).item()
        for lvl in LEVELS
        for k in a.heads[lvl]
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


@pytest.fixture(scope="module")
def model() -> TraceNet:
    return random_model()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(1).random((120, 170, 3)) * 255).astype(np.uint8)


TAPS = [(0, 0), (169, 119), (169, 0), (0, 119), (85, 60), (3, 60), (168, 30), (40, 118)]


@pytest.mark.parametrize("click", TAPS)
def test_trace_equals_full_at_corners_borders_and_inside(model, image, click):
    full = model.segment(image, click=click, mode="full")
    trace = model.segment(image, click=click, mode="trace")
    assert head_diff(trace, full) <= 1e-4
    assert trace.level == full.level and trace.region == full.region
    assert iou(trace.mask, full.mask) >= 0.999
    # At 160 px every map is small enough for PyTorch's native kernel, which no crop matches
    # bit for bit: trace computes them whole (rules/window.py), so no fewer MACs than full here.
    assert trace.macs <= full.macs


def test_whole_from_only_trades_macs():
    """Computing nearly whole maps whole (default: from 0.8 of a map) changes what trace mode
    costs, never what it returns. At 320 px the P3 and P4 maps are large enough to crop."""
    image = (np.random.default_rng(1).random((240, 340, 3)) * 255).astype(np.uint8)
    size = {"min_size": 320, "max_size": 480}
    loose, tight = random_model(whole_from=0.1, **size), random_model(whole_from=1.0, **size)
    costs = []
    for click in [(0, 0), (170, 120), (330, 60)]:
        full = tight.segment(image, click=click, mode="full")
        a, b = loose.segment(image, click=click), tight.segment(image, click=click)
        assert head_diff(a, full) == head_diff(b, full) == 0
        assert np.array_equal(a.mask, full.mask) and np.array_equal(b.mask, full.mask)
        costs.append((b.macs, a.macs, full.macs))
    assert all(b <= a <= f for b, a, f in costs) and any(b < a for b, a, _ in costs)


def test_masks_are_not_vacuous(model, image):
    areas = [model.segment(image, click=c, mode="full").mask.mean() for c in TAPS]
    assert sum(0 < a < 0.9 for a in areas) >= 3, areas  # the IoU checks above compare real masks


def test_explicit_box_fixes_the_region_in_both_modes(model, image):
    box = (30, 20, 150, 100)
    full = model.segment(image, click=(90, 60), mode="full", box=box)
    trace = model.segment(image, click=(90, 60), mode="trace", box=box)
    assert full.region == trace.region
    y0, y1, x0, x1 = full.region
    s = 160 / 120  # resized pixels per input pixel
    assert y0 * 8 <= 20 * s and y1 * 8 >= 100 * s and x0 * 8 <= 30 * s and x1 * 8 >= 150 * s
    assert iou(trace.mask, full.mask) >= 0.999 and full.mask.any()


def test_session_reuses_crops_and_matches_full(model, image):
    clicks = [(20, 20), (150, 100), (22, 21)]
    full_macs = model.full_macs(model.prepare(image).tensor.shape)
    with model.session(image) as s:
        first = s.segment(clicks[0])
        second = s.segment(clicks[1])
        again = s.segment(clicks[2])  # same cells as the first tap: everything is cached
        many = s.segment_many(clicks)
    assert second.macs < first.macs and again.macs < 0.05 * full_macs
    for click, r in zip(clicks, many, strict=True):
        full = model.segment(image, click=click, mode="full")
        assert head_diff(r, full) <= 1e-4 and iou(r.mask, full.mask) >= 0.999
    with pytest.raises(RuntimeError, match="closed"):
        s.segment(clicks[0])


def test_trace_rejects_bad_taps_like_full(model, image):
    with pytest.raises(ValueError, match="outside"):
        model.segment(image, click=(170, 5), mode="trace")


@pytest.mark.slow
def test_trace_equals_full_on_coco_images(coco_mini):
    """The issue's exactness check at small scale: >= 50 taps on real val images."""
    import contextlib
    import io

    from PIL import Image
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco_mini / "annotations" / "instances_val2017.json"))
    model = random_model(min_size=160, max_size=256)
    rng = np.random.default_rng(0)
    n, worst_diff, worst_iou = 0, 0.0, 1.0
    for img_id in coco.getImgIds()[:6]:
        info = coco.loadImgs(img_id)[0]
        image = np.asarray(Image.open(coco_mini / "val2017" / info["file_name"]).convert("RGB"))
        h, w = image.shape[:2]
        taps = [(0, 0), (w - 1, h - 1), (w - 1, 0), (0, h - 1), (int(rng.integers(w)), h - 1)]
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False))[:4]:
            ys, xs = np.nonzero(coco.annToMask(ann))
            if len(ys):
                i = rng.integers(len(ys))
                taps.append((int(xs[i]), int(ys[i])))
        with torch.no_grad():  # full mode: one dense forward per image serves every tap
            fulls = model.decode(model.dense(model.prepare(image).tensor), taps, image_size=(h, w))
        with model.session(image) as s:  # later taps reuse the first one's crops
            for tap, full in zip(taps, fulls, strict=True):
                trace = s.segment(tap)
                worst_diff = max(worst_diff, head_diff(trace, full))
                worst_iou = min(worst_iou, iou(trace.mask, full.mask))
                n += 1
    assert n >= 50
    assert worst_diff <= 1e-4 and worst_iou >= 0.999


def test_planned_macs_are_what_segment_counts():
    """The val taps' cost comes from plans alone: they must count what running counts."""
    from tracenet.models.benchmark import planned_macs, randomized

    model = randomized("resnet18", min_size=160, max_size=256, fpn_channels=32)
    image = np.random.default_rng(0).integers(0, 256, (150, 230, 3), dtype=np.uint8)
    for tap, box in [((40, 30), (10, 5, 120, 90)), ((229, 149), (200, 100, 230, 150))]:
        planned = planned_macs(model, image.shape[:2], tap, box)
        with torch.no_grad():
            counted = tuple(model.segment(image, tap, mode=m, box=box).macs for m in ("trace", "full"))
        assert planned == counted
    assert planned_macs(model, image.shape[:2], tap)[0] < planned[0]  # no box: pass 1 alone


def test_benchmark_reports_exactness_over_timed_and_border_taps(coco_mini):
    from tracenet.models.benchmark import bench, randomized

    r = bench(randomized("resnet18", min_size=160, max_size=256, fpn_channels=32), coco_mini, 1)
    assert r["exact_taps"] == r["taps"] + 5  # the instance taps and the image's border taps
    assert r["worst_head_diff"] <= 1e-4 and r["min_mask_iou"] >= 0.999
    assert 0 < r["macs_ratio"] < 1
    assert 0 < r["heads_only_ratio"] < r["macs_ratio"]  # the mask region costs something on top
    assert r["val_taps"] > 2 * r["taps"] and 0 < r["macs_ratio_val_taps"] < 1  # up to 26 per instance
    assert r["taps"] == 2 and r["wall_ratio_new_size"] > 0 and r["wall_ratio_warm"] > 0  # 1st tap, 2nd


def test_benchmark_runs_a_checkpoint_at_its_own_input_size(coco_mini, tmp_path, capsys):
    """Trained weights are benchmarked as they are; only pre-processing takes the run's size."""
    import json

    from tracenet.models.benchmark import main, randomized

    path = randomized("resnet18", min_size=96, max_size=96, fpn_channels=32).save_checkpoint(
        tmp_path / "m.pt"
    )
    main(["--checkpoint", str(path), "--images", "1", "--min-size", "160", "--max-size", "256", "--json"])
    row = json.loads(next(line for line in capsys.readouterr().out.splitlines() if line.startswith("{")))
    assert row["weights"] == str(path) and row["backbone"] == "resnet18"
    assert row["full_gmacs"] > 1.0  # at 160 px (1.8 GMACs at 480×640), not the checkpoint's 96 (0.45)
    assert row["worst_head_diff"] <= 1e-4 and row["min_mask_iou"] >= 0.999


def test_benchmark_rejects_a_bad_checkpoint_before_timing(tmp_path, capsys):
    from tracenet.models.benchmark import main

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for path in (tmp_path / "junk.pt", tmp_path / "missing.pt"):
        with pytest.raises(SystemExit):
            main(["--checkpoint", str(path)])
        assert f"--checkpoint {path}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path / "junk.pt"), "--backbones", "resnet50"])
    assert "drop --backbones" in capsys.readouterr().err
