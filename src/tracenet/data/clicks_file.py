"""The clicks stage's output: one CSV per dataset split, plus a JSON summary beside it.

Format (``<split>.csv``, header row, one tap per row)::

    image_id,ann_id,kind,band,x,y
    139,2202,band,0,412,187      # kind "band": a paper IV-B tap, band 0..n_bands-1 (0 innermost)
    139,2202,center,-1,415,190   # kind "center": the distance-transform center tap (band -1)

x, y are integer pixel coordinates (column, row) in the original image. Every instance the
dataset yields gets its band taps (fewer than n_bands × per_band when a band is short) and
one center tap. Seeds are mixed with the annotation id (``[seed, ann_id]``), so an
instance's taps do not depend on the order or the subset of images. ``<split>.json`` counts
instances, taps and short bands.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from tracenet.atomic import write_text
from tracenet.data.clicks import Tap, evaluation_taps

HEADER = ("image_id", "ann_id", "kind", "band", "x", "y")


def simulate_split(dataset, n_bands: int = 5, per_band: int = 5, seed: int = 0) -> tuple[list[tuple], dict]:
    """Rows (see HEADER) for every instance of ``dataset`` (an InstanceDataset) and a summary."""
    if not hasattr(dataset, "instances"):
        raise ValueError(
            f"cannot simulate clicks on a {type(dataset).__name__}: annotation ids are unique per "
            "source only, so list a single-source split in data.click_splits"
        )
    rows: list[tuple] = []
    short = Counter()
    instances = 0
    for index in range(len(dataset)):
        image_id, ann_ids, masks, _ = dataset.instances(index)
        for ann_id, mask in zip(ann_ids, masks, strict=True):
            taps, (cx, cy) = evaluation_taps(mask, ann_id, n_bands, per_band, seed)
            rows.extend((image_id, ann_id, "band", t.band, t.x, t.y) for t in taps)
            rows.append((image_id, ann_id, "center", -1, cx, cy))
            short.update(taps.short_bands)
            instances += 1
    summary = {
        "images": len(dataset),
        "instances": instances,
        "band_taps": sum(r[2] == "band" for r in rows),
        "n_bands": n_bands,
        "per_band": per_band,
        "seed": seed,
        "short_bands": {str(b): short[b] for b in range(n_bands)},  # instances with fewer taps in band b
    }
    return rows, summary


def write_clicks(rows: list[tuple], summary: dict[str, Any], path: str | Path) -> Path:
    """``path`` (CSV) and ``path.with_suffix('.json')`` (summary), both atomically."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    write_text(path, buf.getvalue())
    write_text(path.with_suffix(".json"), json.dumps(summary, indent=2) + "\n")
    return path


def _rows(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"clicks file {path} not found: run `dvc repro clicks` first")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != HEADER:
            raise ValueError(
                f"{path} is not a clicks file: header {reader.fieldnames}, expected {list(HEADER)}"
            )
        for line, row in enumerate(reader, start=2):
            try:
                yield row["kind"], int(row["ann_id"]), int(row["x"]), int(row["y"]), int(row["band"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}:{line}: malformed row {row}: {err}") from None


def read_clicks(path: str | Path) -> dict[int, list[Tap]]:
    """ann_id -> band taps, as (x, y, band) tuples (``Tap``), in file order."""
    table: dict[int, list[Tap]] = {}
    for kind, ann_id, x, y, band in _rows(path):
        if kind == "band":
            table.setdefault(ann_id, []).append(Tap(x, y, band))
    return table


def read_centers(path: str | Path) -> dict[int, tuple[int, int]]:
    """ann_id -> (x, y) of the center tap."""
    return {ann_id: (x, y) for kind, ann_id, x, y, _ in _rows(path) if kind == "center"}
