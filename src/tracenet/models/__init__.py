"""TraceNet/FullNet: a CondInst-style one-tap segmentation model with RFT inference."""

from tracenet.models.config import ModelConfig
from tracenet.models.result import SegmentResult

__all__ = ["ModelConfig", "SegmentResult"]
