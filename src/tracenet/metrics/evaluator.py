"""Fast, exact evaluation: one dense forward per image serves every tap on that image.

Why grouping pixels is exact. ``decode.tap_cells`` maps a tap to the cell under it on every
level as ``floor(r / stride)`` of its resized position r; the strides 8..128 are multiples of
8, so ``floor(r / 2^k) = floor(floor(r / 8) / 2^(k-3))``: two taps in the same stride-8 cell
fall in the same cell on every level. Decoding reads the tap only through those cells (level
choice, box, controller parameters, the mask region and the cell-centred relative
coordinates), so every pixel of a stride-8 cell yields the same mask. Going one step further,
two stride-8 cells that choose the same level and share that level's cell also yield the same
mask; the evaluator computes the level choice per stride-8 cell (cheap: heads at one cell) and
decodes each distinct (level, cell) once. The naive pixel-by-pixel definition is checked
against this in tests/test_evaluate.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tracenet.metrics.records import InstanceResult, Tap
from tracenet.models import decode
from tracenet.models.config import MASK_STRIDE
from tracenet.models.preprocess import Geometry


@dataclass(frozen=True)
class InstanceTaps:
    """One ground-truth instance to evaluate: its mask (image pixels) and its simulated taps."""

    ann_id: int
    category_id: int
    mask: np.ndarray  # H×W bool
    taps: Sequence  # (x, y, band) tuples or objects with .x .y .band (tracenet.data.clicks.Tap)
    center: tuple[int, int]


def tap_xyb(tap) -> tuple[int, int, int]:
    """(x, y, band) of a tap given as a tuple or as an object with ``x``, ``y``, ``band``."""
    if hasattr(tap, "band"):
        return int(tap.x), int(tap.y), int(tap.band)
    x, y, band = tap
    return int(x), int(y), int(band)


def cell_grid(geo: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Stride-8 row of every image row and column of every image column, from the model's own
    tap-to-cell rule (rows depend on y only, columns on x only)."""
    h, w = geo.image
    rows = np.array([decode.tap_cells(geo, (0, y))[3][0] for y in range(h)], dtype=np.int64)
    cols = np.array([decode.tap_cells(geo, (x, 0))[3][1] for x in range(w)], dtype=np.int64)
    return rows, cols


def _prediction_key(geo: Geometry, dense: dict, click: tuple[int, int]) -> tuple[int, int, int]:
    """(level, row, col) that determines the mask of a tap: the chosen level and its cell."""
    cells = decode.tap_cells(geo, click)
    level, _ = decode.choose_level(decode.gather_heads(dense, cells))
    return (level, *cells[level])


class ImageEvaluator:
    """All taps of all instances on one image, from one dense forward.

    ``chunk`` bounds how many masks are decoded (and held) at once.
    """

    def __init__(self, model, image, chunk: int = 256) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be a positive number of taps, got {chunk}")
        if model.training:
            raise RuntimeError("evaluation needs BatchNorm running statistics: call model.eval() first")
        self.model = model
        self.chunk = chunk
        prep = model.prepare(image)
        self.geo = prep.geo
        with torch.no_grad():
            self.dense = model.inference_net()(prep.tensor)
        self.rows, self.cols = cell_grid(self.geo)
        self.ncols = int(self.cols.max()) + 1

    def _window(self, region: tuple[int, int, int, int]) -> tuple[slice, slice]:
        """Image pixels that can be set in a mask decoded over ``region`` (stride-8 cells): the
        mask is zero outside the pixels whose centres fall in the region, so the IoU only needs
        this window (one pixel of slack on each side for rounding)."""
        y0, y1, x0, x1 = region
        sy, sx = self.geo.scale
        h, w = self.geo.image

        def span(c0: int, c1: int, scale: float, size: int) -> slice:
            lo = math.floor(c0 * MASK_STRIDE / scale - 0.5) - 1
            hi = math.ceil(c1 * MASK_STRIDE / scale - 0.5) + 1
            return slice(max(lo, 0), min(hi, size))

        return span(y0, y1, sy, h), span(x0, x1, sx, w)

    def _ious(self, clicks: list[tuple[int, int]], gt: np.ndarray, area: int) -> np.ndarray:
        out = np.empty(len(clicks))
        for i in range(0, len(clicks), self.chunk):
            part = clicks[i : i + self.chunk]
            for j, r in enumerate(self.model.decode(self.dense, part, image_size=self.geo.image)):
                win = self._window(r.region)
                pred = r.mask[win]
                inter = np.count_nonzero(pred & gt[win])
                out[i + j] = inter / (area + np.count_nonzero(pred) - inter)
        return out

    def evaluate(self, inst: InstanceTaps, image_id: int) -> InstanceResult:
        """IoU of every simulated tap, of the center tap and of the tap at every mask pixel."""
        gt = np.asarray(inst.mask, dtype=bool)
        if gt.shape != self.geo.image:
            raise ValueError(f"instance {inst.ann_id}: mask {gt.shape} does not match image {self.geo.image}")
        area = int(np.count_nonzero(gt))
        if area == 0:
            raise ValueError(f"instance {inst.ann_id}: empty mask; drop it before evaluation")
        taps = [tap_xyb(t) for t in inst.taps]
        center = (int(inst.center[0]), int(inst.center[1]))
        h, w = gt.shape
        for x, y, *_ in [*taps, center]:
            if not (0 <= x < w and 0 <= y < h and gt[y, x]):
                raise ValueError(
                    f"instance {inst.ann_id}: tap ({x}, {y}) is not on its mask; the clicks do not "
                    "match these annotations (regenerate the clicks file for this split)"
                )
        ys, xs = np.nonzero(gt)
        # Group pixels (and taps) by stride-8 cell, then cells by the (level, cell) they decode.
        cell_of = self.rows[ys] * self.ncols + self.cols[xs]
        cells, first, inverse = np.unique(cell_of, return_index=True, return_inverse=True)
        keys = [_prediction_key(self.geo, self.dense, (int(xs[i]), int(ys[i]))) for i in first]
        unique_keys: dict[tuple[int, int, int], int] = {}
        reps: list[tuple[int, int]] = []
        for k, i in zip(keys, first, strict=True):
            if k not in unique_keys:
                unique_keys[k] = len(reps)
                reps.append((int(xs[i]), int(ys[i])))
        key_of_cell = np.array([unique_keys[k] for k in keys], dtype=np.int64)
        key_ious = self._ious(reps, gt, area)
        cell_index = {int(c): n for n, c in enumerate(cells)}

        def iou_at(x: int, y: int) -> float:
            return float(key_ious[key_of_cell[cell_index[int(self.rows[y] * self.ncols + self.cols[x])]]])

        tap_results = tuple(Tap(x, y, band, iou_at(x, y)) for x, y, band in taps)
        return InstanceResult(
            image_id=int(image_id),
            ann_id=int(inst.ann_id),
            category_id=int(inst.category_id),
            area=area,
            taps=tap_results,
            center_iou=iou_at(*center),
            pixel_ious=key_ious,
            pixel_counts=np.bincount(key_of_cell[inverse], minlength=len(reps)),
        )
