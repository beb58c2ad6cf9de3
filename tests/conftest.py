"""Shared fixtures: where the optional real-data samples live, and quiet, offline defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests never touch the network through W&B or DVC.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# Every run probes convolution widths afresh and leaves nothing in ~/.cache (width_store.py).
os.environ.setdefault("TRACENET_CACHE_DIR", "off")


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real-data sample {path} is absent (it lives beside the checkout, not in it)")
    return path


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """../shared/data/coco_mini (annotations/, train2017/, val2017/); skips when absent."""
    return _shared("coco_mini")


@pytest.fixture(scope="session")
def lvis_val_100() -> Path:
    """../shared/data/lvis_val_100 (lvis_val_100.json, images/); skips when absent."""
    return _shared("lvis_val_100")
