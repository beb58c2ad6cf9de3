"""The region drawing: a PNG of the input size with the regions outlined, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tracenet.rft import trace
from tracenet.rft.draw import draw_regions, layer_boxes


def _plan():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1), nn.Conv2d(4, 2, 3, 1, 1)
    )
    return trace(model.eval(), (1, 3, 64, 80), {0: (7, 9, 10, 12)})


def test_draw_regions_outlines_every_layer_over_the_image(tmp_path: Path) -> None:
    plan = _plan()
    image = torch.zeros(3, 64, 80)
    out = draw_regions(plan, tmp_path / "regions.png", image=image)
    assert [p.name for p in tmp_path.iterdir()] == ["regions.png"]  # no temp file left behind
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (64, 80, 3)
    layers = layer_boxes(plan)
    assert [name for name, _ in layers] == ["_0", "_2", "_3"]
    assert layers[-1][1] == (7 * 4, 9 * 4, 10 * 4, 12 * 4)  # the target, at stride 4
    for _, (a0, a1, b0, b1) in layers:
        assert plan.input_region[0] <= a0 < a1 <= plan.input_region[1]
        assert plan.input_region[2] <= b0 < b1 <= plan.input_region[3]
    y0, y1, x0, x1 = plan.input_region
    assert (pixels[y0, x0:x1] == 255).all()  # the input region's top edge, in white
    assert pixels[y0 + 3 : y1 - 3, x0 + 3 : x0 + 5].any()  # inner layers drawn inside it
    assert not pixels[:, : x0 - 1].any() and not pixels[: y0 - 1].any()  # nothing outside


def test_draw_regions_rejects_bad_arguments(tmp_path: Path) -> None:
    plan = _plan()
    with pytest.raises(ValueError, match="64x80"):
        draw_regions(plan, tmp_path / "a.png", image=torch.zeros(3, 10, 10))
    with pytest.raises(ValueError, match=r"\.png"):
        draw_regions(plan, tmp_path / "a.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        draw_regions(plan, tmp_path / "missing" / "a.png")
