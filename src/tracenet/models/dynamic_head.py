"""CondInst's dynamic mask head: three 1×1 convs whose weights come from the controller."""

from __future__ import annotations

import torch
from torch import Tensor

from tracenet.models.config import MASK_PARAMS

_IN = 10  # 2 relative coordinates + 8 mask features
_SPLITS = (_IN * 8, 8 * 8, 8 * 1, 8, 8, 1)
MACS_PER_PIXEL = _IN * 8 + 8 * 8 + 8  # one multiply-add = 1 MAC


def relative_coords(center_xy: Tensor, y0: int, x0: int, h: int, w: int, stride: int, soi: Tensor) -> Tensor:
    """``[N,2,h,w]``: (instance location - pixel location) / size of interest, CondInst order (x, y).

    ``center_xy`` ``[N,2]`` is each instance's location (its cell centre on its level) in input
    pixels; the grid is the stride-``stride`` cells ``[y0, y0+h) × [x0, x0+w)``.
    """
    dev = center_xy.device
    xs = (torch.arange(x0, x0 + w, device=dev, dtype=torch.float32) * stride + stride // 2).view(1, 1, w)
    ys = (torch.arange(y0, y0 + h, device=dev, dtype=torch.float32) * stride + stride // 2).view(1, h, 1)
    s = soi.view(-1, 1, 1).float()
    rx = (center_xy[:, 0].view(-1, 1, 1) - xs) / s
    ry = (center_xy[:, 1].view(-1, 1, 1) - ys) / s
    return torch.stack((rx.expand(-1, h, w), ry.expand(-1, h, w)), dim=1)


def dynamic_mask_head(feats: Tensor, coords: Tensor, params: Tensor) -> Tensor:
    """Mask logits ``[N,1,h,w]`` from features ``[N or 1,8,h,w]``, coords ``[N,2,h,w]``, params ``[N,169]``."""
    if params.dim() != 2 or params.shape[1] != MASK_PARAMS:
        raise ValueError(f"params must be [N, {MASK_PARAMS}], got {tuple(params.shape)}")
    n, _, h, w = coords.shape
    x = torch.cat((coords, feats.expand(n, -1, -1, -1)), dim=1).flatten(2)  # [N,10,hw]
    w1, w2, w3, b1, b2, b3 = params.split(_SPLITS, dim=1)
    x = torch.relu(torch.bmm(w1.reshape(n, 8, _IN), x) + b1.unsqueeze(-1))
    x = torch.relu(torch.bmm(w2.reshape(n, 8, 8), x) + b2.unsqueeze(-1))
    x = torch.bmm(w3.reshape(n, 1, 8), x) + b3.unsqueeze(-1)
    return x.view(n, 1, h, w)
