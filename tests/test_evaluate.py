"""The fast evaluator equals the naive definition: decode the tap at every mask pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracenet import TraceNet
from tracenet.data.clicks import Tap as DataTap
from tracenet.metrics import mask_iou, tap_area
from tracenet.metrics.evaluator import ImageEvaluator, InstanceTaps
from tracenet.rft.verify import randomize_batchnorm


def small_model() -> TraceNet:
    """Tiny input size and random BatchNorm statistics, so levels and masks vary across taps."""
    torch.manual_seed(0)
    model = TraceNet.build(
        backbone="resnet18", fpn_channels=16, mask_branch_channels=16, min_size=72, max_size=120, margin=1.0
    ).eval()
    return randomize_batchnorm(model, torch.Generator().manual_seed(4), mean_scale=0.5)


@pytest.fixture(scope="module")
def model() -> TraceNet:
    return small_model()


@pytest.fixture(scope="module")
def scene():
    """A 45×67 image (resize factor 1.6: pixel and cell borders do not line up) with two objects."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(45, 67, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:45, :67]
    blob = (yy - 20) ** 2 / 14**2 + (xx - 25) ** 2 / 18**2 < 1
    bar = (yy >= 5) & (yy < 40) & (xx >= 50) & (xx < 60)
    instances = []
    for ann_id, mask in ((1, blob), (2, bar)):
        ys, xs = np.nonzero(mask)
        pick = rng.choice(len(ys), size=6, replace=False)
        taps = [(int(xs[i]), int(ys[i]), int(b)) for b, i in enumerate(pick)]
        if ann_id == 2:  # taps as the data package makes them (objects with .x .y .band)
            taps = [DataTap(x, y, b) for x, y, b in taps]
        instances.append(InstanceTaps(ann_id, 7, mask, taps, (int(xs[pick[0]]), int(ys[pick[0]]))))
    return image, instances


def naive_ious(model, image, mask):
    """The definition: one decode per mask pixel (no grouping), from one dense forward."""
    prep = model.prepare(image)
    with torch.no_grad():
        dense = model.dense(prep.tensor)
    ys, xs = np.nonzero(mask)
    results = model.decode(dense, list(zip(xs.tolist(), ys.tolist(), strict=True)), image_size=mask.shape)
    ious = {(int(x), int(y)): mask_iou(r.mask, mask) for x, y, r in zip(xs, ys, results, strict=True)}
    return ious, {r.level for r in results}, {r.mask.tobytes() for r in results}


def test_grouped_evaluation_equals_pixel_by_pixel(model, scene):
    image, instances = scene
    ev = ImageEvaluator(model, image, chunk=7)
    for inst in instances:
        ious, levels, masks = naive_ious(model, image, inst.mask)
        # The case must be able to fail: several levels and many distinct masks.
        assert len(levels) >= 2 and len(masks) >= 5
        rec = ev.evaluate(inst, image_id=3)
        assert rec.area == len(ious) == rec.pixel_counts.sum()
        assert len(rec.pixel_ious) < len(ious)  # grouping did save work
        thresholds = sorted(set(ious.values()))
        for thr in [0.0, 0.3, 0.7, *thresholds[:: max(1, len(thresholds) // 10)]]:
            assert tap_area(rec.pixel_ious, thr, rec.pixel_counts) == pytest.approx(
                tap_area(list(ious.values()), thr), abs=1e-12
            )
        expected = [(t.x, t.y, t.band) if isinstance(t, DataTap) else t for t in inst.taps]
        assert [t.iou for t in rec.taps] == pytest.approx([ious[(x, y)] for x, y, _ in expected], abs=1e-12)
        assert [(t.x, t.y, t.band) for t in rec.taps] == expected
        assert rec.center_iou == pytest.approx(ious[inst.center], abs=1e-12)


def test_decode_matches_full_mode_segment(model, scene):
    """The evaluator's decode path is FullNet's: segment(mode='full') gives the same mask."""
    image, instances = scene
    prep = model.prepare(image)
    with torch.no_grad():
        dense = model.dense(prep.tensor)
    clicks = [(x, y) for x, y, _ in instances[0].taps[:3]]
    for click, r in zip(clicks, model.decode(dense, clicks, image_size=image.shape[:2]), strict=True):
        assert np.array_equal(r.mask, model.segment(image, click, mode="full").mask)


def test_bad_inputs_are_named(model, scene):
    image, instances = scene
    ev = ImageEvaluator(model, image)
    inst = instances[0]
    off = InstanceTaps(inst.ann_id, 1, inst.mask, [(0, 0, 0)], inst.center)
    with pytest.raises(ValueError, match=r"tap \(0, 0\) is not on its mask"):
        ev.evaluate(off, 1)
    with pytest.raises(ValueError, match="does not match image"):
        ev.evaluate(InstanceTaps(1, 1, inst.mask[:10], inst.taps, inst.center), 1)
    with pytest.raises(ValueError, match="empty mask"):
        ev.evaluate(InstanceTaps(1, 1, np.zeros_like(inst.mask), inst.taps, inst.center), 1)
    with pytest.raises(ValueError, match="chunk must be"):
        ImageEvaluator(model, image, chunk=0)
    model.train()
    try:
        with pytest.raises(RuntimeError, match=r"model.eval\(\)"):
            ImageEvaluator(model, image)
    finally:
        model.eval()


def test_dataset_loop_merges_items_and_skips_instances_without_taps(model, scene):
    from tracenet.metrics.loop import evaluate_dataset

    image, instances = scene
    chw = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    masks = torch.from_numpy(np.stack([i.mask for i in instances]))
    items = [
        {"image": chw, "masks": masks, "labels": torch.tensor([7, 7]), "image_id": 5, "ann_ids": [1, 2]},
        {"image": chw, "masks": masks[1:], "labels": torch.tensor([7]), "image_id": 6, "ann_ids": [3]},
    ]
    taps = {1: instances[0].taps, 3: instances[1].taps}  # instance 2 has no taps: skipped

    def first_pixel(mask):
        y, x = np.argwhere(mask)[0]
        return int(x), int(y)

    records = evaluate_dataset(model, items, taps, center=first_pixel, progress=False)
    assert [(r.image_id, r.ann_id) for r in records] == [(5, 1), (6, 3)]
    direct = ImageEvaluator(model, image).evaluate(instances[1], 6)
    assert records[1].tap_ious == direct.tap_ious
    assert np.array_equal(records[1].pixel_counts, direct.pixel_counts)


def test_rank_shards_are_gathered_and_merged(tmp_path):
    """The DDP path of the predict loop: per-rank records all-gathered, then merged by ann_id."""
    import torch.distributed as dist

    from tracenet.metrics.loop import EvaluationModule
    from tracenet.metrics.records import InstanceResult, Tap

    module = EvaluationModule(torch.nn.Module(), taps={}, center=lambda m: (0, 0))
    module._shard = [
        InstanceResult(1, k, 1, 1, (Tap(0, 0, 0, 0.5),), 0.5, np.array([0.5]), np.array([1])) for k in (9, 4)
    ]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        module.on_predict_epoch_end()
    finally:
        dist.destroy_process_group()
    assert [r.ann_id for r in module.records] == [4, 9]
