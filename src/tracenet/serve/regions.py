"""The regions RFT computes for one tap, per stage, in image pixels (the paper's Figure 2).

A tap runs two plans (heads at the tap's cells, then mask features over the mask region);
their per-node regions are grouped into stages (backbone C1-C5, FPN P3-P7, heads P3-P7, mask
branch) by module and stride, and each stage's bounding box is mapped back to the image.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracenet.rft.planner import NodeRegion

FAMILIES = {"backbone": "backbone C", "fpn": "FPN P", "heads": "heads P", "mask_branch": "mask branch /"}


def tap_regions(model: Any, model_session: Any, click: tuple[int, int], result: Any) -> list[dict[str, Any]]:
    """Stages the tap needed, as {stage, family, stride, box (image xyxy), share of the map}.

    These are the regions a first tap on the image computes; later taps find most of them in
    the session's region cache (their MACs say how much was left to compute).
    """
    from tracenet.models import decode
    from tracenet.models.preprocess import check_click
    from tracenet.rft import trace

    prep = model_session.prep
    shape = tuple(prep.tensor.shape)
    cells = decode.tap_cells(prep.geo, check_click(click, prep.geo))
    plans = [
        trace(model.inference_net(), input_shape=shape, targets=decode.head_targets(cells)),
        trace(model.inference_net(), input_shape=shape, targets={"mask_feats": result.region}),
    ]
    stages: dict[tuple[str, int], dict[str, Any]] = {}
    for plan in plans:
        nodes = plan.node_regions()
        family = _families(nodes)
        for node in nodes:
            if family[node.name] is None:
                continue
            # The larger ratio, rounded: P6/P7 round sizes up (13 -> 7 -> 4 rows), and on a
            # small input a level may be a single row.
            stride = 2 ** round(math.log2(max(node.stride)))
            key = (family[node.name], stride)
            y0, y1, x0, x1 = node.region
            stage = stages.setdefault(key, {"cells": node.region, "map": node.size})
            a = stage["cells"]
            stage["cells"] = (min(a[0], y0), max(a[1], y1), min(a[2], x0), max(a[3], x1))
    return [_describe(fam, stride, s, prep.geo) for (fam, stride), s in sorted(stages.items(), key=_order)]


def _families(nodes: list[NodeRegion]) -> dict[str, str | None]:
    """Module family of each node; functions (add, interpolate) inherit it from their inputs."""
    out: dict[str, str | None] = {}
    for n in nodes:
        if n.module is not None:
            head = n.module.split(".")[0]
            out[n.name] = head if head in FAMILIES else None
        else:
            out[n.name] = next((out[p] for p in n.inputs if out.get(p)), None)
    return out


def _order(item: tuple[tuple[str, int], dict]) -> tuple[int, int]:
    (family, stride), _ = item
    return list(FAMILIES).index(family), stride


def _describe(family: str, stride: int, stage: dict[str, Any], geo: Any) -> dict[str, Any]:
    y0, y1, x0, x1 = stage["cells"]
    h, w = stage["map"]
    sy, sx = geo.scale
    ih, iw = geo.image
    level = stride if family == "mask_branch" else int(math.log2(stride))
    return {
        "stage": f"{FAMILIES[family]}{level}",
        "family": family,
        "stride": stride,
        "box": [
            round(min(x0 * stride / sx, iw), 1),
            round(min(y0 * stride / sy, ih), 1),
            round(min(x1 * stride / sx, float(iw)), 1),
            round(min(y1 * stride / sy, float(ih)), 1),
        ],
        "share": (y1 - y0) * (x1 - x0) / (h * w),
    }
