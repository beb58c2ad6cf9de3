"""Static-shape tap networks for export: FullNet and TraceNet as one graph each.

Inputs (the host computes them: ``tracenet.export.host.tap_inputs``):

- ``image`` ``[1,3,S,S]``: the normalized, zero-padded image,
- ``cells`` int32 ``[5,2]``: the tap's (row, col) cell on P3…P7 (``decode.tap_cells``),
- ``prompt`` ``[4]``: a prompt box (x0, y0, x1, y1) in network-input pixels, or zeros (any
  box with x1 <= x0) for the predicted box,
- ``extent`` int32 ``[2]``: the resized (unpadded) image in stride-8 cells, ceil(h/8), ceil(w/8).

Outputs, the same for both modes, so one host decoder serves both:

- ``level`` int32 ``[1]``: index into LEVELS of the chosen level (finer level on ties),
- ``score`` ``[1]``: sqrt(sigmoid(cls)·sigmoid(ctr)) at the chosen level,
- ``box`` ``[4]``: predicted box (x0, y0, x1, y1) in network-input pixels,
- ``logits`` ``[1,1,M,M]``: the chosen instance's dynamic mask head on an ``M×M`` window of
  stride-8 cells (FullNet: the whole ``S/8×S/8`` map),
- ``window`` int32 ``[2]``: the window's first (row, col); FullNet ``(0, 0)``.

FullNet is the dense network: heads on every location (then the tap's cells), FPN and mask
branch everywhere. TraceNet computes what the tap reads, with fixed-size windows whose
position comes from the inputs:

- backbone, P5, P6, P7: dense (the P7 head at any tap reads all of P7, hence all of C5 and
  the whole backbone, at every mobile input size);
- heads: on a ``(2R+1)²`` window around the tap's cell on each level whose map is larger than
  that (R = the 3×3 convs on the head path), densely on the smaller maps;
- P3, P4 (with ``mask_window``): only on the windows the heads and the mask read, from C3/C4
  gathered there plus the dense top-down path (nearest upsampling = integer halving of indices);
- mask branch (with ``mask_window`` M): on the ``M×M`` window centred on the mask region
  (``window_start``), which the graph computes from the predicted box or the prompt box. A
  region larger than ``M`` cells is clipped to the window (the host reports ``clipped``).

Windows are gathered with clamped ``index_select`` and multiplied by validity masks, so values
outside the feature map are the zeros a padded conv sees; convs then run unpadded, each
trimming one cell per side, and their outputs outside the map are zeroed again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tracenet.models.config import LEVELS, MASK_STRIDE, SIZES_OF_INTEREST, STRIDES
from tracenet.models.dynamic_head import dynamic_mask_head
from tracenet.models.fpn import FPN
from tracenet.models.heads import Heads, Tower
from tracenet.models.tracenet import TraceNet

MODES = ("full", "trace")
INPUTS = ("image", "cells", "prompt", "extent")
OUTPUTS = ("level", "score", "box", "logits", "window")


def head_radius(heads: Heads) -> int:
    """Cells each side of the tap that the head path reads: one per 3×3, stride-1, pad-1 conv."""
    paths = (
        [*heads.cls_tower.convs, heads.cls_logits],
        [*heads.box_tower.convs, heads.box_pred, heads.ctr_pred, heads.controller],
    )
    _check_convs(paths[0] + paths[1], 3, "head")
    if len(heads.cls_tower.convs) != len(heads.box_tower.convs):
        raise ValueError("static TraceNet needs cls and box towers of the same depth")
    return len(heads.box_tower.convs) + 1


def window_start(lo: int, hi: int, size: int, n: int) -> int:
    """First cell of the ``size``-cell window centred on cells ``[lo, hi)``, kept in ``[0, n)``.

    It contains ``[lo, hi)`` whenever ``hi - lo <= size``; the graph computes the same."""
    return min(max(lo - (size - (hi - lo)) // 2, 0), n - size)


class TapNet(nn.Module):
    """One tap's outputs at a fixed input size ``S`` (see the module docstring).

    ``mask_window`` (trace mode): the mask branch's window in stride-8 cells; None or ``>= S/8``
    runs the mask branch (and P3/P4) densely, which is exact for every mask region.
    """

    def __init__(self, model: TraceNet, size: int, mode: str, mask_window: int | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if size % 128 or size < 128:
            raise ValueError(f"input size must be a positive multiple of 128 (P7 stride), got {size}")
        if mask_window is not None and int(mask_window) < 1:
            raise ValueError(
                f"mask_window must be a positive number of stride-8 cells or None, got {mask_window}"
            )
        self.dense = model.dense
        self.cfg = model.cfg
        self.size = size
        self.mode = mode
        self.n = n = size // MASK_STRIDE
        self.maps = [size // STRIDES[lvl] for lvl in LEVELS]
        self.mask_window = n if mode == "full" or mask_window is None else min(int(mask_window), n)
        self.crop = self.mask_window < n  # P3/P4 and the mask branch on windows
        if mode == "trace":
            self.radius = head_radius(self.dense.heads)
            if self.crop:
                _check_windowable(self.dense.fpn, self.dense.mask_branch)
        grid = torch.arange(n, dtype=torch.float32) * MASK_STRIDE + MASK_STRIDE // 2
        self.register_buffer("grid", grid, persistent=False)
        self.register_buffer("strides", torch.tensor([float(STRIDES[lv]) for lv in LEVELS]), persistent=False)
        soi = torch.tensor([float(SIZES_OF_INTEREST[lv]) for lv in LEVELS])
        self.register_buffer("soi", soi, persistent=False)

    def forward(
        self, image: Tensor, cells: Tensor, prompt: Tensor, extent: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        d = self.dense
        feats = d.backbone(image)
        if self.mode == "full":
            pyr = _Pyramid(d.fpn, feats, crop=False)
            heads = self._heads_dense(pyr.maps, cells)
        else:
            pyr = _Pyramid(d.fpn, feats, crop=self.crop)
            heads = [self._heads_at(pyr, i, cells[i]) for i in range(len(LEVELS))]
        cls, box, ctr, ctl = (torch.stack([h[i] for h in heads]) for i in range(4))  # [5, C]
        scores = torch.sqrt(torch.sigmoid(cls).amax(1) * torch.sigmoid(ctr).amax(1))
        level = torch.argmax(scores).view(1)  # first maximum = finer level, as decode.choose_level
        score = scores.index_select(0, level)
        stride = self.strides.index_select(0, level)
        cell = cells.index_select(0, level)[0].to(torch.float32)  # (row, col)
        cy, cx = cell[0] * stride + torch.floor(stride / 2), cell[1] * stride + torch.floor(stride / 2)
        ltrb = box.index_select(0, level)[0]
        pbox = torch.cat([cx - ltrb[0:1], cy - ltrb[1:2], cx + ltrb[2:3], cy + ltrb[3:4]])
        if self.crop:
            use = (prompt[2] > prompt[0]) & (prompt[3] > prompt[1])
            rbox = torch.where(use, prompt, pbox)
            r0 = self._window_start(rbox[1], rbox[3], extent[0])
            c0 = self._window_start(rbox[0], rbox[2], extent[1])
            mask_feats = self._mask_window(pyr, r0, c0)
            m = self.mask_window
            span = torch.arange(m, dtype=torch.int32)
            gy, gx = self.grid.index_select(0, r0 + span), self.grid.index_select(0, c0 + span)
        else:
            mask_feats = d.mask_branch(*(pyr.full(i) for i in range(3)))
            r0 = c0 = torch.zeros((), dtype=torch.int32)
            m, gy, gx = self.n, self.grid, self.grid
        soi = self.soi.index_select(0, level)
        rx = ((cx - gx) / soi).view(1, 1, m).expand(1, m, m)
        ry = ((cy - gy) / soi).view(1, m, 1).expand(1, m, m)
        logits = dynamic_mask_head(mask_feats, torch.stack((rx, ry), dim=1), ctl.index_select(0, level))
        window = torch.stack((r0, c0)).to(torch.int32)
        return level.to(torch.int32), score, pbox, logits, window

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

    def _heads_at(self, pyr: _Pyramid, i: int, cell: Tensor) -> tuple[Tensor, ...]:
        """TraceNet: level ``i``'s heads at ``cell`` from a (2R+1)² window, or densely on a map
        no larger than the window."""
        hd = self.dense.heads
        k = 2 * self.radius + 1
        if self.maps[i] > k:
            r0, c0 = cell[0] - self.radius, cell[1] - self.radius
            valid = _valid(r0, c0, k, self.maps[i])
            x, at = pyr.window(i, r0, c0, k), None
        else:
            x, valid, at = pyr.full(i), None, cell
        c = _tower(hd.cls_tower, i, x, valid)
        b = _tower(hd.box_tower, i, x, valid)
        box = torch.relu(_predict(hd.box_pred, b, at) * hd.scales[i]) * STRIDES[LEVELS[i]]
        return (
            _predict(hd.cls_logits, c, at),
            box,
            _predict(hd.ctr_pred, b, at),
            _predict(hd.controller, b, at),
        )

    def _window_start(self, lo: Tensor, hi: Tensor, limit: Tensor) -> Tensor:
        """``window_start`` of the mask region of box side [lo, hi] (``decode.mask_region``)."""
        s, m = float(MASK_STRIDE), self.mask_window
        d = (hi - lo) * self.cfg.margin / 2
        lim = limit.to(torch.float32)
        a = torch.minimum(torch.clamp(torch.floor((lo - d) / s), min=0.0), lim - 1)
        b = torch.maximum(torch.minimum(torch.ceil((hi + d) / s), lim), a + 1)
        start = a - torch.floor((m - (b - a)) / 2)
        return torch.clamp(start, 0.0, float(self.n - m)).to(torch.int32)

    def _mask_window(self, pyr: _Pyramid, r0: Tensor, c0: Tensor) -> Tensor:
        """``mask_feats`` on the M×M window at (r0, c0) (inside the map): the branch's 3×3 tower
        reads M+2·depth cells of the fused P3/P4/P5 refinements, each refinement one more."""
        mb = self.dense.mask_branch
        depth = len(mb.tower) - 1
        k, n = self.mask_window + 2 * depth, self.n
        ar, ac = r0 - depth, c0 - depth
        x = _conv_bn_relu(mb.refine[0], pyr.window(0, ar - 1, ac - 1, k + 2))
        span = torch.arange(k, dtype=torch.int32)
        rows, cols = (ar + span).clamp(0, n - 1), (ac + span).clamp(0, n - 1)
        # P4 refined on the cells that nearest upsampling (index // 2) reads.
        sr, sc = rows[0] // 2, cols[0] // 2
        k4 = k // 2 + 1
        p4 = _conv_bn_relu(mb.refine[1], pyr.window(1, sr - 1, sc - 1, k4 + 2))
        x = x + _gather(p4, rows // 2 - sr, cols // 2 - sc)
        x = x + _gather(mb.refine[2](pyr.full(2)), rows // 4, cols // 4)
        valid = _valid(ar, ac, k, n)
        x = x * valid
        for j, (conv, bn, relu) in enumerate(mb.tower[:depth], start=1):
            x = relu(bn(_valid_conv(conv, x))) * valid[..., j:-j, j:-j]
        return mb.tower[depth](x)


class _Pyramid:
    """P3…P7 of one image for a tap network.

    ``crop=False``: the FPN, densely. ``crop=True``: P5, P6, P7 and the top-down sum of P5
    densely; P3 and P4 only on the windows asked for (``window``), from C3/C4 gathered there.
    """

    def __init__(self, fpn: FPN, feats: dict[str, Tensor], crop: bool) -> None:
        self.fpn = fpn.fpn  # torchvision FeaturePyramidNetwork
        self.c = list(feats.values())  # C3, C4, C5
        if not crop:
            self.maps: list[Tensor | None] = fpn(feats)
            return
        self.inner5 = self.fpn.inner_blocks[2](self.c[2])
        p5 = self.fpn.layer_blocks[2](self.inner5)
        top, _ = self.fpn.extra_blocks([p5], self.c, ["p5"])  # [P5, P6, P7]
        self.maps = [None, None, *top]

    def full(self, i: int) -> Tensor:
        """The whole map of level index ``i``."""
        if self.maps[i] is None:
            zero = torch.zeros((), dtype=torch.int32)
            self.maps[i] = self.window(i, zero, zero, self.c[i].shape[-1])
        return self.maps[i]

    def window(self, i: int, r0: Tensor, c0: Tensor, k: int) -> Tensor:
        """Level ``i`` on rows r0…r0+k-1 × cols c0…c0+k-1, zero outside the map."""
        h = self.c[i].shape[-1] if self.maps[i] is None else self.maps[i].shape[-1]
        valid = _valid(r0, c0, k, h)
        if self.maps[i] is not None:
            return _gather(self.maps[i], _clamped(r0, k, h), _clamped(c0, k, h)) * valid
        inner = self._inner(i, r0 - 1, c0 - 1, k + 2) * _valid(r0 - 1, c0 - 1, k + 2, h)
        return _valid_conv(self.fpn.layer_blocks[i][0], inner) * valid

    def _inner(self, i: int, r0: Tensor, c0: Tensor, k: int) -> Tensor:
        """The top-down sum of level ``i`` at the clamped rows/cols of a k×k window."""
        h = self.c[i].shape[-1]
        rows, cols = _clamped(r0, k, h), _clamped(c0, k, h)
        if i == 2:
            return _gather(self.inner5, rows, cols)
        lateral = self.fpn.inner_blocks[i](_gather(self.c[i], rows, cols))
        sr, sc = rows[0] // 2, cols[0] // 2  # nearest upsampling ×2 reads index // 2
        top = self._inner(i + 1, sr, sc, k // 2 + 1)
        return lateral + _gather(top, rows // 2 - sr, cols // 2 - sc)


def _clamped(start: Tensor, k: int, h: int) -> Tensor:
    return (start + torch.arange(k, dtype=torch.int32)).clamp(0, h - 1)


def _valid(r0: Tensor, c0: Tensor, k: int, h: int) -> Tensor:
    """``[1,1,k,k]``: 1 where the window at (r0, c0) lies inside the h×h map, else 0 (rank 4, so
    the converter moves it to the convs' channels-last layout instead of transposing the maps)."""
    span = torch.arange(k, dtype=torch.int32)
    rows, cols = r0 + span, c0 + span
    vr = ((rows >= 0) & (rows < h)).to(torch.float32)
    vc = ((cols >= 0) & (cols < h)).to(torch.float32)
    return (vr.view(-1, 1) * vc.view(1, -1)).view(1, 1, k, k)


def _gather(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``x[..., rows, :][..., cols]`` as one lookup of rows of the channels-last map: TFLite's
    EMBEDDING_LOOKUP (ONNX Gather) on the layout its convs use, where two ``index_select`` on an
    NCHW tensor cost a transpose of the whole map and a bounds-check select each."""
    _, c, h, w = x.shape
    table = x.permute(0, 2, 3, 1).reshape(h * w, c)
    return F.embedding(rows.view(-1, 1) * w + cols.view(1, -1), table).unsqueeze(0).permute(0, 3, 1, 2)


def _valid_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    return F.conv2d(x, conv.weight, conv.bias, stride=1, padding=0)


def _conv_bn_relu(block: nn.Sequential, x: Tensor) -> Tensor:
    conv, bn, relu = block
    return relu(bn(_valid_conv(conv, x)))


def _predict(conv: nn.Conv2d, x: Tensor, at: Tensor | None) -> Tensor:
    """A head predictor at the tap: the window's one valid output, or the dense map at ``at``."""
    if at is None:
        return _valid_conv(conv, x).flatten()
    return conv(x).index_select(2, at[0:1]).index_select(3, at[1:2]).flatten()


def _tower(tower: Tower, level: int, x: Tensor, valid: Tensor | None) -> Tensor:
    """Level ``level``'s head tower: padded on a whole map (``valid`` None), or conv(no pad)-BN-ReLU
    on a window whose outputs outside the feature map are zeroed like padding."""
    if valid is None:
        return tower(x, level)
    for j, (conv, bn) in enumerate(tower.blocks(level), start=1):
        x = torch.relu(bn(_valid_conv(conv, x))) * valid[..., j:-j, j:-j]
    return x


def _check_convs(convs, k: int, what: str) -> None:
    for conv in convs:
        if conv.kernel_size != (k, k) or conv.stride != (1, 1) or conv.padding != (k // 2, k // 2):
            raise ValueError(
                f"static TraceNet needs {k}×{k} stride-1 pad-{k // 2} {what} convs, found {conv}"
            )


def _check_windowable(fpn: FPN, mask_branch: nn.Module) -> None:
    """The windowed P3/P4 and mask branch assume these layer shapes (ValueError otherwise)."""
    tv = fpn.fpn
    _check_convs([b[0] for b in tv.inner_blocks], 1, "FPN lateral")
    _check_convs([b[0] for b in tv.layer_blocks], 3, "FPN output")
    tower = list(mask_branch.tower)
    _check_convs([b[0] for b in [*mask_branch.refine, *tower[:-1]]], 3, "mask branch")
    _check_convs(tower[-1:], 1, "mask branch output")
