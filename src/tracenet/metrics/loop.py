"""Evaluation over a dataset as a Lightning predict loop: progress bar, devices and DDP for free.

Predict (not test) because Lightning shards predict data with an *unrepeated* distributed
sampler: no rank pads its share with another rank's images, so no instance counts twice.
Each rank evaluates its images; the per-rank records are gathered and merged at epoch end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import lightning as L
import numpy as np
import torch

from tracenet.metrics.evaluator import ImageEvaluator, InstanceTaps
from tracenet.metrics.records import InstanceResult, merge

TapTable = Mapping[int, Sequence[tuple[int, int, int]]]  # ann_id -> [(x, y, band), ...]
# The center tap: ann_id -> (x, y) (the clicks file's), or computed from the mask.
Centers = Mapping[int, tuple[int, int]] | Callable[[np.ndarray], tuple[int, int]]


def collate_items(batch: list[dict]) -> list[dict]:
    """Images differ in size: keep a batch as a list of dataset items."""
    return batch


def evaluate_item(
    model,
    item: dict,
    taps: TapTable,
    center: Centers,
    chunk: int = 256,
) -> list[InstanceResult]:
    """All instances of one dataset item that have taps (instances without taps are skipped:
    the clicks stage leaves out the ones it cannot tap, e.g. crowd regions or empty masks)."""
    ann_ids = [int(a) for a in item["ann_ids"]]
    todo = [k for k, a in enumerate(ann_ids) if a in taps]
    if not todo:
        return []
    ev = ImageEvaluator(model, item["image"], chunk=chunk)
    masks, labels = item["masks"], item["labels"]
    out = []
    for k in todo:
        mask = np.asarray(masks[k], dtype=bool)
        c = center[ann_ids[k]] if isinstance(center, Mapping) else center(mask)
        inst = InstanceTaps(ann_ids[k], int(labels[k]), mask, taps[ann_ids[k]], c)
        out.append(ev.evaluate(inst, int(item["image_id"])))
    return out


class EvaluationModule(L.LightningModule):
    """Wraps a TraceNet for ``Trainer.predict``; ``records`` holds the merged results afterwards."""

    def __init__(self, model, taps: TapTable, center: Centers, chunk: int = 256) -> None:
        super().__init__()
        self.model = model.eval()
        self.taps = taps
        self.center = center
        self.chunk = chunk
        self._shard: list[InstanceResult] = []
        self.records: list[InstanceResult] = []

    def on_predict_epoch_start(self) -> None:
        self._shard = []

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[InstanceResult]:
        done = [
            r for item in batch for r in evaluate_item(self.model, item, self.taps, self.center, self.chunk)
        ]
        self._shard.extend(done)
        return done

    def on_predict_epoch_end(self) -> None:
        shards = [self._shard]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            shards = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(shards, self._shard)
        self.records = merge(shards)


def evaluate_dataset(
    model,
    dataset,
    taps: TapTable,
    center: Centers,
    *,
    chunk: int = 256,
    num_workers: int = 0,
    accelerator: str = "cpu",
    devices: int | str = 1,
    progress: bool = True,
) -> list[InstanceResult]:
    """Every instance of ``dataset`` that has taps, with a rich progress bar."""
    from lightning.pytorch.callbacks import RichProgressBar

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=collate_items
    )
    module = EvaluationModule(model, taps, center, chunk)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=[RichProgressBar()] if progress else [],
        inference_mode=True,
    )
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    return module.records
