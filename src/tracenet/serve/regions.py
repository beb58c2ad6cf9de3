"""The regions RFT computes for one tap, per stage, in image pixels (the paper's Figure 2).

A tap runs two plans (heads at the tap's cells, then mask features over the mask region);
their per-node regions are grouped into stages (backbone C1-C5, FPN P3-P7, heads P3-P7, mask
branch) by module and stride, and each stage's bounding box is mapped back to the image.
"""

from __future__ import annotations

import math
from typing import Any

from torch import fx

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
        trace(model.dense, input_shape=shape, targets=decode.head_targets(cells)),
        trace(model.dense, input_shape=shape, targets={"mask_feats": result.region}),
    ]
    stages: dict[tuple[str, int], dict[str, Any]] = {}
    for plan in plans:
        facts = plan.capture.facts
        family = _families(plan.capture.order)
        nodes = {n.name: n for n in plan.capture.order}
        for name, (y0, y1, x0, x1) in plan.regions.items():
            node = nodes[name]
            if family.get(node) is None:
                continue
            h, w = facts.hw(node)
            # The larger ratio, rounded: P6/P7 round sizes up (13 -> 7 -> 4 rows), and on a
            # small input a level may be a single row.
            stride = 2 ** round(math.log2(max(shape[2] / h, shape[3] / w)))
            key = (family[node], stride)
            stage = stages.setdefault(key, {"cells": (y0, y1, x0, x1), "map": (h, w)})
            a = stage["cells"]
            stage["cells"] = (min(a[0], y0), max(a[1], y1), min(a[2], x0), max(a[3], x1))
    return [_describe(fam, stride, s, prep.geo) for (fam, stride), s in sorted(stages.items(), key=_order)]


def _families(order: list[fx.Node]) -> dict[fx.Node, str | None]:
    """Module family of each node; functions (add, interpolate) inherit it from their inputs."""
    out: dict[fx.Node, str | None] = {}
    for n in order:
        if n.op == "call_module":
            head = str(n.target).split(".")[0]
            out[n] = head if head in FAMILIES else None
        else:
            out[n] = next((out[p] for p in n.all_input_nodes if out.get(p)), None)
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
