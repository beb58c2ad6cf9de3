"""Overlay images of chosen taps (best, median, worst IoU): what the numbers look like."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from tracenet.images import overlay, save_png
from tracenet.metrics.records import InstanceResult, Tap

GT_COLOR = np.array([40, 220, 40], dtype=np.uint8)
TAP_COLOR = np.array([255, 40, 40], dtype=np.uint8)


def pick_taps(records: Sequence[InstanceResult]) -> list[tuple[str, InstanceResult, Tap]]:
    """The best, median and worst simulated taps by IoU over the whole evaluation."""
    taps = sorted(((t.iou, r.ann_id, i) for r in records for i, t in enumerate(r.taps)), reverse=True)
    if not taps:
        raise ValueError("pick_taps: no taps to choose from")
    by_id = {r.ann_id: r for r in records}
    out = []
    for label, k in (("best", 0), ("median", len(taps) // 2), ("worst", len(taps) - 1)):
        _, ann_id, i = taps[k]
        out.append((label, by_id[ann_id], by_id[ann_id].taps[i]))
    return out


def render(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, tap: tuple[int, int]) -> np.ndarray:
    """Prediction tinted, ground-truth outline in green, the tap as a red cross."""
    out = overlay(image, pred)
    out[gt & ~ndimage.binary_erosion(gt, iterations=2)] = GT_COLOR
    x, y = tap
    h, w = gt.shape
    out[max(y - 4, 0) : min(y + 5, h), x] = TAP_COLOR
    out[y, max(x - 4, 0) : min(x + 5, w)] = TAP_COLOR
    return out


def write_overlays(
    model,
    records: Sequence[InstanceResult],
    load: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
    out_dir: str | Path,
) -> list[Path]:
    """One PNG per picked tap; ``load(image_id, ann_id)`` gives the H×W×3 uint8 image and the
    instance's H×W bool mask. FullNet decodes the tap (same mask as TraceNet, exactness)."""
    paths = []
    for label, rec, tap in pick_taps(records):
        image, gt = load(rec.image_id, rec.ann_id)
        pred = model.segment(image, (tap.x, tap.y), mode="full").mask
        name = f"{label}_iou{tap.iou:.2f}_ann{rec.ann_id}.png"
        paths.append(save_png(render(image, gt, pred, (tap.x, tap.y)), Path(out_dir) / name))
    return paths
