"""The paper's tap metrics (eq. 1, 2), their breakdowns and the report writers."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tracenet.metrics import mask_iou, miou_t, mta, tap_area
from tracenet.metrics.breakdowns import per_band, size_of, summarize
from tracenet.metrics.records import InstanceResult, Tap, merge
from tracenet.metrics.report import evaluation_markdown, write_evaluation


def test_miou_t_is_mean_of_instance_means():
    # instance means 0.5 and 1.0: a flat mean over the 4 taps would give 0.625
    assert miou_t([[0.0, 0.5, 1.0], [1.0]]) == pytest.approx(0.75)


def test_mta_counts_strictly_over_threshold_and_weights_instances_equally():
    assert mta([[0.7, 0.7]]) == 0.0
    assert mta([[0.71, 0.2]]) == pytest.approx(0.5)
    assert mta([[1.0] * 1000, [0.0] * 10]) == pytest.approx(0.5)
    assert mta([[0.6, 0.8]], thr=0.5) == 1.0


def test_weighted_mta_equals_repeating_each_iou_by_its_count():
    rng = np.random.default_rng(0)
    ious = [rng.random(7) for _ in range(5)]
    counts = [rng.integers(1, 20, size=7) for _ in range(5)]
    expanded = [np.repeat(i, c) for i, c in zip(ious, counts, strict=True)]
    assert mta(ious, 0.4, weights=counts) == pytest.approx(mta(expanded, 0.4))
    assert tap_area([0.9, 0.1], 0.5, weights=[3, 1]) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: miou_t([]), ValueError, "no instances"),
        (lambda: miou_t([[0.5], []]), ValueError, "instance 1 has no taps"),
        (lambda: miou_t("0.5"), TypeError, "one sequence of IoUs per instance"),
        (lambda: mta([[0.5]], thr=70), ValueError, r"thr must be an IoU threshold in \[0, 1\]"),
        (lambda: mta([[0.5, 0.9]], weights=[[1]]), ValueError, "1 weights for 2 IoUs"),
        (lambda: mta([[float("nan")]]), ValueError, "non-finite"),
        (lambda: mask_iou(np.ones((2, 2)), np.ones((2, 3))), ValueError, "differ in shape"),
    ],
)
def test_bad_input_is_rejected_with_a_specific_message(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def _record(ann_id, cat, area, taps, pixel_ious, pixel_counts, center=0.5):
    return InstanceResult(
        image_id=1,
        ann_id=ann_id,
        category_id=cat,
        area=area,
        taps=tuple(Tap(0, 0, b, i) for b, i in taps),
        center_iou=center,
        pixel_ious=np.asarray(pixel_ious, float),
        pixel_counts=np.asarray(pixel_counts, int),
    )


@pytest.fixture()
def records():
    return [
        _record(1, 3, 100, [(0, 0.9), (0, 0.8), (1, 0.1)], [0.9, 0.1], [60, 40], center=0.9),
        _record(2, 3, 5000, [(0, 0.6), (1, 0.3)], [0.6, 0.75], [4000, 1000], center=0.7),
        _record(3, 7, 20000, [(1, 1.0)], [1.0], [20000], center=1.0),
    ]


def test_summary_overall_and_breakdowns_follow_the_definitions(records):
    s = summarize(records, 0.7, category_names={3: "car"})
    o = s["overall"]
    assert o["miou_t"] == pytest.approx(np.mean([0.6, 0.45, 1.0]))
    assert o["mta"] == pytest.approx(np.mean([0.6, 0.2, 1.0]))
    assert o["taps_mta"] == pytest.approx(np.mean([2 / 3, 0.0, 1.0]))
    assert o["center_miou"] == pytest.approx(np.mean([0.9, 0.7, 1.0]))
    assert (o["instances"], o["taps"]) == (3, 6)
    assert s["per_band"]["0"]["miou_t"] == pytest.approx(np.mean([0.85, 0.6]))
    assert s["per_band"]["1"]["mta"] == pytest.approx(np.mean([0.0, 0.0, 1.0]))
    assert set(s["per_size"]) == {"small", "medium", "large"}
    assert s["per_size"]["small"]["instances"] == 1
    assert s["per_category"]["3"]["name"] == "car"
    assert s["per_category"]["7"]["name"] == "7"
    assert s["per_category"]["3"]["mta"] == pytest.approx(0.4)


def test_size_classes_use_coco_boundaries():
    assert [size_of(a) for a in (1023, 1024, 9215, 9216)] == ["small", "medium", "medium", "large"]


def test_per_band_only_counts_instances_with_taps_in_that_band(records):
    assert per_band(records)["0"]["instances"] == 2


def test_record_rejects_pixel_groups_not_covering_the_mask():
    with pytest.raises(ValueError, match="cover 10 pixels, the mask has 11"):
        _record(1, 1, 11, [(0, 0.5)], [0.5], [10])


def test_merge_is_ordered_and_rejects_overlapping_shards(records):
    assert [r.ann_id for r in merge([records[2:], records[:2]])] == [1, 2, 3]
    with pytest.raises(ValueError, match="evaluated twice"):
        merge([records, records[:1]])


def test_writers_produce_dvc_metrics_plots_and_markdown(records, tmp_path):
    s = summarize(records, category_names={3: "car", 7: "dog"})
    paths = write_evaluation(s, tmp_path / "metrics.json", tmp_path / "plots")
    assert json.loads(paths["metrics"].read_text())["overall"]["miou_t"] == pytest.approx(
        s["overall"]["miou_t"]
    )
    bands = json.loads(paths["per_band"].read_text())
    assert [b["band"] for b in bands] == [0, 1]
    rows = list(csv.DictReader(paths["per_category"].open()))
    assert [r["name"] for r in rows] == ["car", "dog"]  # worst first
    assert not list(tmp_path.rglob("*.tmp"))
    md = evaluation_markdown(s)
    assert "| car | 2 |" in md and "## Per band" in md


def test_overlays_pick_best_median_worst_and_draw_tap_and_outline(records):
    from tracenet.metrics.overlays import GT_COLOR, TAP_COLOR, pick_taps, render

    picks = pick_taps(records)
    assert [(label, tap.iou) for label, _, tap in picks] == [("best", 1.0), ("median", 0.6), ("worst", 0.1)]
    assert picks[0][1].ann_id == 3
    image = np.zeros((20, 20, 3), np.uint8)
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    out = render(image, gt, gt, (10, 10))
    assert (out[10, 10] == TAP_COLOR).all() and (out[5, 12] == GT_COLOR).all()
    assert out[10, 3].sum() == 0 and out[2, 2].sum() == 0  # background untouched
