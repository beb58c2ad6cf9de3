"""Breakdowns of the tap metrics: overall, per band (paper Fig. 5), per category (Table 2)
and per COCO size. Plain dicts of floats, ready for JSON (DVC metrics) and tables."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from tracenet.metrics.records import InstanceResult
from tracenet.metrics.taps import DEFAULT_TAU, miou_t, mta

# COCO's size ranges, on the instance's mask area in pixels of the original image.
SMALL_MAX_AREA = 32**2
MEDIUM_MAX_AREA = 96**2


def size_of(area: float) -> str:
    """COCO size class of a mask area: small < 32², medium < 96², large otherwise."""
    if area < SMALL_MAX_AREA:
        return "small"
    return "medium" if area < MEDIUM_MAX_AREA else "large"


def _scores(records: Sequence[InstanceResult], thr: float) -> dict[str, float]:
    """mIoU-T over the simulated taps, all-pixel mTA, and the 1-tap center mIoU."""
    return {
        "miou_t": miou_t([r.tap_ious for r in records]),
        "mta": mta([r.pixel_ious for r in records], thr, weights=[r.pixel_counts for r in records]),
        "center_miou": float(np.mean([r.center_iou for r in records])),
        "taps_mta": mta([r.tap_ious for r in records], thr),
        "instances": len(records),
    }


def _grouped(
    records: Sequence[InstanceResult], key: Callable[[InstanceResult], object], thr: float
) -> dict[str, dict[str, float]]:
    groups: dict[object, list[InstanceResult]] = defaultdict(list)
    for rec in records:
        groups[key(rec)].append(rec)
    return {str(k): _scores(groups[k], thr) for k in sorted(groups)}


def per_band(records: Sequence[InstanceResult], thr: float = DEFAULT_TAU) -> dict[str, dict[str, float]]:
    """Band b: mean over instances of the mean IoU of their band-b taps, and of the fraction of
    those taps over ``thr`` (mTA restricted to the band, as the paper's Figure 5 plots)."""
    bands: dict[int, list[list[float]]] = defaultdict(list)
    for rec in records:
        by_band: dict[int, list[float]] = defaultdict(list)
        for tap in rec.taps:
            by_band[tap.band].append(tap.iou)
        for band, ious in by_band.items():
            bands[band].append(ious)
    return {
        str(b): {"miou_t": miou_t(v), "mta": mta(v, thr), "instances": len(v)}
        for b, v in sorted(bands.items())
    }


def summarize(
    records: Sequence[InstanceResult],
    thr: float = DEFAULT_TAU,
    category_names: dict[int, str] | None = None,
) -> dict:
    """All breakdowns of one evaluation; ``category_names`` labels the per-category rows."""
    if not records:
        raise ValueError("summarize: no evaluated instances (is the split empty or every mask empty?)")
    names = category_names or {}
    per_category = _grouped(records, lambda r: r.category_id, thr)
    for cat, row in per_category.items():
        row["name"] = names.get(int(cat), str(cat))
    return {
        "tau": thr,
        "overall": {**_scores(records, thr), "taps": sum(len(r.taps) for r in records)},
        "per_band": per_band(records, thr),
        "per_size": _grouped(records, lambda r: size_of(r.area), thr),
        "per_category": per_category,
    }
