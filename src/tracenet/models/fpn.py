"""FPN P3–P7 with P6/P7 from P5 (FCOS), from torchvision.ops."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


class FPN(nn.Module):
    """Maps ``{c3, c4, c5}`` to ``[p3, p4, p5, p6, p7]`` (strides 8 … 128)."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        # in_channels == out_channels makes LastLevelP6P7 start from P5 (FCOS), not C5.
        self.fpn = FeaturePyramidNetwork(
            list(in_channels), channels, extra_blocks=LastLevelP6P7(channels, channels)
        )

    def forward(self, feats: dict[str, Tensor]) -> list[Tensor]:
        return list(self.fpn(feats).values())
