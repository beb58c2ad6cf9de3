"""Reading user images and writing masks/overlays (atomically) for the CLI and the server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tracenet.atomic import atomic_file

OVERLAY_COLOR = np.array([30, 144, 255], dtype=np.float32)


def read_rgb(path: str | Path) -> np.ndarray:
    """H×W×3 uint8; raises ValueError naming the file when it is missing or not an image."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise ValueError(f"{path}: {im.mode} (16/32-bit) images are not supported; save it as 8-bit")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path} is not a readable image ({err})") from err


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with the mask tinted; the tap's object stands out, the rest stays visible."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * OVERLAY_COLOR
    return out.round().astype(np.uint8)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a PNG atomically (a temp file in the same folder, then rename)."""
    path = Path(path)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    with atomic_file(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path
