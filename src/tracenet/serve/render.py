"""Model results as the page needs them: JSON figures and the mask as a transparent PNG."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

MASK_RGBA = (30, 144, 255, 150)  # the overlay colour; the photo shows through


def mask_png(mask: np.ndarray) -> str:
    """An H×W bool mask as a `data:` URL of an RGBA PNG, coloured where the mask is set."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = MASK_RGBA
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def photo_jpeg(image: np.ndarray) -> bytes:
    """The session's image exactly as the model sees it (upright, RGB), for the page to show."""
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def figures(result: Any) -> dict[str, Any]:
    """The numbers a tap reports; MACs are multiply-accumulates (one multiply-add = 1)."""
    return {
        "score": float(result.score),
        "level": int(result.level),
        "box": [round(float(v), 1) for v in result.box],
        "macs": int(result.macs),
        "seconds": float(result.seconds),
        "mask_pixels": int(np.count_nonzero(result.mask)),
    }


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks; two empty masks agree (1.0)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)
