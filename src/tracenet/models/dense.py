"""The dense network: everything that runs on the whole image in FullNet (and that RFT traces)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from tracenet.models.backbone import backbone_channels, build_backbone
from tracenet.models.config import ModelConfig
from tracenet.models.fpn import FPN
from tracenet.models.heads import Heads
from tracenet.models.mask_branch import MaskBranch


class DenseNet(nn.Module):
    """Normalized, padded image ``[N,3,H,W]`` -> per-level head maps and ``mask_feats``.

    Plain tensor in, dict of tensors out, no data-dependent control flow: torch.fx can trace it.
    """

    def __init__(self, cfg: ModelConfig, pretrained: str | Path | None = None) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg.backbone, pretrained)
        self.fpn = FPN(backbone_channels(cfg.backbone), cfg.fpn_channels)
        self.heads = Heads(cfg.fpn_channels, cfg.num_classes)
        self.mask_branch = MaskBranch(cfg.fpn_channels, cfg.mask_branch_channels, cfg.mask_feat_channels)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats = self.fpn(self.backbone(x))
        out = self.heads(feats)
        out["mask_feats"] = self.mask_branch(feats[0], feats[1], feats[2])
        return out
