"""CondInst mask branch: P3–P5 fused at stride 8, then a small BatchNorm tower to 8 channels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tracenet.models.heads import conv_bn_relu


class MaskBranch(nn.Module):
    def __init__(self, in_channels: int, channels: int = 128, out_channels: int = 8) -> None:
        super().__init__()
        self.refine = nn.ModuleList(conv_bn_relu(in_channels, channels) for _ in range(3))
        self.tower = nn.Sequential(
            *(conv_bn_relu(channels, channels) for _ in range(4)), nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, p3: Tensor, p4: Tensor, p5: Tensor) -> Tensor:
        x = self.refine[0](p3)
        # Nearest upsampling by size, as torchvision's FPN does: one op form for the tracer.
        for refine, feat in zip(self.refine[1:], (p4, p5), strict=True):
            x = x + F.interpolate(refine(feat), size=x.shape[-2:], mode="nearest")
        return self.tower(x)
