"""The paper's tap metrics (section IV-A): mIoU-T (eq. 1) and mTA (eq. 2), plus mask IoU.

Both are means over instances, so every instance counts equally whatever its size or its
number of taps. mTA counts a tap as feasible when its IoU is strictly over the threshold
("over a predefined threshold").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_TAU = 0.7


def _instances(ious: Sequence[Sequence[float]], name: str) -> list[np.ndarray]:
    """Per-instance float arrays; rejects empty input early, naming the instance at fault."""
    if isinstance(ious, (str, bytes)) or not hasattr(ious, "__len__"):
        raise TypeError(f"{name}: expected one sequence of IoUs per instance, got {type(ious).__name__}")
    if len(ious) == 0:
        raise ValueError(f"{name}: no instances (an empty list has no mean)")
    arrays = []
    for i, values in enumerate(ious):
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size == 0:
            raise ValueError(f"{name}: instance {i} has no taps; drop it or give it at least one IoU")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: instance {i} has a non-finite IoU")
        arrays.append(arr)
    return arrays


def miou_t(ious: Sequence[Sequence[float]]) -> float:
    """Eq. 1: mean over instances of the mean IoU over that instance's taps."""
    return float(np.mean([arr.mean() for arr in _instances(ious, "miou_t")]))


def tap_area(
    ious: Sequence[float], thr: float = DEFAULT_TAU, weights: Sequence[float] | None = None
) -> float:
    """One instance's feasible fraction: share of its taps (pixels) whose IoU is over ``thr``.

    ``weights`` lets one IoU stand for several pixels (the evaluator decodes each group of
    pixels that share a prediction once); without it every value is one tap.
    """
    arr = np.asarray(ious, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("tap_area: no taps")
    if weights is None:
        return float(np.count_nonzero(arr > thr) / arr.size)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != arr.shape:
        raise ValueError(f"tap_area: {w.size} weights for {arr.size} IoUs; give one weight per IoU")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("tap_area: weights must be non-negative with a positive sum")
    return float(w[arr > thr].sum() / w.sum())


def mta(
    ious: Sequence[Sequence[float]],
    thr: float = DEFAULT_TAU,
    weights: Sequence[Sequence[float]] | None = None,
) -> float:
    """Eq. 2: mean over instances of the fraction of mask pixels whose tap gives IoU > ``thr``.

    ``ious[i]`` holds the IoU of the tap at every pixel of instance i's ground-truth mask
    (or, with ``weights[i]``, one IoU per group of pixels and the group sizes).
    """
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"mta: thr must be an IoU threshold in [0, 1], got {thr}")
    arrays = _instances(ious, "mta")
    if weights is None:
        return float(np.mean([tap_area(arr, thr) for arr in arrays]))
    if len(weights) != len(arrays):
        raise ValueError(f"mta: {len(weights)} weight lists for {len(arrays)} instances")
    return float(np.mean([tap_area(arr, thr, w) for arr, w in zip(arrays, weights, strict=True)]))


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks of the same shape; two empty masks agree perfectly (1.0)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask_iou: prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else float(np.count_nonzero(pred & gt) / union)
