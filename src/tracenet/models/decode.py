"""Decoding one tap from head values at its cells and mask features over its region.

Both modes call these functions with the same numbers, which is what makes FullNet and
TraceNet one function: full mode slices the dense maps, trace mode computes only the slices.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tracenet.models.config import LEVELS, MASK_STRIDE, SIZES_OF_INTEREST, STRIDES
from tracenet.models.dynamic_head import MACS_PER_PIXEL, dynamic_mask_head, relative_coords
from tracenet.models.preprocess import Geometry

HEAD_KEYS = ("cls", "box", "ctr", "controller")
Region = tuple[int, int, int, int]  # (y0, y1, x0, x1), end exclusive


def level_size(geo: Geometry, lvl: int) -> tuple[int, int]:
    """Feature-map size of a level for the padded input (stride-2 convs round up)."""
    h, w = geo.padded
    for _ in range(lvl):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


def tap_cells(geo: Geometry, click: tuple[float, float]) -> dict[int, tuple[int, int]]:
    """The (row, col) cell under the tap on every level, kept inside the unpadded image."""
    rx, ry = geo.to_resized(*click)
    cells = {}
    for lvl in LEVELS:
        s = STRIDES[lvl]
        rows, cols = math.ceil(geo.resized[0] / s), math.ceil(geo.resized[1] / s)
        cells[lvl] = (min(int(ry // s), rows - 1), min(int(rx // s), cols - 1))
    return cells


def head_targets(cells: dict[int, tuple[int, int]]) -> dict[str, Region]:
    """RFT targets of pass 1: all four heads at the tap's cell on every level."""
    return {f"{k}{lvl}": (r, r + 1, c, c + 1) for lvl, (r, c) in cells.items() for k in HEAD_KEYS}


def gather_heads(dense: dict[str, Tensor], cells: dict[int, tuple[int, int]], index: int = 0):
    """Head vectors at the tap's cells from full dense maps (full mode)."""
    return {lvl: {k: dense[f"{k}{lvl}"][index, :, r, c] for k in HEAD_KEYS} for lvl, (r, c) in cells.items()}


def choose_level(heads: dict[int, dict[str, Tensor]]) -> tuple[int, float]:
    """The level with the highest sqrt(cls · ctr) (max over classes); ties go to the finer level."""
    scores = {
        lvl: math.sqrt(torch.sigmoid(h["cls"]).max().item() * torch.sigmoid(h["ctr"]).max().item())
        for lvl, h in heads.items()
    }
    best = max(scores, key=lambda lvl: (scores[lvl], -lvl))
    return best, scores[best]


def cell_center(lvl: int, cell: tuple[int, int]) -> tuple[float, float]:
    """(x, y) of a cell's location in resized pixels (FCOS: cell · stride + stride // 2)."""
    s = STRIDES[lvl]
    return cell[1] * s + s // 2, cell[0] * s + s // 2


def predicted_box(lvl: int, cell: tuple[int, int], ltrb: Tensor) -> tuple[float, float, float, float]:
    x, y = cell_center(lvl, cell)
    left, top, right, bottom = (float(v) for v in ltrb)
    return x - left, y - top, x + right, y + bottom


def mask_region(box: tuple[float, float, float, float], margin: float, geo: Geometry) -> Region:
    """Stride-8 cells covering ``box`` (resized pixels) grown by ``margin`` of its size, clipped."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * margin / 2, (y1 - y0) * margin / 2
    rows, cols = math.ceil(geo.resized[0] / MASK_STRIDE), math.ceil(geo.resized[1] / MASK_STRIDE)
    cy0 = min(max(math.floor((y0 - dy) / MASK_STRIDE), 0), rows - 1)
    cx0 = min(max(math.floor((x0 - dx) / MASK_STRIDE), 0), cols - 1)
    cy1 = max(min(math.ceil((y1 + dy) / MASK_STRIDE), rows), cy0 + 1)
    cx1 = max(min(math.ceil((x1 + dx) / MASK_STRIDE), cols), cx0 + 1)
    return cy0, cy1, cx0, cx1


def mask_logits(feats: Tensor, region: Region, lvl: int, cell: tuple[int, int], params: Tensor) -> Tensor:
    """Stride-8 logits ``[1,1,h,w]`` of the dynamic head over ``region`` (``feats`` is that crop)."""
    y0, y1, x0, x1 = region
    cx, cy = cell_center(lvl, cell)
    center = torch.tensor([[cx, cy]], dtype=torch.float32, device=feats.device)
    soi = torch.tensor([SIZES_OF_INTEREST[lvl]], device=feats.device)
    coords = relative_coords(center, y0, x0, y1 - y0, x1 - x0, MASK_STRIDE, soi)
    return dynamic_mask_head(feats, coords, params.view(1, -1))


def mask_logits_macs(region: Region) -> int:
    """MACs of ``mask_logits`` over ``region`` (the dynamic head at every cell), in both modes."""
    y0, y1, x0, x1 = region
    return (y1 - y0) * (x1 - x0) * MACS_PER_PIXEL


def paste_mask(logits: Tensor, region: Region, geo: Geometry) -> np.ndarray:
    """H×W bool mask in input pixels: logits upsampled ×4 (stride 2, bilinear), then sampled at
    input-pixel centres inside the region; zero outside the region."""
    y0, y1, x0, x1 = region
    up = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)[0, 0]
    sy, sx = geo.scale
    h, w = geo.image
    out = np.zeros((h, w), dtype=bool)
    rows = _pixels(y0, y1, sy, h)
    cols = _pixels(x0, x1, sx, w)
    if len(rows) == 0 or len(cols) == 0:
        return out
    # Stride-2 index of each input pixel centre, relative to the region's first stride-2 cell.
    py = (rows + 0.5) * sy / 2 - 0.5 - 4 * y0
    px = (cols + 0.5) * sx / 2 - 0.5 - 4 * x0
    vals = _bilinear(up, torch.from_numpy(py).float(), torch.from_numpy(px).float())
    out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = (vals > 0).numpy()
    return out


def _pixels(c0: int, c1: int, scale: float, size: int) -> np.ndarray:
    """Input pixels whose centres fall in stride-8 cells [c0, c1) of the resized image."""
    lo = max(0, math.ceil(c0 * MASK_STRIDE / scale - 0.5))
    hi = min(size, math.ceil(c1 * MASK_STRIDE / scale - 0.5))
    return np.arange(lo, hi)


def _bilinear(grid: Tensor, py: Tensor, px: Tensor) -> Tensor:
    """Separable bilinear sampling of ``grid`` [h,w] at rows ``py`` × cols ``px``, border-clamped."""

    def axis(p: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
        p = p.clamp(0, n - 1)
        i0 = p.floor().long().clamp(max=n - 1)
        i1 = (i0 + 1).clamp(max=n - 1)
        return i0, i1, p - i0

    r0, r1, wy = axis(py, grid.shape[0])
    c0, c1, wx = axis(px, grid.shape[1])
    rows = grid[r0] * (1 - wy)[:, None] + grid[r1] * wy[:, None]
    return rows[:, c0] * (1 - wx) + rows[:, c1] * wx
