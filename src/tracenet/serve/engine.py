"""The model behind the demo: loading it, and the only places the server calls it.

One model serves every session; inference runs one request at a time, because the CPU is
small (parallel requests would only slow each other) and RFT memoizes plans per shape.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tracenet.checkpoints import DEFAULT_CHECKPOINT

FALLBACK_BACKBONE = "resnet18"


@dataclass(frozen=True)
class ModelInfo:
    """What the page says about the model it talks to."""

    backbone: str
    source: str
    warning: str | None


class Engine:
    """Serializes model calls; `open_session`, `segment` and `full` are the model's call sites."""

    def __init__(self, model: Any, info: ModelInfo) -> None:
        self.model = model
        self.info = info
        self._lock = threading.Lock()

    def open_session(self, image: np.ndarray) -> Any:
        """The model's session for one image (a context manager holding its region cache)."""
        with self._lock:
            return self.model.session(image)

    def prepare(self, model_session: Any, width: int, height: int) -> dict[str, float]:
        """A tap at the centre, run when the image is opened and its answer dropped: it fills
        the region cache with what every tap needs whole (the backbone, since P7's heads see
        the whole image), so the user's taps only compute their own windows."""
        with self._lock:
            result = model_session.segment((width // 2, height // 2))
        return {"macs": int(result.macs), "seconds": float(result.seconds)}

    def segment(self, model_session: Any, click: tuple[int, int]) -> tuple[Any, list[dict[str, Any]]]:
        """Trace mode through the session (later taps reuse the crops earlier ones computed),
        and the per-stage regions the tap's RFT plans cover."""
        from tracenet.serve.regions import tap_regions

        with self._lock:
            result = model_session.segment(click)
            return result, tap_regions(self.model, model_session, click, result)

    def full(self, image: np.ndarray, click: tuple[int, int]) -> Any:
        """The dense forward on the whole image (FullNet), for the side-by-side figures."""
        with self._lock:
            return self.model.segment(image, click=click, mode="full")


def load_engine(checkpoint: str | Path | None = None, default: Path = DEFAULT_CHECKPOINT) -> Engine:
    """The given checkpoint, else the default one, else a random resnet18 with a warning.

    A checkpoint that was asked for but is missing is an error (a typo must not silently
    serve random weights); only the default falls back, so the demo always starts.
    """
    import torch

    from tracenet import TraceNet

    torch.set_grad_enabled(False)
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} not found; pass an existing --checkpoint file")
        model = TraceNet.from_checkpoint(path)
        return Engine(model.eval(), ModelInfo(model.cfg.backbone, str(path), None))
    if default.is_file():
        model = TraceNet.from_checkpoint(default)
        return Engine(model.eval(), ModelInfo(model.cfg.backbone, str(default), None))
    model = TraceNet.build(backbone=FALLBACK_BACKBONE).eval()
    warning = (
        f"No trained checkpoint at {default}: this is a randomly initialised {FALLBACK_BACKBONE}, so its "
        "masks are meaningless (the costs and the trace = full equality still hold). Train one with "
        "`make demo` (or `dvc repro train`), or pass --checkpoint PATH."
    )
    return Engine(model, ModelInfo(FALLBACK_BACKBONE, "random initialisation", warning))
