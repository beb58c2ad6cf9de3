"""FCOS/CondInst shared heads: BatchNorm towers (eval statistics keep outputs local, so RFT
can be exact), objectness, box with per-level scale, centerness and the controller.

The towers' convolutions are shared by P3..P7 but each level has its own BatchNorm layers:
the levels' feature statistics differ widely, so one shared BN trained on batch statistics
would hold running averages that fit no level at inference (measured on the synthetic set:
classification loss 0.26 in train mode, 33 in eval mode). GroupNorm would avoid that but
mixes channels per image and so breaks locality; per-level BN (as AdelaiDet does) keeps it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tracenet.models.config import LEVELS, MASK_PARAMS, STRIDES


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=False)
    )


class Tower(nn.Module):
    """``depth`` × (3×3 conv shared by all levels, BatchNorm of the level, ReLU)."""

    def __init__(self, channels: int, depth: int = 4, levels: int = len(LEVELS)) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(depth)
        )
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(levels)) for _ in range(depth)
        )

    def blocks(self, level: int) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """The (conv, BN) pairs level index ``level`` runs, in order."""
        return [(conv, norms[level]) for conv, norms in zip(self.convs, self.norms, strict=True)]

    def forward(self, x: Tensor, level: int) -> Tensor:
        for conv, norm in self.blocks(level):
            x = torch.relu(norm(conv(x)))
        return x


class Heads(nn.Module):
    """Applied to P3..P7 with shared convolutions; returns ``cls{l}, box{l}, ctr{l}, controller{l}``.

    ``box{l}`` holds (l, t, r, b) distances in pixels of the network input: ReLU(scale_l · x)
    times the level's stride (FCOS's normalized regression targets).
    """

    def __init__(self, channels: int, num_classes: int, prior: float = 0.01) -> None:
        super().__init__()
        self.cls_tower = Tower(channels)
        self.box_tower = Tower(channels)
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.ctr_pred = nn.Conv2d(channels, 1, 3, padding=1)
        self.controller = nn.Conv2d(channels, MASK_PARAMS, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(LEVELS)))
        for conv in (self.cls_logits, self.box_pred, self.ctr_pred, self.controller):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior) / prior))

    def forward(self, feats: list[Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i, (lvl, feat) in enumerate(zip(LEVELS, feats, strict=True)):
            c = self.cls_tower(feat, i)
            b = self.box_tower(feat, i)
            out[f"cls{lvl}"] = self.cls_logits(c)
            out[f"box{lvl}"] = torch.relu(self.box_pred(b) * self.scales[i]) * STRIDES[lvl]
            out[f"ctr{lvl}"] = self.ctr_pred(b)
            out[f"controller{lvl}"] = self.controller(b)
        return out
