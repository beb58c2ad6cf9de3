"""Several taps on one image in trace mode: one RFT region cache serves them all."""

from __future__ import annotations

import time

import torch

from tracenet.models.gc_pause import no_gc_pause
from tracenet.models.result import SegmentResult


class Session:
    """``with model.session(image) as s: s.segment((x, y))``; later taps reuse computed crops."""

    def __init__(self, model, image) -> None:
        from tracenet.rft import RegionCache

        self.model = model
        t0 = time.perf_counter()
        self.prep = model.prepare(image)
        self._prep_seconds = time.perf_counter() - t0
        self.cache = RegionCache()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.cache = None  # free the crops

    def _run(self, targets: dict) -> tuple[dict, int]:
        from tracenet.rft import trace

        if self.cache is None:
            raise RuntimeError("this session is closed: open a new one with model.session(image)")
        plan = trace(
            self.model.inference_net(),
            input_shape=tuple(self.prep.tensor.shape),
            targets=targets,
            whole_from=self.model.cfg.whole_from,
        )
        out = plan.run(self.prep.tensor, cache=self.cache)
        return out, int(self.cache.last_macs)

    def segment(self, click, box=None) -> SegmentResult:
        t0 = time.perf_counter()
        with no_gc_pause, torch.no_grad():
            r = self.model._tap(self.prep.geo, click, box, run=self._run)
        # The first tap pays for pre-processing, as a single segment() call does.
        r.seconds = time.perf_counter() - t0 + self._prep_seconds
        self._prep_seconds = 0.0
        return r

    def segment_many(self, clicks, boxes=None) -> list[SegmentResult]:
        """Taps on several objects; each reuses every crop the previous ones computed."""
        boxes = [None] * len(clicks) if boxes is None else list(boxes)
        if len(boxes) != len(clicks):
            raise ValueError(f"got {len(clicks)} clicks but {len(boxes)} boxes")
        return [self.segment(c, b) for c, b in zip(clicks, boxes, strict=True)]
