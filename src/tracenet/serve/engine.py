"""The model behind the demo: loading it, and the only places the server calls it.

One model serves every session; inference runs one request at a time, because the CPU is
small (parallel requests would only slow each other) and RFT memoizes plans per shape.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tracenet.checkpoints import DEFAULT_CHECKPOINT

FALLBACK_BACKBONE = "resnet18"
# Up to this many cores the server runs torch on one thread: a tap is a few hundred small ops
# on crops, and on a 2-core machine two threads made taps 3-30x slower whenever other work
# shared the CPU (docs/serve.md has the measurements).
FEW_CORES = 2


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


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int | None:
    """Torch CPU threads when none are asked for: 1 on a machine with few cores, else None
    (torch's choice, one per core)."""
    return 1 if available_cores() <= FEW_CORES else None


def default_model_options(overrides: list[str] | None = None) -> tuple[dict[str, Any], str]:
    """The model options the train stage builds the default model from (conf/ composed, as
    `experiment=default_cpu` sets them; Hydra `overrides` change them), without pretrained
    weights; and where they come from. Outside a source checkout (no conf/), the resnet18
    of ModelConfig's defaults."""
    from tracenet.config import CONF_DIR

    if not CONF_DIR.is_dir():
        if overrides:
            raise ValueError(
                f"config overrides {overrides} need conf/ (a source checkout); {CONF_DIR} is absent"
            )
        return {"backbone": FALLBACK_BACKBONE}, f"{FALLBACK_BACKBONE} defaults (no {CONF_DIR} to read)"
    from omegaconf import OmegaConf

    from tracenet.config import compose

    options = OmegaConf.to_container(compose(overrides).model, resolve=True)
    options.pop("pretrained", None)  # random initialisation: no download
    changed = f" with {' '.join(overrides)}" if overrides else ""
    return options, f"the default config's model options (conf/{changed})"


def load_engine(checkpoint: str | Path | None = None, default: Path = DEFAULT_CHECKPOINT) -> Engine:
    """The given checkpoint, else the default one, else an untrained model of the default
    configuration (same architecture and preprocessing as the default checkpoint) with a warning.

    A checkpoint that was asked for but is missing is an error (a typo must not silently
    serve random weights); only the default falls back, so the demo always starts.
    """
    from tracenet import TraceNet

    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} not found; pass an existing --checkpoint file")
        model = TraceNet.from_checkpoint(path)
        return Engine(model.eval(), ModelInfo(model.cfg.backbone, str(path), None))
    if default.is_file():
        model = TraceNet.from_checkpoint(default)
        return Engine(model.eval(), ModelInfo(model.cfg.backbone, str(default), None))
    options, origin = default_model_options()
    model = TraceNet.build(**options).eval()
    backbone = model.cfg.backbone
    warning = (
        f"No trained checkpoint at {default}: this is a randomly initialised {backbone} built from {origin} "
        f"(photos resized to {input_size(model.cfg)}), so its masks are meaningless (the costs and the "
        "trace = full equality still hold). Train one with `make demo` (or `dvc repro train`), or pass "
        "--checkpoint PATH."
    )
    return Engine(model, ModelInfo(backbone, "random initialisation", warning))


def input_size(cfg: Any) -> str:
    """The preprocessing a model config applies to photos, in words."""
    if cfg.min_size == cfg.max_size:
        return f"{cfg.max_size} px on the long side"
    return f"{cfg.min_size} px on the short side, at most {cfg.max_size} px on the long side"
