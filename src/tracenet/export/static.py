"""Static-shape tap networks for export: FullNet and TraceNet as one graph each.

Both take the normalized image ``[1,3,S,S]`` and the tap's cell on every level ``[5,2]``
(int32 row, col; computed on the host by ``decode.tap_cells``) and return the same outputs,
so the host decodes them with one function (``tracenet.export.host``):

- ``level`` int32 ``[1]``: index into LEVELS of the chosen level (finer level on ties),
- ``score`` ``[1]``: sqrt(sigmoid(cls)·sigmoid(ctr)) at the chosen level,
- ``box`` ``[4]``: predicted box (x0, y0, x1, y1) in network-input pixels,
- ``logits`` ``[1,1,S/8,S/8]``: the dynamic mask head of the chosen instance at every
  stride-8 cell (the host crops the mask region, exactly as ``decode.mask_logits`` would).

FullNet runs the heads on every location and gathers the tap's cells. TraceNet runs the
heads only on a fixed window of ``2R+1`` cells around the tap's cell on each level (R = the
number of 3×3 convs on the head path), cropped in-graph with clamped ``index_select`` and
zeroed outside the feature map by validity masks before each conv: the zeros are exactly
the padding the full convs see at the true border, and the unpadded convs shrink the window
to the one cell the tap reads. Backbone, FPN and mask branch run densely in both (at mobile
input sizes the P7 head at any tap already needs all of C5; see docs/export.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracenet.models.config import LEVELS, MASK_STRIDE, SIZES_OF_INTEREST, STRIDES
from tracenet.models.dynamic_head import dynamic_mask_head
from tracenet.models.heads import Heads
from tracenet.models.tracenet import TraceNet

MODES = ("full", "trace")
OUTPUTS = ("level", "score", "box", "logits")


def head_radius(heads: Heads) -> int:
    """Cells each side of the tap that the head path reads: one per 3×3, stride-1, pad-1 conv."""
    paths = (
        [blk[0] for blk in heads.cls_tower] + [heads.cls_logits],
        [blk[0] for blk in heads.box_tower] + [heads.box_pred, heads.ctr_pred, heads.controller],
    )
    for conv in paths[0] + paths[1]:
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1):
            raise ValueError(f"static TraceNet needs 3×3 stride-1 pad-1 head convs, found {conv}")
    if len(heads.cls_tower) != len(heads.box_tower):
        raise ValueError("static TraceNet needs cls and box towers of the same depth")
    return len(heads.box_tower) + 1


class TapNet(nn.Module):
    """One tap's outputs at a fixed input size ``S`` (see the module docstring)."""

    def __init__(self, model: TraceNet, size: int, mode: str) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if size % 128 or size < 128:
            raise ValueError(f"input size must be a positive multiple of 128 (P7 stride), got {size}")
        self.dense = model.dense
        self.cfg = model.cfg
        self.size = size
        self.mode = mode
        self.radius = head_radius(self.dense.heads)
        n = size // MASK_STRIDE
        grid = torch.arange(n, dtype=torch.float32) * MASK_STRIDE + MASK_STRIDE // 2
        self.register_buffer("grid", grid, persistent=False)
        self.register_buffer("strides", torch.tensor([float(STRIDES[lv]) for lv in LEVELS]), persistent=False)
        soi = torch.tensor([float(SIZES_OF_INTEREST[lv]) for lv in LEVELS])
        self.register_buffer("soi", soi, persistent=False)

    def forward(self, image: Tensor, cells: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        d = self.dense
        feats = d.fpn(d.backbone(image))
        heads = self._heads_dense(feats, cells) if self.mode == "full" else self._heads_window(feats, cells)
        cls, box, ctr, ctl = (torch.stack([h[i] for h in heads]) for i in range(4))  # [5, C]
        scores = torch.sqrt(torch.sigmoid(cls).amax(1) * torch.sigmoid(ctr).amax(1))
        level = torch.argmax(scores).view(1)  # first maximum = finer level, as decode.choose_level
        score = scores.index_select(0, level)
        stride = self.strides.index_select(0, level)
        cell = cells.index_select(0, level)[0].to(torch.float32)  # (row, col)
        cy, cx = cell[0] * stride + torch.floor(stride / 2), cell[1] * stride + torch.floor(stride / 2)
        ltrb = box.index_select(0, level)[0]
        pbox = torch.cat([cx - ltrb[0:1], cy - ltrb[1:2], cx + ltrb[2:3], cy + ltrb[3:4]])
        soi = self.soi.index_select(0, level)
        n = self.grid.shape[0]
        rx = ((cx - self.grid) / soi).view(1, 1, n).expand(1, n, n)
        ry = ((cy - self.grid) / soi).view(1, n, 1).expand(1, n, n)
        coords = torch.stack((rx, ry), dim=1)
        mask_feats = d.mask_branch(feats[0], feats[1], feats[2])
        logits = dynamic_mask_head(mask_feats, coords, ctl.index_select(0, level))
        return level.to(torch.int32), score, pbox, logits

    def _heads_dense(self, feats: list[Tensor], cells: Tensor) -> list[tuple[Tensor, ...]]:
        """FullNet: every head map on every location, then the tap's cell."""
        out = self.dense.heads(feats)
        picked = []
        for i, lvl in enumerate(LEVELS):
            r, c = cells[i, 0:1], cells[i, 1:2]
            picked.append(
                tuple(
                    out[f"{k}{lvl}"].index_select(2, r).index_select(3, c).flatten()
                    for k in ("cls", "box", "ctr", "controller")
                )
            )
        return picked

    def _heads_window(self, feats: list[Tensor], cells: Tensor) -> list[tuple[Tensor, ...]]:
        """TraceNet: the heads on a (2R+1)² window per level, border padding re-created by masks."""
        hd = self.dense.heads
        span = torch.arange(-self.radius, self.radius + 1, dtype=cells.dtype, device=cells.device)
        picked = []
        for i, feat in enumerate(feats):
            rows, cols = cells[i, 0] + span, cells[i, 1] + span
            h, w = feat.shape[-2:]
            vr = ((rows >= 0) & (rows < h)).to(feat.dtype)
            vc = ((cols >= 0) & (cols < w)).to(feat.dtype)
            valid = vr.view(-1, 1) * vc.view(1, -1)  # [2R+1, 2R+1]
            x = feat.index_select(2, rows.clamp(0, h - 1)).index_select(3, cols.clamp(0, w - 1)) * valid
            c = _tower(hd.cls_tower, x, valid)
            b = _tower(hd.box_tower, x, valid)
            picked.append(
                (
                    _valid_conv(hd.cls_logits, c).flatten(),
                    (torch.relu(_valid_conv(hd.box_pred, b) * hd.scales[i]) * STRIDES[LEVELS[i]]).flatten(),
                    _valid_conv(hd.ctr_pred, b).flatten(),
                    _valid_conv(hd.controller, b).flatten(),
                )
            )
        return picked


def _valid_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    return F.conv2d(x, conv.weight, conv.bias, stride=1, padding=0)


def _tower(tower: nn.Sequential, x: Tensor, valid: Tensor) -> Tensor:
    """conv(no pad)-BN-ReLU blocks; outputs outside the feature map are zeroed like padding."""
    for j, (conv, bn, relu) in enumerate(tower, start=1):
        x = relu(bn(_valid_conv(conv, x))) * valid[j:-j, j:-j]
    return x
