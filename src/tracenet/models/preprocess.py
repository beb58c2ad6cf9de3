"""Input checking and pre-processing shared by both modes (so they see the same tensor)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tracenet.models.config import ModelConfig

MIN_SIDE = 8  # smaller images carry no object a stride-8 model can see


@dataclass(frozen=True)
class Geometry:
    """Sizes (height, width) of the input image, the resized image and the padded network input."""

    image: tuple[int, int]
    resized: tuple[int, int]
    padded: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): resized pixels per input pixel."""
        return self.resized[0] / self.image[0], self.resized[1] / self.image[1]

    def to_resized(self, x: float, y: float) -> tuple[float, float]:
        """The centre of input pixel (x, y) (which covers [x, x+1) × [y, y+1)) in resized pixels."""
        sy, sx = self.scale
        return (x + 0.5) * sx, (y + 0.5) * sy

    def box_to_resized(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box (x0, y0, x1, y1) in input pixels, in resized pixels (edges scale as they are)."""
        sy, sx = self.scale
        return box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy


def geometry(image_size: tuple[int, int], cfg: ModelConfig) -> Geometry:
    h, w = (int(v) for v in image_size)
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"image is {w}×{h} pixels; TraceNet needs at least {MIN_SIDE} pixels per side")
    s = min(cfg.min_size / min(h, w), cfg.max_size / max(h, w))
    rh, rw = max(1, round(h * s)), max(1, round(w * s))
    d = cfg.size_divisibility
    return Geometry((h, w), (rh, rw), (math.ceil(rh / d) * d, math.ceil(rw / d) * d))


def to_float_chw(image) -> Tensor:
    """RGB float32 ``[3,H,W]`` in [0, 1] from an H×W×3 uint8 array, a PIL image or a ``[C,H,W]`` tensor.

    Grayscale is replicated to RGB and alpha is dropped; 16-bit and other types are rejected.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            raise TypeError(
                f"PIL image mode {image.mode!r} (16/32-bit) is not supported: convert it to 8-bit RGB first"
            )
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ValueError(f"image array must be H×W, H×W×1, H×W×3 or H×W×4, got shape {image.shape}")
        t = torch.from_numpy(np.array(arr)).permute(2, 0, 1)  # a copy: the input may be read-only
    elif isinstance(image, Tensor):
        t = image[0] if image.dim() == 4 and image.shape[0] == 1 else image
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"image tensor must be [C,H,W] with C in (1, 3, 4), got shape {tuple(image.shape)}"
            )
    else:
        raise TypeError(
            f"image must be a numpy array, a PIL image or a torch tensor, got {type(image).__name__}"
        )
    if t.shape[-2] == 0 or t.shape[-1] == 0:
        raise ValueError(f"image is empty (shape {tuple(t.shape)})")
    if t.dtype == torch.uint8:
        t = t.float() / 255
    elif t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        t = t.float()
        if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise ValueError("float images must be finite and in [0, 1]; pass uint8 for 0..255 values")
    else:
        raise TypeError(
            f"image dtype {t.dtype} is not supported: pass 8-bit RGB (uint8) or float in [0, 1]; "
            "convert 16-bit images first, e.g. (img >> 8).astype(np.uint8)"
        )
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return t[:3].contiguous()


def resize_pad_normalize(image: Tensor, geo: Geometry, cfg: ModelConfig) -> Tensor:
    """``[3,H,W]`` in [0, 1] -> normalized ``[1,3,Hp,Wp]``, zero-padded bottom/right after normalizing."""
    x = image.unsqueeze(0)
    if geo.resized != geo.image:
        x = F.interpolate(x, size=geo.resized, mode="bilinear", align_corners=False, antialias=True)
    x = normalize(x.clamp(0, 1), cfg)
    ph, pw = geo.padded[0] - geo.resized[0], geo.padded[1] - geo.resized[1]
    return F.pad(x, (0, pw, 0, ph))


def normalize(x: Tensor, cfg: ModelConfig) -> Tensor:
    mean = torch.tensor(cfg.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def check_click(click, geo: Geometry) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in click)
    except (TypeError, ValueError) as err:
        raise TypeError(f"click must be (x, y) numbers in input pixels, got {click!r}") from err
    h, w = geo.image
    if not (math.isfinite(x) and math.isfinite(y) and 0 <= x < w and 0 <= y < h):
        raise ValueError(f"tap ({x:g}, {y:g}) is outside the {w}×{h} image (x in [0, {w}), y in [0, {h}))")
    return x, y


def check_box(box, geo: Geometry) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise TypeError(f"box must be (x0, y0, x1, y1) numbers in input pixels, got {box!r}") from err
    h, w = geo.image
    if not all(map(math.isfinite, (x0, y0, x1, y1))) or x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box!r} must be finite with x0 < x1 and y0 < y1")
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise ValueError(f"box {box!r} lies outside the {w}×{h} image")
    return x0, y0, x1, y1
