"""LightningDataModule: training batches at the model's input size, validation items with taps.

Training items are resized (short side drawn from ``train_sizes``, long side capped at the
model's ``max_size``), flipped at random and padded into one batch tensor. Validation keeps
the original images (the evaluator pre-processes them as users' images are) and simulates
the paper's 25 taps per instance once, seeded per instance, so every epoch scores the same taps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from tracenet.data.clicks_file import simulate_split
from tracenet.data.coco import InstanceDataset, build_dataset
from tracenet.data.transforms import InstanceTransform


def pad_batch(items: Sequence[dict]) -> dict[str, Any]:
    """Images (uint8 ``[3,H,W]``, sizes may differ) -> float ``[N,3,H,W]`` in [0, 1], zero-padded
    bottom/right like the model's own padding; masks padded with background to match."""
    h = max(int(it["image"].shape[-2]) for it in items)
    w = max(int(it["image"].shape[-1]) for it in items)
    images, targets = [], []
    for it in items:
        ph, pw = h - it["image"].shape[-2], w - it["image"].shape[-1]
        images.append(F.pad(it["image"].float() / 255, (0, pw, 0, ph)))
        targets.append(
            {
                "masks": F.pad(it["masks"], (0, pw, 0, ph)),
                "boxes": it["boxes"].float(),
                "labels": it["labels"],
            }
        )
    return {
        "images": torch.stack(images),
        "targets": targets,
        "image_ids": [int(it["image_id"]) for it in items],
    }


def keep_items(batch: list[dict]) -> list[dict]:
    """Validation: images keep their own sizes, so a batch stays a list of items."""
    return batch


class FirstImages:
    """The first ``n`` images of an InstanceDataset, for a bounded validation set."""

    def __init__(self, dataset: InstanceDataset, n: int) -> None:
        self.dataset, self.n = dataset, min(n, len(dataset))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.dataset[index]

    def instances(self, index: int):
        return self.dataset.instances(index)


def tap_table(dataset, seed: int, n_bands: int = 5, per_band: int = 5) -> dict[int, list[tuple]]:
    """ann_id -> [(x, y, band), ...]: the clicks stage's taps (same seed, same taps), computed
    once so every validation scores the same taps."""
    rows, _ = simulate_split(dataset, n_bands, per_band, seed)
    table: dict[int, list[tuple]] = {}
    for _, ann_id, kind, band, x, y in rows:
        if kind == "band":
            table.setdefault(int(ann_id), []).append((int(x), int(y), int(band)))
    return table


class TraceNetDataModule(L.LightningDataModule):
    """``data``: the data config block (conf/data/*.yaml); ``model``: the model block (its
    ``min_size``/``max_size`` are the training sizes unless ``data.train_sizes`` lists several)."""

    def __init__(
        self,
        data: dict[str, Any],
        model: dict[str, Any],
        batch_size: int,
        num_workers: int = 0,
        val_images: int | None = None,
        seed: int = 0,
        n_bands: int = 5,
        per_band: int = 5,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {batch_size}")
        if val_images is not None and val_images < 1:
            raise ValueError(f"train.val_images must be >= 1 or null (all), got {val_images}")
        self.data, self.batch_size, self.num_workers = dict(data), batch_size, num_workers
        self.val_images, self.seed, self.n_bands, self.per_band = val_images, seed, n_bands, per_band
        sizes = self.data.get("train_sizes") or [int(model.get("min_size", 800))]
        self.train_transform = InstanceTransform(
            short_side=[int(s) for s in sizes],
            max_side=int(model.get("max_size", 1333)),
            flip=float(self.data.get("flip", 0.5)),
            jitter=float(self.data.get("jitter", 0.0)),
        )
        self.val_taps: dict[int, list[tuple]] | None = None

    def _split_files(self, split: str) -> tuple[Path, Path]:
        splits = self.data.get("splits") or {}
        if split not in splits:
            raise ValueError(
                f"data {self.data.get('name')!r} has no {split!r} split; known: {sorted(splits)}"
            )
        return Path(splits[split]["annotations"]), Path(splits[split]["images"])

    def check_available(self) -> None:
        """Fail before training starts when a split is missing (the synthetic default is
        generated on demand instead)."""
        if self.data.get("name") == "synthetic":
            return
        for split in ("train", "val"):
            annotations, images = self._split_files(split)
            if not annotations.is_file() or not images.is_dir():
                raise FileNotFoundError(
                    f"{self.data.get('name')} {split} split not found ({annotations}, {images}): download it "
                    "with `dvc repro download` or point data.splits.* (or paths.data_root) at your copy"
                )

    def prepare_data(self) -> None:
        """Generate the synthetic default on first use (the prepare stage does the same), and
        refuse a synthetic set generated with another image size."""
        if self.data.get("name") != "synthetic":
            return
        if not all(self._split_files(split)[0].is_file() for split in ("train", "val")):
            from tracenet.data.prepare import prepare

            prepare(self.data)
        from tracenet.data.synthetic import spec_from_config

        spec = spec_from_config(self.data.get("synthetic") or {})
        annotations = self._split_files("train")[0]
        stored = json.loads(annotations.read_text()).get("info", {}).get("spec")
        wanted = asdict(spec)
        if stored is not None and stored != wanted:
            diff = ", ".join(
                f"{k}: {stored.get(k)!r} there, {v!r} asked" for k, v in wanted.items() if stored.get(k) != v
            )
            raise ValueError(
                f"{annotations} was generated with other data.synthetic settings ({diff}): delete "
                f"{Path(self.data['root'])} to regenerate it, or set data.root to another folder"
            )

    def setup(self, stage: str) -> None:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise ValueError(
                f"train.batch_size {self.batch_size} (global) is not divisible by the {world} processes"
            )
        self.per_device = self.batch_size // world
        self.train_set = build_dataset(self.data, "train", transforms=self.train_transform)
        val_set = build_dataset(self.data, "val")
        if not isinstance(val_set, InstanceDataset):
            raise ValueError("the val split must be one dataset (annotation ids are unique per dataset only)")
        self.val_set = FirstImages(val_set, self.val_images or len(val_set))
        self.val_taps = tap_table(self.val_set, self.seed, self.n_bands, self.per_band)
        if not self.val_taps:
            raise ValueError(f"the {self.data.get('name')} val split has no instance to tap")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.per_device,
            shuffle=True,
            drop_last=True,  # BatchNorm heads need more than one value per channel at P7
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=pad_batch,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1, num_workers=self.num_workers, collate_fn=keep_items)
