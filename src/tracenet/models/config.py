"""Build options of TraceNet: one dataclass so checkpoints can store and restore them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

BACKBONES = ("resnet18", "resnet50", "resnet101", "mobilenet_v3_large")
LEVELS = (3, 4, 5, 6, 7)
STRIDES = {lvl: 2**lvl for lvl in LEVELS}
# Sizes of interest: FCOS's (-1, 64, 128, 256, 512, inf); CondInst normalizes relative
# coordinates by the upper bound of the level's range, with 1024 for P7.
SIZES_OF_INTEREST = {3: 64, 4: 128, 5: 256, 6: 512, 7: 1024}
MASK_STRIDE = 8
MASK_PARAMS = 169  # dynamic head: weights 80, 64, 8 then biases 8, 8, 1


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the same network (pretrained weights are not part of it)."""

    backbone: str = "resnet50"
    fpn_channels: int = 256
    num_classes: int = 1  # 1 = class-agnostic objectness
    mask_branch_channels: int = 128
    mask_feat_channels: int = 8
    min_size: int = 800
    max_size: int = 1333
    size_divisibility: int = 32
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    margin: float = 0.25  # mask region = box grown by this fraction of its size (half per side)
    # Trace mode computes a layer whole when the tap needs at least this fraction of its map
    # (rft.trace's whole_from): the same result, a few MACs more, no crop copies and no kernel
    # probes for it at a new image size. 1.0 crops every layer not needed whole. (R-50, taps
    # on coco_mini val: MACs ratio 0.384 -> 0.390, first-tap wall ratio 0.57 -> 0.50 at new sizes.)
    whole_from: float = 0.8
    assign: str = "center"  # "center" (FCOS center sampling) or "mask" (every in-mask location)
    center_radius: float = 1.5
    max_mask_samples: int = 64
    # CondInst's auxiliary semantic loss (class-agnostic here): a training-only 1×1 conv on the
    # mask features predicts the foreground, which teaches them object extent directly instead
    # of only through the dynamic heads. 0 turns it off; inference never runs it.
    semantic_loss_weight: float = 0.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r} is not supported; choose one of {BACKBONES}")
        if self.assign not in ("center", "mask"):
            raise ValueError(f"assign must be 'center' or 'mask', got {self.assign!r}")
        for name in ("fpn_channels", "num_classes", "mask_branch_channels", "min_size", "max_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.mask_feat_channels != 8:
            raise ValueError("mask_feat_channels must be 8: the 169 controller parameters assume it")
        if self.size_divisibility < 32 or self.size_divisibility % 32:
            raise ValueError(f"size_divisibility must be a multiple of 32, got {self.size_divisibility}")
        if not 0 <= self.margin <= 4:
            raise ValueError(f"margin must be in [0, 4] (a fraction of the box size), got {self.margin}")
        if not 0 < self.whole_from <= 1:
            raise ValueError(f"whole_from must be a fraction in (0, 1], got {self.whole_from}")
        if not self.semantic_loss_weight >= 0:
            raise ValueError(f"semantic_loss_weight must be >= 0, got {self.semantic_loss_weight}")
        if self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} > max_size {self.max_size}")

    @classmethod
    def from_dict(cls, options: dict) -> ModelConfig:
        """Build from config/checkpoint dicts, naming unknown keys instead of a TypeError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown model options {unknown}; known options: {sorted(known)}")
        opts = dict(options)
        for key in ("mean", "std"):
            if key in opts:
                opts[key] = tuple(float(v) for v in opts[key])
        return cls(**opts)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
