"""Per-instance evaluation results: the one record every breakdown and writer reads.

A record is small and picklable so that evaluation can run sharded (DataLoader workers,
DDP ranks) and the shards merge by concatenation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tap:
    """One simulated tap on an instance and the IoU its mask reached."""

    x: int
    y: int
    band: int
    iou: float


@dataclass(frozen=True)
class InstanceResult:
    """Everything measured on one ground-truth instance.

    ``pixel_ious[j]`` is the IoU reached by a tap at any of the ``pixel_counts[j]`` mask
    pixels of group j (pixels whose taps give the same prediction); the counts add up to
    ``area``, so mTA needs no per-pixel storage.
    """

    image_id: int
    ann_id: int
    category_id: int
    area: int
    taps: tuple[Tap, ...]
    center_iou: float
    pixel_ious: np.ndarray
    pixel_counts: np.ndarray

    def __post_init__(self) -> None:
        if not self.taps:
            raise ValueError(f"instance {self.ann_id}: no taps (its mask is probably empty)")
        if len(self.pixel_ious) != len(self.pixel_counts):
            raise ValueError(f"instance {self.ann_id}: pixel_ious and pixel_counts differ in length")
        if int(np.sum(self.pixel_counts)) != self.area:
            raise ValueError(
                f"instance {self.ann_id}: pixel groups cover {int(np.sum(self.pixel_counts))} pixels, "
                f"the mask has {self.area}"
            )

    @property
    def tap_ious(self) -> list[float]:
        return [t.iou for t in self.taps]


def merge(shards: Iterable[Sequence[InstanceResult]]) -> list[InstanceResult]:
    """Concatenate per-worker/per-rank results in a deterministic order; duplicates are an error
    (a sampler that pads the last batch would otherwise count instances twice)."""
    merged: dict[int, InstanceResult] = {}
    for shard in shards:
        for rec in shard:
            if rec.ann_id in merged:
                raise ValueError(f"instance {rec.ann_id} was evaluated twice; shards must not overlap")
            merged[rec.ann_id] = rec
    return [merged[k] for k in sorted(merged)]
