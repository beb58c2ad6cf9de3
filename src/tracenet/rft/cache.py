"""RegionCache: exact slices of node outputs already computed for one image.

Policy: per graph node, one slice (its box and tensor). A run reuses it when its box covers
the region the run needs (the node is then sliced, not recomputed, and nothing upstream of
it is computed for its sake). A newly computed slice replaces the cached one when its area
is at least as large (a whole tensor counts as largest); otherwise the cached one is kept.
Slices never merge: the union of two boxes would need values neither run computed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from tracenet.rft.boxes import Box, area, contains


class RegionCache:
    """One per image: pass it to every `plan.run(x, cache=...)` on that image."""

    def __init__(self) -> None:
        self.slices: dict[fx.Node, tuple[Box | None, Any]] = {}
        self.last_macs = 0
        self._input: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.slices)

    def bind_input(self, x: torch.Tensor) -> None:
        """Refuses an input other than the one the cached slices were computed from."""
        if self._input is None:
            self._input = x
            return
        same = x is self._input or (
            x.shape == self._input.shape and x.dtype == self._input.dtype and torch.equal(x, self._input)
        )
        if not same:
            raise ValueError(
                "this RegionCache holds slices computed from a different input; use one RegionCache per image"
            )

    def lookup(self, node: fx.Node, box: Box | None) -> Box | bool | None:
        """The cached box covering `box` (None for a whole tensor), or False on a miss."""
        entry = self.slices.get(node)
        if entry is None:
            return False
        have = entry[0]
        if have is None or (box is not None and contains(have, box)):
            return have
        return False

    def value(self, node: fx.Node) -> Any:
        return self.slices[node][1]

    def store(self, node: fx.Node, box: Box | None, value: Any) -> None:
        old = self.slices.get(node)
        if old is None or box is None or (old[0] is not None and area(box) >= area(old[0])):
            self.slices[node] = (box, value)
