"""Cost of one tap, FullNet vs TraceNet, side by side on real images.

    python -m tracenet.models.benchmark [--backbones resnet50 resnet101 mobilenet_v3_large
        | --checkpoint outputs/train/model.pt] [--data ../shared/data/coco_mini] [--images 3]
        [--min-size 800 --max-size 1333] [--threads 1 2] [--json]

Taps are pixels inside COCO val instances (area > 500) with ``box`` = the instance's box, so
the mask region is fixed by the data, not by random weights. Each tap runs full then trace,
interleaved, so CPU contention hits both alike. MACs: one multiply-add = 1 (the paper's
"FLOPs"). "2nd tap" is the second instance tapped in one session (the region cache kept).
Exactness (trace vs full, untimed extras included): every timed tap plus, per image, the four
corners and a bottom-border pixel tapped in that session; worst relative head difference
(|trace - full| / max(|full|, 1), as the model issue defines it) and minimum mask IoU.
Weights are random (BatchNorm statistics randomized; the cost does not depend on them), or a
checkpoint's (``--checkpoint``: exactness with trained weights, at the benchmark's input size).
Each row names its torch thread count and the 1-minute load average at its start and end
(wall-clock ratios on a shared machine move with the load). The wall ratio's median is also
split: taps that were the first at their input size (trace mode then captures the network at
that size and probes convolution widths, unless stored on disk) and the others.
"Heads only" is the MACs of trace mode's first pass alone (the heads at the tap on all five
levels, no mask region) over full: the floor under a tap's cost whatever its box, since P7's
heads read the whole of C5. The MACs ratio minus it is what the mask region costs.
"Val taps" is the mean MACs ratio over every tap an evaluation makes on the same images (the
clicks stage's band taps, up to 25, and center tap on every instance, small ones included), each with
its instance's box, from plans alone (nothing run): what the paper's cost averages over. The
timed taps (two instances of area > 500 per image, as the acceptance preview picks them) are
larger than the average instance.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from tracenet.data.clicks import evaluation_taps
from tracenet.metrics.ablation import head_diff
from tracenet.metrics.taps import mask_iou
from tracenet.models import decode
from tracenet.models.preprocess import geometry
from tracenet.rft import trace as rft_trace
from tracenet.rft.verify import randomize_batchnorm

BACKBONES = ("resnet50", "resnet101", "mobilenet_v3_large")
DEFAULT_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "coco_mini"


@functools.lru_cache(maxsize=1)
def _coco(ann_file: Path):
    """The annotation index, built once: a row's timed taps and its val taps both read it."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file))


def val_images(data: Path, n_images: int):
    """(coco, image id, its non-crowd annotations) for the first val images with an instance of
    area > 500, the ones both the timed taps and the val taps' cost come from."""
    ann_file = data / "annotations" / "instances_val2017.json"
    if not ann_file.is_file():
        raise FileNotFoundError(f"{ann_file} not found: pass --data DIR holding annotations/ and val2017/")
    coco = _coco(ann_file)
    for img_id in coco.getImgIds():
        if n_images <= 0:
            return
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False))
        if any(a["area"] > 500 for a in anns):
            n_images -= 1
            yield coco, img_id, anns


def instance_taps(data: Path, n_images: int, seed: int = 0):
    """(image, [(tap, box), ...]): a random pixel of each of an image's first two instances of
    area > 500, as the acceptance preview picks them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for coco, img_id, anns in val_images(data, n_images):
        info = coco.loadImgs(img_id)[0]
        image = np.asarray(Image.open(data / "val2017" / info["file_name"]).convert("RGB"))
        taps = []
        for a in [a for a in anns if a["area"] > 500][:2]:
            ys, xs = np.nonzero(coco.annToMask(a))
            i = rng.integers(len(ys))
            taps.append(((int(xs[i]), int(ys[i])), _xyxy(a["bbox"])))
        yield image, taps


def val_taps(data: Path, n_images: int):
    """((h, w), tap, box) for every tap the clicks stage writes (up to 25 band taps and the center
    tap per instance, seed 0) on every non-empty instance of the same images, small ones included:
    the taps an evaluation makes, and what the paper's cost averages over."""
    for coco, img_id, anns in val_images(data, n_images):
        info = coco.loadImgs(img_id)[0]
        for a in anns:
            mask = coco.annToMask(a)
            if mask.any():
                taps, center = evaluation_taps(mask, a["id"])
                for tap in [(t.x, t.y) for t in taps] + [center]:
                    yield (info["height"], info["width"]), tap, _xyxy(a["bbox"])


def _xyxy(bbox: list[float]) -> tuple[float, float, float, float]:
    x, y, w, h = bbox
    return x, y, x + w, y + h


def randomized(backbone: str, **options):
    from tracenet import TraceNet

    torch.manual_seed(0)
    model = TraceNet.build(backbone=backbone, **options)
    return randomize_batchnorm(model, torch.Generator().manual_seed(0)).eval()


def checkpointed(path: Path, min_size: int, max_size: int):
    """A checkpoint's weights, pre-processing at the benchmark's input size (a model trained on
    small images still runs, and must stay exact, at 800×1333)."""
    from tracenet import TraceNet

    model = TraceNet.from_checkpoint(path)
    model.cfg = dataclasses.replace(model.cfg, min_size=min_size, max_size=max_size)
    return model


def border_taps(image: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
    """The four corners and a random pixel of the bottom row: taps whose crops cross the border."""
    h, w = image.shape[:2]
    return [(0, 0), (w - 1, h - 1), (w - 1, 0), (0, h - 1), (int(rng.integers(w)), h - 1)]


def planned_macs(model, image_shape: tuple[int, int], tap: tuple[int, int], box=None) -> tuple[int, int]:
    """(trace, full) MACs at ``tap`` from trace mode's plan alone, no convolution run: with
    ``box``, what ``segment(image, tap, box=box).macs`` counts in each mode; without, trace
    mode's pass 1 alone (the heads at the tap's cell on every level, no mask region)."""
    geo = geometry(image_shape, model.cfg)
    targets = decode.head_targets(decode.tap_cells(geo, tap))
    dynamic_head = 0  # the 1x1 mask head over the region, the same in both modes
    if box is not None:
        targets["mask_feats"] = region = decode.mask_region(geo.box_to_resized(box), model.cfg.margin, geo)
        dynamic_head = decode.mask_logits_macs(region)
    shape = (1, 3, *geo.padded)
    plan = rft_trace(
        model.inference_net(), input_shape=shape, targets=targets, whole_from=model.cfg.whole_from
    )
    return plan.macs_in_session + dynamic_head, model.full_macs(shape) + dynamic_head


def val_taps_ratio(model, data: Path, n_images: int) -> tuple[float, int]:
    """(mean trace/full MACs, taps) over every val tap of the first ``n_images`` images."""
    ratios = [t / f for t, f in (planned_macs(model, *tap) for tap in val_taps(data, n_images))]
    return round(statistics.mean(ratios), 3), len(ratios)


def bench(model, data: Path, n_images: int) -> dict:
    rows = {
        "full_macs": [],
        "trace_macs": [],
        "heads_macs": [],
        "second_macs": [],
        "full_s": [],
        "trace_s": [],
    }
    diffs, ious = [], []
    rng = np.random.default_rng(1)
    sizes, first_at_size = set(), []  # a first tap at an input size pays capture and probes
    for image, taps in instance_taps(data, n_images):
        size = geometry(image.shape[:2], model.cfg).padded  # the network input's size
        for tap, box in taps:
            first_at_size.append(size not in sizes)
            sizes.add(size)
            t0 = time.perf_counter()
            full = model.segment(image, click=tap, mode="full", box=box)
            rows["full_s"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            trace = model.segment(image, click=tap, mode="trace", box=box)
            rows["trace_s"].append(time.perf_counter() - t0)
            rows["full_macs"].append(full.macs)
            rows["trace_macs"].append(trace.macs)
            rows["heads_macs"].append(planned_macs(model, image.shape[:2], tap)[0])
            diffs.append(head_diff(full.heads, trace.heads))
            ious.append(mask_iou(trace.mask, full.mask))
        if len(taps) >= 2:
            with model.session(image) as s:
                s.segment(taps[0][0], box=taps[0][1])
                second = s.segment(taps[1][0], box=taps[1][1])
                # exactness only (untimed): border taps in the same session, against one dense forward
                edges = border_taps(image, rng)
                fulls = model.decode(
                    model.inference_net()(model.prepare(image).tensor), edges, image_size=image.shape[:2]
                )
                for tap, full_edge in zip(edges, fulls, strict=True):
                    trace_edge = s.segment(tap)
                    diffs.append(head_diff(full_edge.heads, trace_edge.heads))
                    ious.append(mask_iou(trace_edge.mask, full_edge.mask))
            rows["second_macs"].append(second.macs / full.macs)  # full: the same (last) tap
    walls = [t / f for t, f in zip(rows["trace_s"], rows["full_s"], strict=True)]
    val_ratio, n_val_taps = val_taps_ratio(model, data, n_images)
    full_g = statistics.mean(rows["full_macs"]) / 1e9
    trace_g = statistics.mean(rows["trace_macs"]) / 1e9
    return {
        "backbone": model.cfg.backbone,
        "taps": len(rows["full_macs"]),
        "full_gmacs": round(full_g, 2),
        "trace_gmacs": round(trace_g, 2),
        "macs_ratio": _per_full(rows, "trace_macs"),
        "heads_only_ratio": _per_full(rows, "heads_macs"),
        "macs_ratio_val_taps": val_ratio,
        "val_taps": n_val_taps,
        "second_tap_ratio": round(statistics.mean(rows["second_macs"]), 3) if rows["second_macs"] else None,
        "full_s_median": round(statistics.median(rows["full_s"]), 3),
        "trace_s_median": round(statistics.median(rows["trace_s"]), 3),
        "wall_ratio": round(statistics.median(walls), 3),
        "wall_ratio_new_size": _median([w for w, first in zip(walls, first_at_size, strict=True) if first]),
        "wall_ratio_warm": _median([w for w, first in zip(walls, first_at_size, strict=True) if not first]),
        "exact_taps": len(diffs),
        "worst_head_diff": float(f"{max(diffs):.1e}"),
        "min_mask_iou": round(min(ious), 4),
    }


def _per_full(rows: dict[str, list[int]], key: str) -> float:
    """The mean over taps of ``key``'s MACs over the same tap's full MACs."""
    return round(statistics.mean(t / f for t, f in zip(rows[key], rows["full_macs"], strict=True)), 3)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--backbones", nargs="+", help=f"random-weight models, one row each (default: {' '.join(BACKBONES)})"
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="COCO folder with annotations/, val2017/")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--min-size", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument(
        "--threads", type=int, nargs="+", help="torch thread counts, one row each (default: torch's default)"
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        nargs="+",
        help="TraceNet checkpoints to run instead of random weights, one row each (replaces --backbones)",
    )
    p.add_argument("--json", action="store_true", help="also print one JSON line per row")
    args = p.parse_args(argv)
    if args.images < 1:
        p.error("--images must be >= 1")
    if args.threads and min(args.threads) < 1:
        p.error("--threads must be >= 1")
    sizes = {"min_size": args.min_size, "max_size": args.max_size}
    if args.checkpoint and args.backbones:
        p.error("--checkpoint fixes the backbone (the checkpoint's own): drop --backbones")
    if args.checkpoint:
        models = {}
        for path in args.checkpoint:  # loaded up front: a bad file stops the run before any timing
            try:
                checkpointed(path, **sizes)
            except (OSError, ValueError) as e:
                p.error(f"--checkpoint {path}: {e}")
            models[str(path)] = functools.partial(checkpointed, path, **sizes)
    else:
        models = {b: functools.partial(randomized, b, **sizes) for b in args.backbones or BACKBONES}
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"one tap, short side {args.min_size} / max {args.max_size}; MACs: multiply-add = 1")
    for col in ("weights", "backbone", "taps", "full GMACs", "trace GMACs", "MACs trace/full", "heads only/full",
                "val taps/full", "val taps", "2nd tap/full",
                "full s (median)", "trace s (median)", "wall trace/full", "new size", "warm", "exactness taps",
                "worst head diff", "min mask IoU", "threads", "load"):  # fmt: skip
        table.add_column(col, justify="right")
    default = torch.get_num_threads()
    try:
        with torch.no_grad():
            for name, load_model in models.items():
                for threads in args.threads or [default]:
                    torch.set_num_threads(threads)
                    load = os.getloadavg()[0]
                    r = {"weights": name if args.checkpoint else "random"}
                    r |= bench(load_model(), args.data, args.images)
                    r["threads"], r["load"] = threads, f"{load:.1f}-{os.getloadavg()[0]:.1f}"
                    if args.json:
                        print(json.dumps(r), flush=True)
                    table.add_row(*(str(v) for v in r.values()))
    finally:
        torch.set_num_threads(default)
    Console(width=230).print(table)


if __name__ == "__main__":
    main()
