"""TraceNet / FullNet: one set of weights, two ways to compute a tap's mask.

``mode="full"`` runs the dense network on the whole image and decodes the tap;
``mode="trace"`` asks the Receptive Field Tracer for exactly the values that decoding reads
(heads at the tap's cells, mask features over the mask region) and decodes them the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from tracenet.cpu_heap import keep_freed_memory
from tracenet.models import checkpoint, decode
from tracenet.models.config import ModelConfig
from tracenet.models.dense import DenseNet
from tracenet.models.fold import fold_batchnorm, weights_key
from tracenet.models.gc_pause import no_gc_pause
from tracenet.models.losses import check_targets, compute_losses, semantic_loss
from tracenet.models.preprocess import (
    Geometry,
    check_box,
    check_click,
    geometry,
    normalize,
    resize_pad_normalize,
    to_float_chw,
)
from tracenet.models.result import SegmentResult


@dataclass(frozen=True)
class Prepared:
    """An image as both modes see it: its geometry and the normalized, padded network input."""

    geo: Geometry
    tensor: Tensor  # [1,3,Hp,Wp]


class TraceNet(nn.Module):
    def __init__(self, cfg: ModelConfig, pretrained: str | Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.dense = DenseNet(cfg, pretrained)
        # Training only (outside the dense network: neither mode computes it).
        self.semantic_head = nn.Conv2d(cfg.mask_feat_channels, 1, 1) if cfg.semantic_loss_weight > 0 else None
        self._full_macs: dict[tuple[int, ...], int] = {}
        self._channels_last = False
        self._folded: tuple[tuple, nn.Module] | None = None  # (weights_key, net): not a submodule

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, backbone: str = "resnet50", pretrained: str | Path | None = None, **options) -> TraceNet:
        """A model with the given options (see ModelConfig); ``pretrained`` only affects the backbone."""
        return cls(ModelConfig.from_dict({"backbone": backbone, **options}), pretrained)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> TraceNet:
        """Load a checkpoint written by ``save_checkpoint`` (weights_only, so no code runs)."""
        options, state = checkpoint.load(path)
        model = cls(ModelConfig.from_dict(options))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} does not match a {model.cfg.backbone} TraceNet: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        return model.eval()

    def save_checkpoint(self, path: str | Path) -> Path:
        return checkpoint.save(path, self.cfg.to_dict(), self.state_dict())

    # ------------------------------------------------------------------ dense
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Images ``[N,3,H,W]`` in [0, 1] -> dense maps (normalized, then zero-padded bottom/right)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N,3,H,W] floats in [0, 1], got shape {tuple(images.shape)}")
        d = self.cfg.size_divisibility
        h, w = images.shape[-2:]
        x = normalize(images, self.cfg)
        return self.dense(F.pad(x, (0, -w % d, 0, -h % d)))

    def compute_loss(self, images: Tensor, targets: list[dict], generator=None) -> dict[str, Tensor]:
        """Training losses (``loss`` is their sum); targets per image: masks, boxes (xyxy px), labels."""
        check_targets(targets, images.shape[0])
        dense = self(images)
        losses = compute_losses(dense, targets, self.cfg, generator)
        if self.semantic_head is not None:
            sem = (
                semantic_loss(self.semantic_head(dense["mask_feats"]), targets)
                * self.cfg.semantic_loss_weight
            )
            losses["loss_sem"] = sem
            losses["loss"] = losses["loss"] + sem
        return losses

    def prepare(self, image) -> Prepared:
        """Check, resize (short side ``min_size``, long side <= ``max_size``), normalize and pad."""
        chw = to_float_chw(image)
        geo = geometry(tuple(chw.shape[-2:]), self.cfg)
        device = next(self.parameters()).device
        return Prepared(geo, resize_pad_normalize(chw, geo, self.cfg).to(device))

    def full_macs(self, shape: tuple[int, ...]) -> int:
        """MACs of one dense forward at ``shape`` (counted once per shape)."""
        shape = tuple(shape)
        if shape not in self._full_macs:
            with torch.no_grad():
                self._dense_counted(torch.zeros(shape, device=next(self.parameters()).device))
        return self._full_macs[shape]

    def inference_net(self) -> nn.Module:
        """The dense network as both modes run it: eval mode, BatchNorm folded into the
        convolutions (models/fold.py). Built again whenever a weight or statistic changes."""
        self._check_eval()
        key = (next(self.parameters()).device, self._channels_last, weights_key(self.dense))
        if self._folded is None or self._folded[0] != key:
            self._folded = None  # free the stale copy first
            self._folded = (key, fold_batchnorm(self.dense))
        return self._folded[1]

    def _dense_counted(self, x: Tensor) -> dict[str, Tensor]:
        """The inference net's forward, counting its MACs the first time a shape is seen
        (FlopCounterMode reports 2 per MAC) during the real forward rather than in an extra one."""
        shape, net = tuple(x.shape), self.inference_net()
        if shape in self._full_macs:
            return net(x)
        with FlopCounterMode(display=False) as fc:
            out = net(x)
        self._full_macs[shape] = fc.get_total_flops() // 2
        return out

    # ------------------------------------------------------------------ inference
    def decode(
        self,
        dense: dict[str, Tensor],
        clicks,
        boxes=None,
        *,
        image_size: tuple[int, int],
        index: int = 0,
    ) -> list[SegmentResult]:
        """Masks for several taps on image ``index`` of a dense forward of ``prepare(image).tensor``.

        ``image_size`` is the (height, width) of the original image; clicks and boxes are in its pixels.
        """
        geo = geometry(image_size, self.cfg)
        boxes = [None] * len(clicks) if boxes is None else list(boxes)
        if len(boxes) != len(clicks):
            raise ValueError(f"got {len(clicks)} clicks but {len(boxes)} boxes")
        with torch.no_grad():
            return [
                self._tap(geo, c, b, dense=dense, index=index) for c, b in zip(clicks, boxes, strict=True)
            ]

    def segment(self, image, click, mode: str = "trace", box=None) -> SegmentResult:
        """The mask of the object under ``click`` = (x, y) in input pixels; see SegmentResult."""
        if mode not in ("trace", "full"):
            raise ValueError(f"mode must be 'trace' or 'full', got {mode!r}")
        if mode == "trace":
            with no_gc_pause, self.session(image) as s:
                return s.segment(click, box=box)
        with no_gc_pause:
            self._check_eval()
            t0 = time.perf_counter()
            prep = self.prepare(image)
            with torch.no_grad():
                dense = self._dense_counted(prep.tensor)
                r = self._tap(prep.geo, click, box, dense=dense)
            r.macs += self.full_macs(prep.tensor.shape)
            r.seconds = time.perf_counter() - t0
        return r

    def session(self, image):
        """Context manager for several taps on one image, sharing one RFT region cache."""
        from tracenet.models.session import Session

        self._check_eval()
        return Session(self, image)

    def _check_eval(self) -> None:
        if self.training:
            raise RuntimeError(
                "segment() needs BatchNorm statistics, not batch statistics: call model.eval()"
            )
        self._inference_layout()

    def _inference_layout(self) -> None:
        """Channels-last weights for CPU inference, in both modes: oneDNN convolutions then run
        on NHWC activations without reordering each one (a dense R-50 forward at 800×1216 here:
        1.74 s -> 1.29 s; the backbone, which trace mode runs whole at most taps, gains most),
        and a heap that keeps freed activations (cpu_heap.py: 1.53 s -> 1.33 s)."""
        if next(self.parameters()).device.type != "cpu":
            return
        keep_freed_memory()
        if not self._channels_last:
            self.dense.to(memory_format=torch.channels_last)
            self._channels_last = True

    def train(self, mode: bool = True) -> TraceNet:
        """Training keeps PyTorch's default layout (DDP's gradient buckets assume it)."""
        super().train(mode)
        if mode and self._channels_last:
            self.dense.to(memory_format=torch.contiguous_format)
            self._channels_last = False
        return self

    def _tap(self, geo: Geometry, click, box, *, dense=None, index: int = 0, run=None) -> SegmentResult:
        """Decode one tap. Heads and mask features come from ``dense`` (full mode) or from
        ``run(targets) -> (outputs, macs)`` (trace mode: pass 1 the heads at the tap's cells,
        pass 2 the mask features over the region; with an explicit ``box`` the region is known
        first and one plan computes both); everything else is shared."""
        click = check_click(click, geo)
        given = check_box(box, geo) if box is not None else None
        cells = decode.tap_cells(geo, click)
        sy, sx = geo.scale
        region = None
        if given:
            region = decode.mask_region(geo.box_to_resized(given), self.cfg.margin, geo)
        macs = 0
        if dense is not None:
            heads = decode.gather_heads(dense, cells, index)
        else:
            targets = decode.head_targets(cells)
            if region is not None:  # region known up front: one plan serves both passes, no recomputation
                targets["mask_feats"] = region
            out, cost = run(targets)
            macs += cost
            heads = {lvl: {k: out[f"{k}{lvl}"][0, :, 0, 0] for k in decode.HEAD_KEYS} for lvl in cells}
        lvl, score = decode.choose_level(heads)
        pbox = decode.predicted_box(lvl, cells[lvl], heads[lvl]["box"])
        if region is None:
            region = decode.mask_region(pbox, self.cfg.margin, geo)
        y0, y1, x0, x1 = region
        if dense is not None:
            feats = dense["mask_feats"][index : index + 1, :, y0:y1, x0:x1]
        elif "mask_feats" in out:
            feats = out["mask_feats"]
        else:
            out, cost = run({"mask_feats": region})
            macs += cost
            feats = out["mask_feats"]
        logits = decode.mask_logits(feats, region, lvl, cells[lvl], heads[lvl]["controller"])
        macs += decode.mask_logits_macs(region)
        h, w = geo.image
        box_in = (
            min(max(pbox[0] / sx, 0.0), w),
            min(max(pbox[1] / sy, 0.0), h),
            min(max(pbox[2] / sx, 0.0), w),
            min(max(pbox[3] / sy, 0.0), h),
        )
        return SegmentResult(
            mask=decode.paste_mask(logits, region, geo),
            score=score,
            box=box_in,
            level=lvl,
            region=region,
            heads={lv: {k: v.detach().clone() for k, v in hd.items()} for lv, hd in heads.items()},
            macs=macs,
            mode="full" if dense is not None else "trace",
        )
