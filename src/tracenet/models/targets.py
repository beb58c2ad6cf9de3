"""FCOS/CondInst training targets: which instance each location of each level regresses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tracenet.models.config import LEVELS, STRIDES

# FCOS sizes of interest: a location on level i regresses objects whose largest ltrb
# distance lies in (BOUNDS[i], BOUNDS[i+1]].
BOUNDS = (-1.0, 64.0, 128.0, 256.0, 512.0, float("inf"))


@dataclass
class Assignment:
    """Targets for the concatenated locations of all levels of one image (length L)."""

    instance: Tensor  # [L] long: index of the assigned instance, -1 for background
    ltrb: Tensor  # [L,4] distances to the assigned box (meaningless for background)
    centerness: Tensor  # [L] FCOS centerness target (0 for background)


def locations(sizes: dict[int, tuple[int, int]], device=None) -> tuple[Tensor, Tensor]:
    """([L,2] (x, y) pixel locations, [L] level index) of every cell, levels concatenated."""
    locs, lvl_idx = [], []
    for i, lvl in enumerate(LEVELS):
        h, w = sizes[lvl]
        s = STRIDES[lvl]
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device) * s + s // 2,
            torch.arange(w, device=device) * s + s // 2,
            indexing="ij",
        )
        locs.append(torch.stack((xs.flatten(), ys.flatten()), dim=1).float())
        lvl_idx.append(torch.full((h * w,), i, device=device, dtype=torch.long))
    return torch.cat(locs), torch.cat(lvl_idx)


def mask_centers(masks: Tensor, boxes: Tensor) -> Tensor:
    """[K,2] centre of mass of each mask (box centre for an empty mask)."""
    h, w = masks.shape[-2:]
    m = masks.float()
    area = m.sum((1, 2))
    ys = torch.arange(h, device=masks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(w, device=masks.device, dtype=torch.float32) + 0.5
    cx = (m.sum(1) * xs).sum(1) / area.clamp(min=1)
    cy = (m.sum(2) * ys).sum(1) / area.clamp(min=1)
    box_c = (boxes[:, :2] + boxes[:, 2:]) / 2
    return torch.where((area > 0)[:, None], torch.stack((cx, cy), 1), box_c)


def _cells_on_masks(masks: Tensor, sizes: dict[int, tuple[int, int]]) -> Tensor:
    """[K, L] whether each level's cell (its stride × stride pixels) holds a pixel of each mask."""
    k, h, w = masks.shape
    m = masks.float().unsqueeze(0)  # [1,K,H,W]
    on = []
    for lvl in LEVELS:
        s = STRIDES[lvl]
        rows, cols = sizes[lvl]
        padded = F.pad(m, (0, max(0, cols * s - w), 0, max(0, rows * s - h)))[..., : rows * s, : cols * s]
        on.append(F.max_pool2d(padded, s).reshape(k, rows * cols))
    return torch.cat(on, dim=1) > 0


def assign(
    masks: Tensor,
    boxes: Tensor,
    sizes: dict[int, tuple[int, int]],
    mode: str = "center",
    radius: float = 1.5,
) -> Assignment:
    """FCOS assignment of one image's instances (``masks`` [K,H,W] bool, ``boxes`` [K,4] xyxy).

    ``mode="center"``: positive inside the box and within ``radius`` strides of the mask's centre of
    mass (CondInst); ``mode="mask"``: positive at every cell holding a pixel of the instance mask,
    i.e. every cell a tap on the object can fall in (inference reads the tapped pixel's cell), so
    off-centre taps are trained too. Either way the level must fit the object's size and ties go
    to the smaller instance.
    """
    locs, lvl = locations(sizes, boxes.device)
    n = locs.shape[0]
    if boxes.numel() == 0:
        return Assignment(
            torch.full((n,), -1, dtype=torch.long, device=boxes.device),
            torch.zeros(n, 4, device=boxes.device),
            torch.zeros(n, device=boxes.device),
        )
    x, y = locs[:, 0:1], locs[:, 1:2]
    ltrb = torch.stack((x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y), dim=2)  # [L,K,4]
    inside = ltrb.min(dim=2).values > 0
    if mode == "center":
        stride = torch.tensor([STRIDES[v] for v in LEVELS], device=boxes.device, dtype=torch.float32)[lvl]
        r = (radius * stride)[:, None]
        c = mask_centers(masks, boxes)
        near = ((x - c[:, 0]).abs() < r) & ((y - c[:, 1]).abs() < r)
        positive = inside & near
    elif mode == "mask":
        positive = _cells_on_masks(masks, sizes).T  # [L,K]
    else:
        raise ValueError(f"assignment mode must be 'center' or 'mask', got {mode!r}")
    reach = ltrb.max(dim=2).values
    lo = torch.tensor(BOUNDS[:-1], device=boxes.device)[lvl][:, None]
    hi = torch.tensor(BOUNDS[1:], device=boxes.device)[lvl][:, None]
    positive &= (reach > lo) & (reach <= hi)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(n, -1)
    area = torch.where(positive, area, torch.full_like(area, float("inf")))
    best_area, best = area.min(dim=1)
    instance = torch.where(torch.isfinite(best_area), best, torch.full_like(best, -1))
    # A "mask" positive can sit off the box (a cell that only touches the mask): its box target
    # grows to take the location in, so the predicted region still holds the tapped object.
    t = ltrb[torch.arange(n, device=boxes.device), best].clamp(min=0)
    lr, tb = t[:, [0, 2]], t[:, [1, 3]]
    ctr = ((lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values)).clamp(min=0).sqrt()
    ctr = torch.where(instance >= 0, ctr, torch.zeros_like(ctr))
    return Assignment(instance, t, ctr)
