"""Check artifacts against the PyTorch model on real taps: mask IoU per tap, per artifact.

Taps per image: the four corners, two border midpoints, the centre, and the centre tap of the
largest instance. Each tap is decoded twice: with the predicted box (the product path) and
with a prompt box (the instance's box, or a square of half the short side around border taps),
which makes the mask region large even for an untrained model whose boxes are tiny.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tracenet.export import host, metadata, runners
from tracenet.models import decode
from tracenet.models.tracenet import TraceNet


@dataclass(frozen=True)
class Tap:
    xy: tuple[int, int]
    box: tuple[float, float, float, float]
    kind: str


def coco_samples(root: str | Path, max_images: int = 3) -> list[tuple[np.ndarray, list[Tap]]]:
    """Images of ``root``/val2017 with their taps (see the module docstring)."""
    from PIL import Image
    from pycocotools.coco import COCO

    from tracenet.data.clicks import center_click

    root = Path(root)
    ann = root / "annotations" / "instances_val2017.json"
    if not ann.is_file():
        raise FileNotFoundError(f"{ann} not found: point verify at a COCO folder (annotations/, val2017/)")
    coco = COCO(str(ann))
    samples = []
    for img_id in sorted(coco.getImgIds()):
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)) if a["area"] > 0]
        if not anns:
            continue
        info = coco.loadImgs(img_id)[0]
        image = np.asarray(Image.open(root / "val2017" / info["file_name"]).convert("RGB"))
        h, w = image.shape[:2]
        big = max(anns, key=lambda a: a["area"])
        x, y, bw, bh = big["bbox"]
        taps = [Tap(center_click(coco.annToMask(big).astype(bool)), (x, y, x + bw, y + bh), "instance")]
        for px, py in (
            (0, 0),
            (w - 1, 0),
            (0, h - 1),
            (w - 1, h - 1),
            (w // 2, 0),
            (0, h // 2),
            (w // 2, h // 2),
        ):
            taps.append(Tap((px, py), _square(px, py, min(h, w) / 2, w, h), "border"))
        samples.append((image, taps))
        if len(samples) == max_images:
            break
    return samples


def _square(x: float, y: float, side: float, w: int, h: int) -> tuple[float, float, float, float]:
    return max(0.0, x - side / 2), max(0.0, y - side / 2), min(w, x + side / 2), min(h, y + side / 2)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mask IoU; two empty masks agree (1.0)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def verify(model: TraceNet, artifacts: list[Path], samples, threads: int = 2) -> dict:
    """Per artifact: IoU of every tap (predicted and prompt box) against PyTorch on the same input."""
    sizes = {tuple(metadata.read(p)["input_size"]) for p in artifacts}
    if len(sizes) != 1:
        raise ValueError(f"artifacts have different input sizes {sorted(sizes)}: verify one size at a time")
    size = sizes.pop()[0]
    ref = TraceNet(host.fixed_config(model.cfg, size))
    ref.load_state_dict(model.state_dict())
    ref.eval()
    loaded = {p: runners.load(p, threads) for p in artifacts}
    rows = {p.name: [] for p in artifacts}
    for image, taps in samples:
        fi = host.prepare(image, model.cfg, size)
        with torch.no_grad():
            dense = ref.dense(torch.from_numpy(fi.image))
        for tap in taps:
            cells = host.tap_cells(fi.geo, tap.xy)
            want = [
                ref.decode(dense, [tap.xy], boxes, image_size=fi.geo.image)[0] for boxes in (None, [tap.box])
            ]
            lvl, (y0, y1, x0, x1) = want[1].level, want[1].region
            ref_logits = decode.mask_logits(
                dense["mask_feats"][..., y0:y1, x0:x1],
                want[1].region,
                lvl,
                decode.tap_cells(fi.geo, tap.xy)[lvl],
                want[1].heads[lvl]["controller"],
            ).numpy()
            for path, run in loaded.items():
                out = run(fi.image, cells)
                got = [host.decode_outputs(out, fi.geo, model.cfg, box) for box in (None, tap.box)]
                same = got[1].level == lvl
                diff = float(np.abs(out["logits"][..., y0:y1, x0:x1] - ref_logits).max()) if same else None
                rows[path.name].append(
                    {
                        "tap": list(tap.xy),
                        "kind": tap.kind,
                        "iou_pred_box": iou(got[0].mask, want[0].mask),
                        "iou_prompt_box": iou(got[1].mask, want[1].mask),
                        "prompt_mask_pixels": int(want[1].mask.sum()),
                        "same_level": got[0].level == want[0].level,
                        "max_logit_diff": diff,  # over the prompt-box region, when the level agrees
                    }
                )
    return {name: _summary(r) for name, r in rows.items()}


def _summary(rows: list[dict]) -> dict:
    ious = [min(r["iou_pred_box"], r["iou_prompt_box"]) for r in rows]
    return {
        "taps": len(rows),
        "min_iou": min(ious),
        "mean_iou": float(np.mean(ious)),
        "same_level": sum(r["same_level"] for r in rows),
        "max_logit_diff": max(
            (r["max_logit_diff"] for r in rows if r["max_logit_diff"] is not None), default=None
        ),
        "rows": rows,
    }
