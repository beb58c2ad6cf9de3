"""What the demo accepts from a browser: image bytes and taps, checked before any model work.

Everything a request carries is data, never a path: uploads are decoded from memory, and a
tap is two numbers checked against the image's size.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats a phone or browser produces; anything else (TIFF, GIF, SVG, ...) is refused by content,
# whatever the file name or content type claims.
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I"}


class InputError(ValueError):
    """A request the user can fix; `status` is the HTTP code the server answers with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Upload and image-size limits (defaults fit phone photos and a CPU-sized model)."""

    max_bytes: int = 10 * 2**20
    min_side: int = 32
    max_side: int = 4096

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")
        if not 1 <= self.min_side <= self.max_side:
            raise ValueError(f"need 1 <= min_side <= max_side, got {self.min_side} and {self.max_side}")

    def check_size(self, n_bytes: int) -> None:
        if n_bytes == 0:
            raise InputError("the upload is empty; choose an image file", status=400)
        if n_bytes > self.max_bytes:
            raise InputError(
                f"the file is {n_bytes / 2**20:.1f} MiB, over the {self.max_bytes / 2**20:.0f} MiB limit; "
                "upload a smaller or more compressed image",
                status=413,
            )

    def check_dimensions(self, width: int, height: int) -> None:
        if min(width, height) < self.min_side or max(width, height) > self.max_side:
            raise InputError(
                f"the image is {width}×{height} pixels; each side must be between {self.min_side} and "
                f"{self.max_side} pixels"
            )


def decode_image(data: bytes, limits: Limits) -> np.ndarray:
    """Bytes of a PNG/JPEG/WebP file -> H×W×3 uint8 RGB, upright as a browser shows it.

    The size is checked from the header before the pixels are decoded, so a small file that
    claims a huge image (a decompression bomb) is refused without allocating it.
    """
    limits.check_size(len(data))
    try:
        image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except Image.DecompressionBombError:
        raise InputError(
            f"the image header claims more than {Image.MAX_IMAGE_PIXELS:,} pixels; each side must be at most "
            f"{limits.max_side} pixels"
        ) from None
    except UnidentifiedImageError:
        raise InputError(
            "the file is not a PNG, JPEG or WebP image; upload a photo in one of those formats", status=415
        ) from None
    with image:
        limits.check_dimensions(*image.size)
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(
                f"the {image.format} file is damaged or truncated ({err}); upload it again"
            ) from None
        return _to_rgb(image)


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Grey, palette, alpha and 16-bit images become 8-bit RGB (transparency over white)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(image, dtype=np.float64)
        grey = np.clip(grey / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def check_tap(x: object, y: object, width: int, height: int) -> tuple[int, int]:
    """A tap in image pixels -> the (column, row) of the pixel it falls in, or a clear refusal."""
    for name, value in (("x", x), ("y", y)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InputError(f"tap {name} must be a finite number of image pixels, got {value!r}")
    if not (0 <= x < width and 0 <= y < height):  # type: ignore[operator]
        raise InputError(
            f"the tap ({x:g}, {y:g}) is outside the {width}×{height} image; tap on the picture itself"
        )
    return math.floor(x), math.floor(y)  # type: ignore[arg-type]
