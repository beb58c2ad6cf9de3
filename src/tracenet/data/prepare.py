"""The prepare stage: generate the synthetic dataset, or check a downloaded one, and write a
summary (images and instances per split) that the clicks stage depends on."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tracenet.atomic import write_text
from tracenet.data.coco import build_dataset
from tracenet.data.synthetic import generate_split, spec_from_config


def _count(data: Mapping[str, Any], split: str) -> dict[str, int]:
    dataset = build_dataset(data, split)  # raises early, naming what is missing
    return {"images": len(dataset), "instances": dataset.num_annotations}


def prepare(data: Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate (synthetic) or verify (downloaded data) every split; returns the summary it
    writes to ``<data.prepared>/summary.json``."""
    started = time.perf_counter()
    if data["name"] == "synthetic":
        cfg = data["synthetic"]
        spec = spec_from_config(cfg)
        for split, count in cfg["counts"].items():
            t0 = time.perf_counter()
            generate_split(
                spec, split, int(count), Path(data["root"]) / split, workers=int(cfg.get("workers", 1))
            )
            log(f"synthetic {split}: {count} images in {time.perf_counter() - t0:.1f} s")
    summary = {
        "name": data["name"],
        "splits": {split: _count(data, split) for split in data["splits"]},
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_text(Path(data["prepared"]) / "summary.json", json.dumps(summary, indent=2) + "\n")
    for split, counts in summary["splits"].items():
        log(f"{data['name']} {split}: {counts['images']} images, {counts['instances']} instances")
    return summary
