"""Per-layer regions of a plan drawn over the input image (the paper's Figures 2–3): each
traced layer's region, mapped to input pixels by that layer's stride, as a rectangle coloured
from early (blue) to late (red) layers; the input region in white; the targets in yellow."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from tracenet.atomic import atomic_file
from tracenet.rft.boxes import Box
from tracenet.rft.planner import TracePlan

_LAYER_KINDS = ("conv2d", "max_pool2d", "avg_pool2d", "interpolate", "pad", "fallback")


def _canvas(image: object, height: int, width: int) -> Image.Image:
    if image is None:
        return Image.new("RGB", (width, height), (96, 96, 96))
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"))
    elif isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        t = t[0] if t.dim() == 4 else t
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"image tensor must be [3, H, W] or [1, 3, H, W], got {tuple(image.shape)}")
        t = (t - t.min()) / (t.max() - t.min()).clamp(min=1e-12)
        array = (t.expand(3, -1, -1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    elif isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3:
        array = image.astype(np.uint8)
    else:
        raise TypeError(
            f"image must be None, a PIL image, a [3,H,W] tensor or an HxWx3 array, got {type(image)}"
        )
    if array.shape[:2] != (height, width):
        raise ValueError(
            f"image is {array.shape[0]}x{array.shape[1]} but the plan's input is {height}x{width}"
        )
    return Image.fromarray(array, "RGB")


def layer_boxes(plan: TracePlan) -> list[tuple[str, Box]]:
    """(node name, region in input pixels) for every traced layer, input to output order,
    without repeats of the same rectangle."""
    cap = plan.capture
    height, width = plan.input_shape[2:]
    seen, out = set(), []
    for node in cap.order:
        box = plan.regions.get(node.name)
        if box is None or cap.ops[node].kind not in _LAYER_KINDS:
            continue
        h, w = cap.facts.hw(node)
        sy, sx = height / h, width / w
        mapped = (round(box[0] * sy), round(box[1] * sy), round(box[2] * sx), round(box[3] * sx))
        if mapped not in seen:
            seen.add(mapped)
            out.append((node.name, mapped))
    return out


def _rect(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int], width: int) -> None:
    draw.rectangle((box[2], box[0], box[3] - 1, box[1] - 1), outline=colour, width=width)


def draw_regions(plan: TracePlan, path: str | os.PathLike, image: object = None) -> Path:
    """Writes the PNG atomically to `path` and returns it."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"draw_regions writes PNG; give a path ending in .png, got {path}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist")
    height, width = plan.input_shape[2:]
    canvas = _canvas(image, height, width)
    draw = ImageDraw.Draw(canvas)
    layers = layer_boxes(plan)
    for i, (_, box) in enumerate(layers):
        t = i / max(1, len(layers) - 1)
        _rect(draw, box, (int(255 * t), 64, int(255 * (1 - t))), 1)
    _rect(draw, plan.input_region, (255, 255, 255), 2)
    for key, box in plan.targets.items():
        h, w = plan.capture.facts.shapes[plan.capture.outputs[key]][-2:]
        sy, sx = height / h, width / w
        _rect(
            draw,
            (round(box[0] * sy), round(box[1] * sy), round(box[2] * sx), round(box[3] * sx)),
            (255, 220, 0),
            2,
        )
    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
