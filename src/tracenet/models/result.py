"""What one tap returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass
class SegmentResult:
    """One tap's answer; ``macs`` counts multiply-accumulates (one multiply-add = 1)."""

    mask: np.ndarray  # H×W bool in input pixels
    score: float  # sqrt(sigmoid(cls) · sigmoid(ctr)) at the tap on the chosen level
    box: tuple[float, float, float, float]  # predicted box at the tap on that level, xyxy input pixels
    level: int  # FPN level 3..7 chosen at the tap
    region: tuple[int, int, int, int]  # mask region (y0, y1, x0, x1) in stride-8 cells
    heads: dict[int, dict[str, Tensor]]  # raw head outputs at the tap's cell, per level
    macs: int = 0
    seconds: float = 0.0
    mode: str = "full"
