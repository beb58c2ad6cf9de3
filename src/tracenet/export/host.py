"""Host code around an exported tap network: fixed-size input, tap cells, mask decoding.

The artifact sees a square ``S×S`` input: the image resized so its long side is ``S``
(``min_size = max_size = S``), normalized, then zero-padded bottom/right to ``S×S``. The
same pre-processing and decoding functions as the model (``tracenet.models``) are used,
so an artifact's mask equals the PyTorch model's mask on the same ``S×S`` tensor, as long as
the mask region lies inside the artifact's mask window (``TapMask.clipped`` is False).
Otherwise the mask is the model's over the region clipped to the window (``clip_region``);
``tracenet.export.fallback.ExactTap`` then recomputes it with an exact artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from tracenet.models import decode
from tracenet.models.config import LEVELS, MASK_STRIDE, ModelConfig
from tracenet.models.preprocess import (
    Geometry,
    check_box,
    check_click,
    geometry,
    resize_pad_normalize,
    to_float_chw,
)


@dataclass(frozen=True)
class FixedInput:
    """One image as the artifact sees it: geometry (padded = S×S) and the network input."""

    geo: Geometry
    image: np.ndarray  # float32 [1,3,S,S], normalized


@dataclass(frozen=True)
class TapMask:
    mask: np.ndarray  # H×W bool in input pixels
    score: float
    level: int
    region: tuple[int, int, int, int]  # the model's mask region (y0, y1, x0, x1), stride-8 cells
    window: tuple[int, int, int, int]  # the artifact's mask window, same form
    clipped: bool  # the region exceeds the window: the mask covers region ∩ window only
    fallback: bool = False  # computed by the exact artifact instead (tracenet.export.fallback)


def fixed_config(cfg: ModelConfig, size: int) -> ModelConfig:
    """The model's options with the resize rule of a fixed ``size×size`` artifact."""
    return replace(cfg, min_size=size, max_size=size)


def prepare(image, cfg: ModelConfig, size: int) -> FixedInput:
    """Resize (long side ``size``), normalize and zero-pad an image to the artifact's input."""
    fixed = fixed_config(cfg, size)
    chw = to_float_chw(image)
    geo = geometry(tuple(chw.shape[-2:]), fixed)
    x = resize_pad_normalize(chw, geo, fixed)
    x = F.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2]))
    return FixedInput(Geometry(geo.image, geo.resized, (size, size)), x.numpy().astype(np.float32))


def tap_inputs(fi: FixedInput, click, box=None) -> dict[str, np.ndarray]:
    """The artifact's inputs for one tap (``tracenet.export.static``): image, the tap's cells,
    the prompt box in network-input pixels (zeros: use the predicted box) and the image extent."""
    geo = fi.geo
    prompt = np.zeros(4, dtype=np.float32)
    if box is not None:
        prompt = np.array(geo.box_to_resized(check_box(box, geo)), dtype=np.float32)
    extent = np.array([-(-v // MASK_STRIDE) for v in geo.resized], dtype=np.int32)
    return {"image": fi.image, "cells": tap_cells(geo, click), "prompt": prompt, "extent": extent}


def tap_cells(geo: Geometry, click) -> np.ndarray:
    """int32 ``[5,2]``: the tap's (row, col) on every level, as the model computes it."""
    cells = decode.tap_cells(geo, check_click(click, geo))
    return np.array([cells[lvl] for lvl in LEVELS], dtype=np.int32)


def clip_region(region, window) -> tuple[int, int, int, int]:
    """``region`` ∩ ``window`` (both (y0, y1, x0, x1)); empty when they do not meet."""
    y0, y1 = max(region[0], window[0]), min(region[1], window[1])
    x0, x1 = max(region[2], window[2]), min(region[3], window[3])
    return y0, max(y0, y1), x0, max(x0, x1)


def decode_outputs(out: dict[str, np.ndarray], geo: Geometry, cfg: ModelConfig, box=None) -> TapMask:
    """The tap's mask from an artifact's outputs (see ``tracenet.export.static``)."""
    level = LEVELS[int(np.asarray(out["level"]).reshape(-1)[0])]
    if box is not None:
        rbox = geo.box_to_resized(check_box(box, geo))
    else:
        rbox = tuple(float(v) for v in np.asarray(out["box"]).reshape(4))
    region = decode.mask_region(rbox, cfg.margin, geo)
    wy, wx = (int(v) for v in np.asarray(out["window"]).reshape(2))
    mh, mw = out["logits"].shape[-2:]
    window = (wy, wy + mh, wx, wx + mw)
    y0, y1, x0, x1 = part = clip_region(region, window)
    score = float(np.asarray(out["score"]).reshape(-1)[0])
    clipped = part != region
    if y1 == y0 or x1 == x0:
        return TapMask(np.zeros(geo.image, dtype=bool), score, level, region, window, clipped)
    logits = out["logits"][..., y0 - wy : y1 - wy, x0 - wx : x1 - wx]
    mask = decode.paste_mask(torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)), part, geo)
    return TapMask(mask, score, level, region, window, clipped)
