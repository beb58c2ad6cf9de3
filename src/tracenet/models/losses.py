"""CondInst training losses: focal objectness, centerness-weighted GIoU, centerness BCE and
dice on the dynamic head's masks for up to N sampled positives.

The mask loss is computed at stride 2, where inference thresholds the mask: the stride-8
logits are upsampled ×4 (as at inference) and compared with the ground truth averaged over
2×2 pixels (a soft target), rather than CondInst's stride 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from tracenet.models.config import LEVELS, MASK_STRIDE, SIZES_OF_INTEREST, ModelConfig
from tracenet.models.dynamic_head import dynamic_mask_head, relative_coords
from tracenet.models.targets import assign, locations


def _flat(dense: dict[str, Tensor], key: str) -> Tensor:
    """[N, L, C]: one head's maps of all levels, locations concatenated in level order."""
    return torch.cat([dense[f"{key}{lvl}"].flatten(2).transpose(1, 2) for lvl in LEVELS], dim=1)


def dice_loss(logits: Tensor, target: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-mask 1 - dice (CondInst's squared-denominator form); ``logits``/``target`` [K, ...]."""
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return 1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1) + eps)


def compute_losses(
    dense: dict[str, Tensor], targets: list[dict], cfg: ModelConfig, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Loss terms and their sum ``loss`` for a batch; ``dense`` comes from ``TraceNet.forward``."""
    sizes = {lvl: tuple(dense[f"cls{lvl}"].shape[-2:]) for lvl in LEVELS}
    locs, lvl_idx = locations(sizes, dense["cls3"].device)
    cls, box, ctr, ctrl = (_flat(dense, k) for k in ("cls", "box", "ctr", "controller"))
    cls_t = torch.zeros_like(cls)
    pos_img, pos_loc, pos_inst, ltrb_t, ctr_t = [], [], [], [], []
    for i, t in enumerate(targets):
        a = assign(t["masks"], t["boxes"].float(), sizes, cfg.assign, cfg.center_radius)
        fg = (a.instance >= 0).nonzero().flatten()
        labels = t["labels"][a.instance[fg]] if cfg.num_classes > 1 else torch.zeros_like(fg)
        cls_t[i, fg, labels] = 1.0
        pos_img.append(torch.full_like(fg, i))
        pos_loc.append(fg)
        pos_inst.append(a.instance[fg])
        ltrb_t.append(a.ltrb[fg])
        ctr_t.append(a.centerness[fg])
    pos_img, pos_loc, pos_inst = torch.cat(pos_img), torch.cat(pos_loc), torch.cat(pos_inst)
    ltrb_t, ctr_t = torch.cat(ltrb_t), torch.cat(ctr_t)
    num_pos = max(len(pos_loc), 1)
    losses = {
        "loss_cls": sigmoid_focal_loss(
            cls, cls_t, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma, reduction="sum"
        )
        / num_pos
    }
    if len(pos_loc):
        xy = locs[pos_loc]
        pred = box[pos_img, pos_loc]
        as_box = lambda d: torch.cat((xy - d[:, :2], xy + d[:, 2:]), dim=1)  # noqa: E731
        giou = generalized_box_iou_loss(as_box(pred), as_box(ltrb_t), reduction="none")
        losses["loss_box"] = (giou * ctr_t).sum() / ctr_t.sum().clamp(min=1e-6)
        losses["loss_ctr"] = F.binary_cross_entropy_with_logits(ctr[pos_img, pos_loc, 0], ctr_t)
        losses["loss_mask"] = _mask_loss(
            dense, targets, ctrl, locs, lvl_idx, pos_img, pos_loc, pos_inst, cfg, generator
        )
    else:  # keep every term in the graph so DDP/Lightning see the same parameters used
        zero = box.sum() * 0 + ctr.sum() * 0 + ctrl.sum() * 0 + dense["mask_feats"].sum() * 0
        losses.update(loss_box=zero, loss_ctr=zero, loss_mask=zero)
    losses["loss"] = sum(losses.values())
    return losses


def _mask_loss(dense, targets, ctrl, locs, lvl_idx, pos_img, pos_loc, pos_inst, cfg, generator) -> Tensor:
    keep = torch.randperm(len(pos_loc), generator=generator)[: cfg.max_mask_samples].to(pos_loc.device)
    pos_img, pos_loc, pos_inst = pos_img[keep], pos_loc[keep], pos_inst[keep]
    feats = dense["mask_feats"]
    _, _, fh, fw = feats.shape
    soi = torch.tensor([SIZES_OF_INTEREST[lvl] for lvl in LEVELS], device=feats.device)[lvl_idx[pos_loc]]
    losses = []
    for i in pos_img.unique().tolist():
        sel = pos_img == i
        coords = relative_coords(locs[pos_loc[sel]], 0, 0, fh, fw, MASK_STRIDE, soi[sel])
        logits = dynamic_mask_head(feats[i : i + 1], coords, ctrl[i, pos_loc[sel]])
        logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
        gt = targets[i]["masks"][pos_inst[sel]].float()
        gt = F.pad(gt, (0, fw * MASK_STRIDE - gt.shape[-1], 0, fh * MASK_STRIDE - gt.shape[-2]))
        gt = F.avg_pool2d(gt.unsqueeze(1), 2)
        losses.append(dice_loss(logits, gt))
    return torch.cat(losses).mean()


def semantic_loss(logits: Tensor, targets: list[dict]) -> Tensor:
    """BCE of foreground logits ``[N,1,h,w]`` (stride 8) against the share of each cell covered
    by any instance (the union of the masks, a soft target)."""
    fh, fw = logits.shape[-2:]
    fg = []
    for t in targets:
        union = t["masks"].any(0, keepdim=True).float() if len(t["masks"]) else logits.new_zeros(1, 1, 1)
        union = F.pad(union, (0, fw * MASK_STRIDE - union.shape[-1], 0, fh * MASK_STRIDE - union.shape[-2]))
        fg.append(F.avg_pool2d(union[None], MASK_STRIDE)[0])
    return F.binary_cross_entropy_with_logits(logits, torch.stack(fg))


def check_targets(targets: list[dict], batch: int) -> None:
    """Fail before the forward pass, naming the bad target."""
    if len(targets) != batch:
        raise ValueError(f"{len(targets)} targets for a batch of {batch} images")
    for i, t in enumerate(targets):
        _check_target(t, i)


def _check_target(t: dict, i: int) -> None:
    for key in ("masks", "boxes", "labels"):
        if key not in t:
            raise ValueError(f"target {i} lacks {key!r}: expected masks [K,H,W], boxes [K,4], labels [K]")
    k = t["masks"].shape[0]
    if t["masks"].dim() != 3 or t["boxes"].shape != (k, 4) or t["labels"].shape != (k,):
        raise ValueError(
            f"target {i}: masks {tuple(t['masks'].shape)}, boxes {tuple(t['boxes'].shape)}, "
            f"labels {tuple(t['labels'].shape)} do not describe the same K instances"
        )
