"""DVC stage `clicks`: the paper's taps (and the center tap) for every instance of each split
in data.click_splits, one CSV per split under clicks.out_dir (format: docs/data.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from tracenet.config import load_params
from tracenet.data.clicks_file import simulate_split, write_clicks
from tracenet.data.coco import build_dataset


def main() -> int:
    params = load_params()
    data = OmegaConf.to_container(params.data, resolve=True)
    cfg = params.clicks
    for split in data["click_splits"]:
        t0 = time.perf_counter()
        try:
            dataset = build_dataset(data, split)
        except (FileNotFoundError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        rows, summary = simulate_split(dataset, int(cfg.n_bands), int(cfg.per_band), int(cfg.seed))
        path = write_clicks(rows, summary, Path(cfg.out_dir) / f"{split}.csv")
        print(
            f"{split}: {summary['instances']} instances, {summary['band_taps']} taps -> {path} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
