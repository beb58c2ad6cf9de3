"""The embedded default dataset: textured shapes over textured backgrounds, in COCO format.

Generated, never downloaded, so `dvc repro` and the CPU training run anywhere. Learnable but
not trivial: six categories that differ by shape only (colors and textures are drawn
independently of the category), objects from small to large, overlapping (later objects
occlude earlier ones, and the annotation is the visible part), backgrounds with the same
kinds of textures as the objects, plus pixel noise. Every image is drawn from its own
generator seeded by (seed, split, index), so the output does not depend on the number of
worker processes. Masks are stored as COCO RLE (pycocotools).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from tracenet.atomic import atomic_dir

CATEGORIES = ("ellipse", "ring", "star", "polygon", "bar", "crescent")
SPLITS = ("train", "val", "test")
TEXTURES = ("textured", "flat")


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; the defaults suit CPU training (conf/data/synthetic.yaml)."""

    seed: int = 0
    height: int = 192
    width: int = 192
    min_objects: int = 2
    max_objects: int = 6
    min_scale: float = 0.08  # object diameter / shorter image side
    max_scale: float = 0.6
    min_visible: float = 0.3  # an occluded object keeps at least this share of its area
    min_area: int = 30  # pixels
    # "flat": objects in one color (plus the pixel noise) over the textured backgrounds, so the
    # shape shows in color alone: what a from-scratch CPU model can learn in minutes.
    object_texture: str = "textured"
    background_texture: str = "textured"  # "flat": one color, as the classic shapes toy sets

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise ValueError(f"image size must be at least 32×32, got {self.height}×{self.width}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"objects per image: need 1 <= min ({self.min_objects}) <= max ({self.max_objects})"
            )
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError(f"scales: need 0 < min ({self.min_scale}) <= max ({self.max_scale}) <= 1")
        if not 0 <= self.min_visible <= 1:
            raise ValueError(f"min_visible is a fraction in [0, 1], got {self.min_visible}")
        for name in ("object_texture", "background_texture"):
            if getattr(self, name) not in TEXTURES:
                raise ValueError(f"{name} must be one of {TEXTURES}, got {getattr(self, name)!r}")


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Texture over the pixel grid (yy, xx) as float32 RGB in [0, 255]: stripes, checkers or
    smooth blobs in two random colors."""
    c1, c2 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 24)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) * np.float32(2 * math.pi / period)
        t = 0.5 + 0.5 * np.sin(phase)
    elif kind == 1:
        p = rng.uniform(3, 16)
        t = ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float32)
    else:
        h, w = yy.shape[0], xx.shape[1]
        cells = rng.random((h // 16 + 2, w // 16 + 2), dtype=np.float32)
        t = np.asarray(Image.fromarray(cells).resize((w, h), Image.BILINEAR))
    t = np.broadcast_to(t, (yy.shape[0], xx.shape[1]))[..., None]
    return c1 + (c2 - c1) * t


def _polygon_mask(h: int, w: int, points: np.ndarray) -> np.ndarray:
    canvas = Image.new("1", (w, h), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def _shape(rng: np.random.Generator, kind: str, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Mask of one object of radius ``r`` centred at (cy, cx) on an h × w window."""
    theta = rng.uniform(0, 2 * math.pi)
    if kind in ("ellipse", "ring", "crescent"):
        yy = np.arange(h, dtype=np.float32)[:, None] - np.float32(cy)
        xx = np.arange(w, dtype=np.float32)[None, :] - np.float32(cx)
        c, s = np.float32(math.cos(theta)), np.float32(math.sin(theta))
        u, v = xx * c + yy * s, yy * c - xx * s
        aspect = rng.uniform(0.45, 1.0) if kind == "ellipse" else rng.uniform(0.8, 1.0)
        outer = (u / r) ** 2 + (v / (r * aspect)) ** 2 <= 1
        if kind == "ellipse":
            return outer
        if kind == "ring":
            k = rng.uniform(0.45, 0.65)
            return outer & ((u / (k * r)) ** 2 + (v / (k * r * aspect)) ** 2 > 1)
        shift = rng.uniform(0.35, 0.6) * r  # crescent: a disk bitten by a shifted disk
        return outer & ((u - shift) ** 2 + v**2 > (0.85 * r) ** 2)
    if kind == "star":
        n = int(rng.integers(5, 8))
        radii = np.tile([r, r * rng.uniform(0.35, 0.55)], n)
        angles = theta + np.arange(2 * n) * math.pi / n
    elif kind == "polygon":
        n = int(rng.integers(5, 9))
        angles = theta + np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = r * rng.uniform(0.65, 1.0, n)
    elif kind == "bar":
        half = r * rng.uniform(0.15, 0.3)
        corners = np.array([[-r, -half], [r, -half], [r, half], [-r, half]])
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        return _polygon_mask(h, w, corners @ rot.T + [cx, cy])
    else:
        raise ValueError(f"unknown shape kind {kind!r}; known: {CATEGORIES}")
    return _polygon_mask(h, w, np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1))


def render(
    spec: SyntheticSpec, split_index: int, index: int
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image (H×W×3 uint8) and its visible instances as (category index, mask).

    Each object is drawn and textured inside its own window (the box around its radius)
    only, which keeps small objects cheap."""
    rng = np.random.default_rng([spec.seed, split_index, index])
    h, w = spec.height, spec.width
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    image = _texture(rng, yy, xx)
    if spec.background_texture == "flat":
        image[:] = image.mean(axis=(0, 1))  # same draws either way: one setting leaves the rest alike
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    objects = []
    short = min(h, w)
    for _ in range(n):
        kind = int(rng.integers(len(CATEGORIES)))
        r = 0.5 * short * math.exp(rng.uniform(math.log(spec.min_scale), math.log(spec.max_scale)))
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = max(0, int(cy - r) - 1), min(h, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r) - 1), min(w, int(cx + r) + 2)
        local = _shape(rng, CATEGORIES[kind], y1 - y0, x1 - x0, cy - y0, cx - x0, r)
        if local.sum() < spec.min_area:
            continue
        window = image[y0:y1, x0:x1]
        if spec.object_texture == "flat":
            window[local] = rng.uniform(0, 255, 3).astype(np.float32)
        else:
            window[local] = _texture(rng, yy[y0:y1], xx[:, x0:x1])[local]
        mask = np.zeros((h, w), bool)
        mask[y0:y1, x0:x1] = local
        objects.append((kind, mask))
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(6)
    visible, covered = [], np.zeros((h, w), bool)
    for kind, mask in reversed(objects):  # later objects are on top
        seen = mask & ~covered
        covered |= mask
        area = int(seen.sum())
        if area >= spec.min_area and area >= spec.min_visible * mask.sum():
            visible.append((kind, seen))
    return np.clip(image, 0, 255).astype(np.uint8), visible[::-1]


def _write_image(args: tuple[SyntheticSpec, int, int, str]) -> list[dict[str, Any]]:
    """Render and save one image; its annotations without ids (assigned in order later)."""
    spec, split_index, index, folder = args
    image, instances = render(spec, split_index, index)
    Image.fromarray(image).save(Path(folder) / f"{index:06d}.jpg", quality=92)
    anns = []
    for kind, mask in instances:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        anns.append(
            {
                "category_id": kind + 1,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": int(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    return anns


def generate_split(
    spec: SyntheticSpec, split: str, count: int, out_dir: str | Path, workers: int = 1
) -> Path:
    """Write ``out_dir/{images/, annotations.json}`` for one split, atomically (the folder
    appears complete or not at all). Returns the annotation file."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if count < 1:
        raise ValueError(f"count for split {split!r} must be >= 1, got {count}")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        images = tmp / "images"
        images.mkdir()
        jobs = [(spec, SPLITS.index(split), i, str(images)) for i in range(count)]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                per_image = list(pool.map(_write_image, jobs, chunksize=max(1, count // (8 * workers))))
        else:
            per_image = [_write_image(job) for job in jobs]
        annotations = []
        for image_id, anns in enumerate(per_image, start=1):
            for ann in anns:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
        coco = {
            "info": {
                "description": f"TraceNet synthetic shapes, split {split}",
                "seed": spec.seed,
                "spec": asdict(spec),
            },
            "licenses": [],
            "categories": [
                {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORIES)
            ],
            "images": [
                {"id": i + 1, "file_name": f"{i:06d}.jpg", "height": spec.height, "width": spec.width}
                for i in range(count)
            ],
            "annotations": annotations,
        }
        (tmp / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
    return out_dir / "annotations.json"


def _size(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"image_size must be one size or [height, width], got {value!r}")
    return int(value[0]), int(value[1])


def spec_from_config(cfg: Mapping[str, Any]) -> SyntheticSpec:
    """SyntheticSpec from the ``data.synthetic`` config block."""
    h, w = _size(cfg.get("image_size", 192))
    lo, hi = cfg.get("objects_per_image", (2, 6))
    smin, smax = cfg.get("scale", (0.08, 0.6))
    return SyntheticSpec(
        seed=int(cfg.get("seed", 0)),
        height=h,
        width=w,
        min_objects=int(lo),
        max_objects=int(hi),
        min_scale=float(smin),
        max_scale=float(smax),
        min_visible=float(cfg.get("min_visible", 0.3)),
        min_area=int(cfg.get("min_area", 30)),
        object_texture=str(cfg.get("object_texture", "textured")),
        background_texture=str(cfg.get("background_texture", "textured")),
    )
