"""One instance-segmentation dataset over COCO-format JSON (pycocotools) or LVIS (``lvis``).

Items follow docs/architecture.md: ``image`` uint8 ``[3,H,W]``, ``masks`` bool ``[K,H,W]``,
``boxes`` float ``[K,4]`` xyxy (tight around each mask, end exclusive: COCO's x + w),
``labels`` int64 ``[K]`` (contiguous, see ``categories``), ``image_id``, ``ann_ids``.
Polygons and RLE are decoded by the annotation library; crowd regions and instances under
``min_area`` pixels are left out (one tap names one object, not a crowd).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image

FORMATS = ("coco", "lvis")


def _load_api(annotations: Path, fmt: str):
    """The annotation index, with the libraries' progress prints kept quiet."""
    if fmt == "coco":
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(annotations))
    from lvis import LVIS

    return LVIS(str(annotations))


def image_path(images: Path, info: Mapping[str, Any]) -> Path:
    """Where an image entry's file lives under ``images``.

    COCO entries name their file (``file_name``). LVIS v1 entries only have ``coco_url``
    (``.../train2017/<name>.jpg`` or ``.../val2017/<name>.jpg``), and LVIS val mixes both
    COCO splits: with ``images`` the COCO root, the file is ``<images>/<split>/<name>``; a
    flat folder of COCO-named files (``<images>/<name>``) works too.
    """
    url = info.get("coco_url")
    if url:
        split, name = url.rstrip("/").split("/")[-2:]
        nested = images / split / name
        return nested if nested.is_file() or not (images / name).is_file() else images / name
    return images / info["file_name"]


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """xyxy boxes around bool masks ``[K,H,W]``, end exclusive (pixel i spans [i, i+1))."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    from torchvision.ops import masks_to_boxes

    boxes = masks_to_boxes(masks)
    boxes[:, 2:] += 1
    return boxes


class InstanceDataset(torch.utils.data.Dataset):
    """Images with their instance masks; ``transforms`` (see tracenet.data.transforms) maps an
    item dict to an item dict."""

    def __init__(
        self,
        annotations: str | Path,
        images: str | Path,
        *,
        format: str = "coco",
        min_area: float = 0.0,
        skip_crowd: bool = True,
        drop_empty: bool = True,
        skip_missing_images: bool = False,
        transforms: Callable[[dict], dict] | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        annotations, images = Path(annotations), Path(images)
        if not annotations.is_file():
            raise FileNotFoundError(
                f"annotation file {annotations} not found: run `dvc repro prepare` (or "
                "`python pipelines/download.py`) first, or point data.splits at the right file"
            )
        if not images.is_dir():
            raise FileNotFoundError(
                f"image folder {images} not found: download or generate the dataset first"
            )
        self.format, self.images, self.transforms = format, images, transforms
        self.min_area, self.skip_crowd = float(min_area), skip_crowd
        try:
            self.api = _load_api(annotations, format)
            cats = sorted(self.api.dataset["categories"], key=lambda c: c["id"])
        except (ValueError, KeyError, TypeError, AssertionError) as err:  # JSONDecodeError is a ValueError
            raise ValueError(
                f"{annotations} is not a {format.upper()} annotation file ({type(err).__name__}: {err}); "
                "check data.format and data.splits"
            ) from None
        self.categories: list[int] = [int(c["id"]) for c in cats]  # label -> original category id
        self.category_names: list[str] = [str(c["name"]) for c in cats]
        self.label_of: dict[int, int] = {cid: i for i, cid in enumerate(self.categories)}
        by_image: dict[int, list[dict]] = {}
        for ann in self.api.dataset["annotations"]:
            if (skip_crowd and ann.get("iscrowd", 0)) or ann.get("area", 1) < self.min_area:
                continue
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        self._anns = by_image
        entries = sorted(self.api.dataset["images"], key=lambda e: e["id"])
        if drop_empty:
            entries = [e for e in entries if by_image.get(int(e["id"]))]
        missing = [e for e in entries if not image_path(images, e).is_file()]
        if missing and not skip_missing_images:
            raise FileNotFoundError(
                f"{len(missing)} of {len(entries)} images listed in {annotations} are missing under "
                f"{images} (first: {image_path(images, missing[0])}); download them, or set "
                "data.skip_missing_images=true (skip_missing_images=True) to use the ones present"
            )
        absent = {int(e["id"]) for e in missing}
        self._entries = [e for e in entries if int(e["id"]) not in absent]

    @property
    def image_ids(self) -> list[int]:
        return [int(e["id"]) for e in self._entries]

    @property
    def num_annotations(self) -> int:
        """Annotations that pass the crowd/area filters on the dataset's images (before
        decoding, which may still drop degenerate ones)."""
        return sum(len(self._anns.get(int(e["id"]), ())) for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _mask(self, ann: dict) -> np.ndarray:
        if self.format == "coco":
            return self.api.annToMask(ann)
        return self.api.ann_to_mask(ann)

    def instances(self, index: int) -> tuple[int, list[int], np.ndarray, np.ndarray]:
        """(image_id, ann_ids, masks bool ``[K,H,W]``, labels ``[K]``) of one image, without
        decoding the image (the clicks stage needs masks only). Instances that decode to
        fewer than ``min_area`` pixels (empty or degenerate polygons) are left out."""
        entry = self._entries[index]
        h, w = int(entry["height"]), int(entry["width"])
        masks, labels, ann_ids = [], [], []
        for ann in self._anns.get(int(entry["id"]), []):
            mask = self._mask(ann).astype(bool)
            if mask.sum() < max(self.min_area, 1):
                continue
            masks.append(mask)
            labels.append(self.label_of[int(ann["category_id"])])
            ann_ids.append(int(ann["id"]))
        stacked = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
        return int(entry["id"]), ann_ids, stacked, np.asarray(labels, dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = image_path(self.images, self._entries[index])
        image = decode_image(str(path), mode=ImageReadMode.RGB)
        image_id, ann_ids, masks, labels = self.instances(index)
        if masks.shape[1:] != tuple(image.shape[-2:]):
            raise ValueError(
                f"image {path} is {tuple(image.shape[-2:])} but its annotation entry says "
                f"{masks.shape[1:]}: the annotation file and the images do not belong together"
            )
        mask_t = torch.from_numpy(masks)
        item = {
            "image": image,
            "masks": mask_t,
            "boxes": tight_boxes(mask_t),
            "labels": torch.from_numpy(labels),
            "image_id": image_id,
            "ann_ids": ann_ids,
        }
        return self.transforms(item) if self.transforms is not None else item


class ConcatInstanceDataset(torch.utils.data.ConcatDataset):
    """Several instance datasets as one (the paper trains on COCO + LVIS). Each part keeps its
    own block of contiguous labels (``categories`` lists (part, category id) per label).
    Annotation ids are only unique within a part, so simulate and evaluate taps per part."""

    def __init__(self, parts: list[InstanceDataset]) -> None:
        if not parts:
            raise ValueError("ConcatInstanceDataset needs at least one dataset")
        super().__init__(parts)
        self.label_offsets = np.cumsum([0] + [len(p.categories) for p in parts[:-1]]).tolist()
        self.categories = [(i, cid) for i, p in enumerate(parts) for cid in p.categories]
        self.category_names = [name for p in parts for name in p.category_names]
        self.num_annotations = sum(p.num_annotations for p in parts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        part = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        item = super().__getitem__(index)
        return {**item, "labels": item["labels"] + self.label_offsets[part]}


def _part(spec: Mapping[str, Any], data: Mapping[str, Any], transforms, overrides) -> InstanceDataset:
    options = {
        "format": spec.get("format", data.get("format", "coco")),
        "min_area": data.get("min_area", 0),
        "skip_crowd": data.get("skip_crowd", True),
        "skip_missing_images": data.get("skip_missing_images", False),
        **overrides,
    }
    return InstanceDataset(spec["annotations"], spec["images"], transforms=transforms, **options)


def build_dataset(data: Mapping[str, Any], split: str, transforms=None, **overrides):
    """The dataset of one split from the ``data`` config block (conf/data/*.yaml). A split
    given as a list of {format, images, annotations} becomes a ConcatInstanceDataset."""
    splits = data.get("splits") or {}
    if split not in splits:
        raise ValueError(f"data {data.get('name')!r} has no split {split!r}; known: {sorted(splits)}")
    spec = splits[split]
    if isinstance(spec, Mapping):
        return _part(spec, data, transforms, overrides)
    return ConcatInstanceDataset([_part(s, data, transforms, overrides) for s in spec])
