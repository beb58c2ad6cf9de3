"""Item transforms (resize by short/max side, horizontal flip, color jitter) on
torchvision.transforms.v2, so masks and taps follow the image geometrically.

Masks are resampled nearest-neighbour (tv_tensors.Mask); boxes are recomputed from the
transformed masks (always tight, never a stale scaled box); instances that vanish (a thin
mask can at a small scale) are dropped with their labels and ids. Optional ``taps``
(float ``[T,2]`` x, y pixels, with ``tap_instance`` int64 ``[T]`` indexing ``masks``) go
through as tv_tensors.KeyPoints; a tap that resampling moved off its mask snaps to the
nearest pixel of that mask, and taps of dropped instances are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from tracenet.data.coco import tight_boxes


def _snap(taps: torch.Tensor, owners: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Round taps to pixels, moving each one that is off its mask to that mask's nearest pixel."""
    h, w = masks.shape[-2:]
    xy = taps.round().long()
    xy[:, 0].clamp_(0, w - 1)
    xy[:, 1].clamp_(0, h - 1)
    for t in range(len(xy)):
        mask = masks[owners[t]]
        if not mask[xy[t, 1], xy[t, 0]]:
            ys, xs = torch.nonzero(mask, as_tuple=True)
            nearest = torch.argmin((xs - taps[t, 0]) ** 2 + (ys - taps[t, 1]) ** 2)
            xy[t] = torch.stack((xs[nearest], ys[nearest]))
    return xy


class InstanceTransform:
    """``short_side``: one size or a list drawn from at random per item (multi-scale
    training); ``max_side`` caps the longer side; ``flip``: probability of a horizontal flip;
    ``jitter``: brightness/contrast/saturation strength of the color jitter (0 = none)."""

    def __init__(
        self,
        short_side: int | Sequence[int],
        max_side: int | None = None,
        flip: float = 0.0,
        jitter: float = 0.0,
    ) -> None:
        sizes = [short_side] if isinstance(short_side, int) else [int(s) for s in short_side]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"short_side must be a positive size or a list of them, got {short_side!r}")
        if max_side is not None and max_side < max(sizes):
            raise ValueError(f"max_side ({max_side}) must be at least the largest short side ({max(sizes)})")
        if not 0.0 <= flip <= 1.0:
            raise ValueError(f"flip is a probability in [0, 1], got {flip}")
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {jitter}")
        steps: list[v2.Transform] = [v2.RandomShortestSize(min_size=sizes, max_size=max_side, antialias=True)]
        if flip > 0:
            steps.append(v2.RandomHorizontalFlip(p=flip))
        if jitter > 0:
            steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
        self.pipeline = v2.Compose(steps)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        h, w = item["image"].shape[-2:]
        inputs = {"image": tv_tensors.Image(item["image"]), "masks": tv_tensors.Mask(item["masks"])}
        if "taps" in item:
            inputs["taps"] = tv_tensors.KeyPoints(item["taps"].float(), canvas_size=(h, w))
        out = self.pipeline(inputs)
        masks = out["masks"].as_subclass(torch.Tensor).bool()
        keep = masks.flatten(1).any(dim=1)
        result = dict(item)
        result["image"] = out["image"].as_subclass(torch.Tensor)
        result["masks"] = masks[keep]
        result["boxes"] = tight_boxes(result["masks"])
        result["labels"] = item["labels"][keep]
        result["ann_ids"] = [a for a, k in zip(item["ann_ids"], keep.tolist(), strict=True) if k]
        if "taps" in item:
            owners = item["tap_instance"].long()
            alive = keep[owners]
            new_index = torch.cumsum(keep.long(), 0) - 1
            owners = new_index[owners[alive]]
            taps = out["taps"].as_subclass(torch.Tensor)[alive]
            result["taps"] = _snap(taps, owners, result["masks"])
            result["tap_instance"] = owners
        return result
