"""What `tracenet serve` accepts: uploads decoded from memory, taps, and the session store."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from tracenet.serve.limits import InputError, Limits, check_tap, decode_image
from tracenet.serve.sessions import SessionStore


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def rgb(width: int = 60, height: int = 40) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_accepted_formats_decode_to_rgb_uint8(fmt: str) -> None:
    out = decode_image(encode(rgb(), fmt), Limits())
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8


def test_png_decodes_exactly() -> None:
    image = rgb()
    assert np.array_equal(decode_image(encode(image, "PNG"), Limits()), np.asarray(image))


def test_grey_palette_alpha_and_16_bit_become_rgb() -> None:
    grey = Image.fromarray(np.arange(40 * 60, dtype=np.uint32).reshape(40, 60).astype(np.uint8) % 251, "L")
    out = decode_image(encode(grey, "PNG"), Limits())
    assert np.array_equal(out[..., 0], np.asarray(grey)) and np.array_equal(out[..., 0], out[..., 2])

    clear = Image.new("RGBA", (40, 40), (10, 20, 30, 0))  # fully transparent: shown over white
    assert (decode_image(encode(clear, "PNG"), Limits()) == 255).all()

    palette = rgb().convert("P")
    assert decode_image(encode(palette, "PNG"), Limits()).shape == (40, 60, 3)

    deep = np.zeros((40, 60), dtype=np.uint16)
    deep[:, 30:] = 65535
    out = decode_image(encode(Image.fromarray(deep), "PNG"), Limits())
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 59].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied_as_browsers_show_it() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(rgb(60, 40), "JPEG", exif=exif)
    assert decode_image(data, Limits()).shape == (60, 40, 3)


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"GIF89a" + b"\0" * 100, 415, "not a PNG, JPEG or WebP"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "not a PNG, JPEG or WebP"),
        (encode(rgb(16, 16), "PNG"), 422, "between 32 and 4096"),
        (encode(Image.new("L", (5000, 40)), "PNG"), 422, "5000×40"),
        (encode(rgb(), "PNG")[:200], 422, "damaged or truncated"),
    ],
)
def test_bad_uploads_are_refused_with_a_clear_message(data: bytes, status: int, words: str) -> None:
    with pytest.raises(InputError, match=words) as err:
        decode_image(data, Limits())
    assert err.value.status == status


def test_decompression_bomb_is_refused_from_its_header() -> None:
    """A tiny PNG whose header claims 40000×40000 pixels is refused before any pixel is decoded."""
    import struct
    import zlib

    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", 40_000, 40_000)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    with pytest.raises(InputError, match="at most 4096 pixels") as err:
        decode_image(bytes(data), Limits())
    assert err.value.status == 422 and len(data) < 100


def test_tiff_is_refused_by_content_whatever_it_claims() -> None:
    with pytest.raises(InputError) as err:
        decode_image(encode(rgb(), "TIFF"), Limits())
    assert err.value.status == 415


def test_upload_over_the_byte_limit_is_refused() -> None:
    with pytest.raises(InputError, match="over the 1 MiB limit") as err:
        decode_image(b"\x89PNG" + b"\0" * 2**20, Limits(max_bytes=2**20))
    assert err.value.status == 413


def test_limits_reject_impossible_settings() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Limits(max_bytes=0)
    with pytest.raises(ValueError, match="min_side"):
        Limits(min_side=100, max_side=50)


def test_tap_inside_gives_its_pixel() -> None:
    assert check_tap(0, 0, 60, 40) == (0, 0)
    assert check_tap(59.99, 39.5, 60, 40) == (59, 39)


@pytest.mark.parametrize(
    ("x", "y", "words"),
    [
        (60, 10, "outside the 60×40 image"),
        (-0.5, 10, "outside"),
        (10, 40, "outside"),
        (math.nan, 1, "finite number"),
        (math.inf, 1, "finite number"),
        ("3", 1, "finite number"),
        (True, 1, "finite number"),
        (1, None, "tap y"),
    ],
)
def test_bad_taps_are_refused(x: object, y: object, words: str) -> None:
    with pytest.raises(InputError, match=words) as err:
        check_tap(x, y, 60, 40)
    assert err.value.status == 422


class Recorder:
    """A context manager that records being closed, standing in for a model session."""

    def __init__(self) -> None:
        self.closed = False

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True


def test_store_evicts_and_closes_the_least_recently_used_session() -> None:
    store = SessionStore(max_sessions=2)
    image = np.zeros((40, 60, 3), np.uint8)
    a, b = store.open(image, Recorder()), store.open(image, Recorder())
    assert a.id != b.id and len(a.id) >= 20
    store.get(a.id)  # a is now the most recently used
    c = store.open(image, Recorder())
    assert len(store) == 2 and b.closed and b.model_session.closed and not a.model_session.closed
    with pytest.raises(InputError, match="expired") as err:
        store.get(b.id)
    assert err.value.status == 404
    with pytest.raises(InputError, match="expired"), b.using():
        pass
    with c.using() as held:
        assert held is c
    store.close()
    assert a.model_session.closed and c.model_session.closed


def test_store_needs_room_for_one_session() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SessionStore(max_sessions=0)
