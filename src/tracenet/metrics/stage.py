"""The evaluate and ablate stages, minus reading data: what pipelines/evaluate.py and
pipelines/ablate.py run once they have a model, a dataset and its taps."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracenet.atomic import write_text
from tracenet.data.clicks import center_click
from tracenet.metrics.ablation import AblationTap, run_ablation, summarize_ablation
from tracenet.metrics.breakdowns import summarize
from tracenet.metrics.evaluator import tap_xyb
from tracenet.metrics.loop import Centers, TapTable, evaluate_dataset
from tracenet.metrics.overlays import write_overlays
from tracenet.metrics.report import (
    ablation_markdown,
    evaluation_markdown,
    write_ablation,
    write_evaluation,
)


@dataclass(frozen=True)
class Split:
    """A dataset split ready to evaluate: items as tracenet.data datasets give them, the taps
    table (ann_id -> taps) and the names of the items' labels (the dataset's contiguous
    category labels, which the per-category breakdown reports as ``category_id``)."""

    dataset: Sequence[dict]
    taps: TapTable
    category_names: Mapping[int, str]
    centers: Centers = center_click


def open_split(data: Mapping, split: str, clicks: str | Path, max_images: int | None = None) -> Split:
    """The ``split`` of the ``data`` config block (its first ``max_images`` images) with the
    taps and center taps of the clicks stage's file for that split."""
    from torch.utils.data import Subset

    from tracenet.data.clicks_file import read_centers, read_clicks
    from tracenet.data.coco import build_dataset

    taps, centers = read_clicks(clicks), read_centers(clicks)
    full = build_dataset(data, split)
    dataset = full
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"evaluation.max_images must be null or >= 1, got {max_images}")
        dataset = Subset(full, range(min(max_images, len(full))))
    return Split(dataset, taps, dict(enumerate(full.category_names)), centers)


def _hwc(item: dict) -> np.ndarray:
    return item["image"].permute(1, 2, 0).numpy()


def _instance_loader(dataset: Sequence[dict]):
    """``load(image_id, ann_id)`` for the overlays (a linear scan: they need three images)."""

    def load(image_id: int, ann_id: int) -> tuple[np.ndarray, np.ndarray]:
        for i in range(len(dataset)):
            item = dataset[i]
            if int(item["image_id"]) == image_id:
                k = [int(a) for a in item["ann_ids"]].index(ann_id)
                return _hwc(item), np.asarray(item["masks"][k], dtype=bool)
        raise KeyError(f"image {image_id} is not in the dataset")

    return load


def evaluate_split(
    model,
    split: Split,
    out_dir: str | Path,
    *,
    tau: float = 0.7,
    chunk: int = 256,
    num_workers: int = 0,
    accelerator: str = "cpu",
    devices: int | str = 1,
    progress: bool = True,
) -> tuple[dict, list[Path]]:
    """Evaluate every tapped instance; write metrics, plots, the report and the overlays."""
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    records = evaluate_dataset(
        model,
        split.dataset,
        split.taps,
        split.centers,
        chunk=chunk,
        num_workers=num_workers,
        accelerator=accelerator,
        devices=devices,
        progress=progress,
    )
    if not records:
        raise ValueError("no instance of the split has taps: is the clicks file for another split?")
    seconds = time.perf_counter() - t0
    summary = summarize(records, tau, dict(split.category_names))
    write_evaluation(summary, out_dir / "metrics.json", out_dir / "plots")
    report = evaluation_markdown(summary)
    report += f"\nEvaluation took {seconds:.0f} s ({len(split.dataset)} images).\n"
    write_text(out_dir / "report.md", report)
    overlays = write_overlays(model, records, _instance_loader(split.dataset), out_dir / "overlays")
    return summary, overlays


def ablation_taps(split: Split, max_images: int, taps_per_image: int):
    """(image, taps) of the first ``max_images`` images with taps: up to ``taps_per_image`` taps
    per image, taken round-robin over its instances (band order within an instance)."""
    if max_images < 1 or taps_per_image < 1:
        raise ValueError(
            f"ablation needs max_images >= 1 and taps_per_image >= 1, got {max_images}, {taps_per_image}"
        )
    done = 0
    for i in range(len(split.dataset)):
        if done == max_images:
            return
        item = split.dataset[i]
        queues = []
        for k, a in enumerate(int(a) for a in item["ann_ids"]):
            if a in split.taps:
                gt = np.asarray(item["masks"][k], dtype=bool)
                queues.append([AblationTap(a, tap_xyb(t)[:2], gt) for t in split.taps[a]])
        picked: list[AblationTap] = []
        while len(picked) < taps_per_image and any(queues):
            for q in queues:
                if q and len(picked) < taps_per_image:
                    picked.append(q.pop(0))
        if picked:
            done += 1
            yield _hwc(item), picked


def ablate_split(model, split: Split, out_dir: str | Path, *, max_images: int, taps_per_image: int) -> dict:
    """TraceNet vs FullNet on the split's first taps; writes metrics, plot data and the report."""
    out_dir = Path(out_dir)
    summary = summarize_ablation(run_ablation(model, ablation_taps(split, max_images, taps_per_image)))
    write_ablation(summary, out_dir / "metrics.json", out_dir / "plots")
    write_text(out_dir / "report.md", ablation_markdown(summary))
    return summary
