"""Check artifacts against the PyTorch model on real taps: mask IoU per tap, per artifact.

Taps per image: the four corners, two border midpoints, the centre, and the centre tap of the
largest instance. Each tap is decoded twice: with the predicted box (the product path) and
with a prompt box (the instance's box, or a square of half the short side around border taps),
which makes the mask region large even for an untrained model whose boxes are tiny.

The reference is the PyTorch model on the same ``S×S`` input, unclipped: a tap's result is the
host's (``tracenet.export.fallback``), which recomputes a tap whose mask region exceeds a
TraceNet artifact's mask window with an exact artifact (``fallback``: the dense-mask TraceNet
when exported, else FullNet). The TraceNet
artifact's own clipped output is checked against the model's mask over the region clipped to
its window (``windowed_reference``, ``iou_window``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tracenet.export import fallback, host, metadata, runners
from tracenet.export.static import window_start
from tracenet.models import decode
from tracenet.models.config import MASK_STRIDE, ModelConfig
from tracenet.models.preprocess import geometry
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


def window_cost(root: str | Path, cfg: ModelConfig, size: int, mask_window: int) -> dict:
    """What a mask window of ``mask_window`` cells keeps of coco_mini's val instances at input
    ``size``, with each instance's box as the box: per instance, the share of its ground-truth
    mask inside region ∩ window among that inside the region (1 when the region fits), i.e. the
    IoU a perfect mask keeps after clipping."""
    from pycocotools.coco import COCO

    coco = COCO(str(Path(root) / "annotations" / "instances_val2017.json"))
    fixed = host.fixed_config(cfg, size)
    n = size // MASK_STRIDE
    kept = []
    for a in coco.loadAnns(coco.getAnnIds(iscrowd=False)):
        if a["area"] <= 0:
            continue
        info = coco.loadImgs(a["image_id"])[0]
        geo = geometry((info["height"], info["width"]), fixed)
        sy, sx = geo.scale
        x, y, w, h = a["bbox"]
        region = decode.mask_region(geo.box_to_resized((x, y, x + w, y + h)), cfg.margin, geo)
        window = [window_start(*region[k : k + 2], mask_window, n) for k in (0, 2)]
        part = host.clip_region(
            region, (window[0], window[0] + mask_window, window[1], window[1] + mask_window)
        )
        if part == region:
            kept.append(1.0)
            continue
        gt = coco.annToMask(a).astype(bool)
        cy = np.floor((np.arange(gt.shape[0]) + 0.5) * sy / MASK_STRIDE)[:, None]
        cx = np.floor((np.arange(gt.shape[1]) + 0.5) * sx / MASK_STRIDE)[None, :]

        def inside(r, cy=cy, cx=cx):
            return (cy >= r[0]) & (cy < r[1]) & (cx >= r[2]) & (cx < r[3])

        kept.append(float((gt & inside(part)).sum() / max((gt & inside(region)).sum(), 1)))
    kept_arr = np.array(kept)
    return {
        "input_size": size,
        "mask_window": mask_window,
        "instances": len(kept),
        "clipped": float((kept_arr < 1).mean()),
        "mean_kept": float(kept_arr.mean()),
        "kept_below_0.9": float((kept_arr < 0.9).mean()),
    }


def windowed_reference(ref: TraceNet, dense: dict, geo, tap, want, window) -> np.ndarray:
    """The PyTorch model's mask for ``want`` (its SegmentResult at ``tap``) over its region
    clipped to ``window`` (y0, y1, x0, x1): what an artifact with that mask window computes."""
    part = host.clip_region(want.region, window)
    y0, y1, x0, x1 = part
    if y1 == y0 or x1 == x0:
        return np.zeros(geo.image, dtype=bool)
    lvl = want.level
    cell = decode.tap_cells(geo, tap)[lvl]
    logits = decode.mask_logits(
        dense["mask_feats"][..., y0:y1, x0:x1], part, lvl, cell, want.heads[lvl]["controller"]
    )
    return decode.paste_mask(logits, part, geo)


def verify(model: TraceNet, artifacts: list[Path], samples, threads: int = 2) -> dict:
    """Per artifact: IoU of every tap (predicted and prompt box) against PyTorch on the same input.

    The tap's result is the host's (``fallback.ExactTap``): a windowed TraceNet artifact's clipped
    taps are recomputed by its exact fallback (the dense-mask TraceNet, else FullNet:
    ``fallback_artifact``), so every IoU is against the model's unclipped mask. The artifact's
    own outputs are checked too: against the model's mask over the region clipped to its window
    (``iou_window``) and by the largest |logit| difference from the model over region ∩ window
    (``max_logit_diff``), next to the model's logit scale there (``median_max_abs_logit``)."""
    sizes = {tuple(metadata.read(p)["input_size"]) for p in artifacts}
    if len(sizes) != 1:
        raise ValueError(f"artifacts have different input sizes {sorted(sizes)}: verify one size at a time")
    size = sizes.pop()[0]
    ref = TraceNet(host.fixed_config(model.cfg, size))
    ref.load_state_dict(model.state_dict())
    ref.eval()
    loaded = {p: runners.load(p, threads) for p in artifacts}
    taps, exact_names = {}, {}
    for p in artifacts:
        taps[p], exact_names[p.name] = _exact_tap(p, loaded, model.cfg, threads)
    rows = {p.name: [] for p in artifacts}
    for image, sample_taps in samples:
        fi = host.prepare(image, model.cfg, size)
        with torch.no_grad():
            dense = ref.dense(torch.from_numpy(fi.image))
        for tap in sample_taps:
            boxes = (None, tap.box)
            inputs = [host.tap_inputs(fi, tap.xy, box) for box in boxes]
            want = [
                ref.decode(dense, [tap.xy], None if b is None else [b], image_size=fi.geo.image)[0]
                for b in boxes
            ]
            ref_logits = [_reference_logits(dense, fi.geo, tap.xy, w) for w in want]
            for path, run in loaded.items():
                et = taps[path]
                outs = [run(**feed) for feed in inputs]
                raw = [
                    host.decode_outputs(o, fi.geo, model.cfg, box) for o, box in zip(outs, boxes, strict=True)
                ]
                got = [et.resolve(o, feed, fi, box) for o, feed, box in zip(outs, inputs, boxes, strict=True)]
                windowed = [
                    windowed_reference(ref, dense, fi.geo, tap.xy, w, r.window) if r.clipped else w.mask
                    for r, w in zip(raw, want, strict=True)
                ]
                diffs = [
                    _logit_diff(o, r, w, rl)
                    for o, r, w, rl in zip(outs, raw, want, ref_logits, strict=True)
                    if r.level == w.level
                ]
                diffs = [d for d in diffs if d is not None]
                rows[path.name].append(
                    {
                        "tap": list(tap.xy),
                        "kind": tap.kind,
                        # the host's result (with fallback) against the model's unclipped mask
                        "iou_pred_box": iou(got[0].mask, want[0].mask),
                        "iou_prompt_box": iou(got[1].mask, want[1].mask),
                        "fallback": [g.fallback for g in got],  # (predicted, prompt) recomputed exactly
                        "prompt_skips_trace": not fallback.prompt_fits(
                            fi, model.cfg, tap.box, et.mask_window
                        ),
                        # the artifact's own outputs: region exceeds its window; IoU against the
                        # model's mask over region ∩ window
                        "clipped": [r.clipped for r in raw],
                        "iou_window": min(iou(r.mask, w) for r, w in zip(raw, windowed, strict=True)),
                        "prompt_mask_pixels": int(want[1].mask.sum()),
                        "same_level": got[0].level == want[0].level,
                        # max |artifact - model| logit over region ∩ window (both boxes, where the level
                        # agrees), and the model's largest |logit| there, for scale
                        "max_logit_diff": max((d for d, _ in diffs), default=None),
                        "max_abs_logit": max((a for _, a in diffs), default=None),
                    }
                )
    return {name: {**_summary(r), "fallback_artifact": exact_names[name]} for name, r in rows.items()}


def _reference_logits(dense: dict, geo, tap, want) -> np.ndarray:
    """The model's mask logits over ``want``'s mask region (``decode.mask_logits``)."""
    lvl, (y0, y1, x0, x1) = want.level, want.region
    return decode.mask_logits(
        dense["mask_feats"][..., y0:y1, x0:x1],
        want.region,
        lvl,
        decode.tap_cells(geo, tap)[lvl],
        want.heads[lvl]["controller"],
    ).numpy()


def _logit_diff(out: dict, raw: host.TapMask, want, ref: np.ndarray) -> tuple[float, float] | None:
    """(max |artifact logit - model logit|, max |model logit|) over the model's region inside the
    artifact's window; None where they do not meet."""
    y0, _, x0, _ = want.region
    wy0, wy1, wx0, wx1 = host.clip_region(want.region, raw.window)
    if wy1 <= wy0 or wx1 <= wx0:
        return None
    gy, gx = raw.window[0], raw.window[2]
    mine = out["logits"][..., wy0 - gy : wy1 - gy, wx0 - gx : wx1 - gx]
    theirs = ref[..., wy0 - y0 : wy1 - y0, wx0 - x0 : wx1 - x0]
    return float(np.abs(mine - theirs).max()), float(np.abs(theirs).max())


def _exact_tap(
    path: Path, loaded: dict, cfg: ModelConfig, threads: int
) -> tuple[fallback.ExactTap, str | None]:
    """The host's exact tap for ``path`` and the name of its fallback artifact: a windowed
    TraceNet artifact with the first of ``fallback.exact_candidates`` (dense-mask TraceNet, then
    FullNet) that is among the artifacts verified or on disk."""
    window = fallback.window_cells(metadata.read(path))
    if window is None:
        return fallback.ExactTap(loaded[path], None, cfg, None), None
    candidates = fallback.exact_candidates(path)
    for full in candidates:
        if full in loaded:
            return fallback.ExactTap(loaded[path], loaded[full], cfg, window), full.name
    for full in candidates:
        try:
            return fallback.ExactTap(loaded[path], runners.load(full, threads), cfg, window), full.name
        except FileNotFoundError:
            continue
    names = " or ".join(c.name for c in candidates)
    raise FileNotFoundError(f"{path.name} falls back to {names} where its mask window clips: none found")


def fallback_rates(
    root: str | Path, model: TraceNet, size: int, mask_window: int, max_images: int | None = None
) -> dict:
    """How often the host falls back to the exact artifact on coco_mini's val instances at input
    ``size``: each instance tapped at its centre (``center_click``), with its box as the prompt
    and with the model's predicted box. A region falls back when it exceeds ``mask_window``
    cells (the window is centred on it, so a region that fits is inside). With a prompt box the
    host knows this before any call and runs the exact artifact only; with the predicted box it
    runs TraceNet, then the exact artifact. ``max_images``: the first ones only. Computed with the PyTorch model on the artifact's input
    (its regions equal the artifact's, ``tests/test_export.py``)."""
    from PIL import Image
    from pycocotools.coco import COCO

    from tracenet.data.clicks import center_click

    root = Path(root)
    coco = COCO(str(root / "annotations" / "instances_val2017.json"))
    ref = TraceNet(host.fixed_config(model.cfg, size))
    ref.load_state_dict(model.state_dict())
    ref.eval()
    prompt, predicted = [], []
    for img_id in sorted(coco.getImgIds())[:max_images]:
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)) if a["area"] > 0]
        if not anns:
            continue
        info = coco.loadImgs(img_id)[0]
        image = np.asarray(Image.open(root / "val2017" / info["file_name"]).convert("RGB"))
        fi = host.prepare(image, model.cfg, size)
        clicks = [center_click(coco.annToMask(a).astype(bool)) for a in anns]
        with torch.no_grad():
            results = ref.decode(ref.dense(torch.from_numpy(fi.image)), clicks, None, image_size=fi.geo.image)
        for a, r in zip(anns, results, strict=True):
            x, y, w, h = a["bbox"]
            prompt.append(not fallback.prompt_fits(fi, model.cfg, (x, y, x + w, y + h), mask_window))
            y0, y1, x0, x1 = r.region
            predicted.append(y1 - y0 > mask_window or x1 - x0 > mask_window)
    return {
        "input_size": size,
        "mask_window": mask_window,
        "taps": len(prompt),
        "prompt_box": float(np.mean(prompt)),  # share answered by the exact artifact alone
        "predicted_box": float(np.mean(predicted)),  # share run by TraceNet, then the exact artifact
    }


def _summary(rows: list[dict]) -> dict:
    ious = [min(r["iou_pred_box"], r["iou_prompt_box"]) for r in rows]
    raw = [r["iou_window"] for r in rows]
    return {
        "taps": len(rows),
        "min_iou": min(ious),
        "mean_iou": float(np.mean(ious)),
        "same_level": sum(r["same_level"] for r in rows),
        "clipped": sum(any(r["clipped"]) for r in rows),
        "fallback": sum(any(r["fallback"]) for r in rows),
        "fallback_calls": sum(sum(r["fallback"]) for r in rows),
        "min_iou_window": min(raw),
        "mean_iou_window": float(np.mean(raw)),
        "max_logit_diff": max(
            (r["max_logit_diff"] for r in rows if r["max_logit_diff"] is not None), default=None
        ),
        # the model's logit scale on the same cells: a diff is small only relative to it
        "median_max_abs_logit": float(
            np.median([r["max_abs_logit"] for r in rows if r["max_abs_logit"] is not None] or [np.nan])
        ),
        "rows": rows,
    }
