"""The evaluate/ablate stage bodies on a tiny in-memory split (the DVC scripts add only I/O)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_evaluate import small_model  # same tiny random model as the evaluator tests
from tracenet.metrics.stage import Split, ablation_taps, evaluate_split


@pytest.fixture(scope="module")
def split() -> Split:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:45, :67]
    masks = np.stack(
        [(yy - 20) ** 2 + (xx - 25) ** 2 < 12**2, (yy >= 5) & (yy < 40) & (xx >= 50) & (xx < 60)]
    )
    items = []
    for image_id in (10, 11):
        image = torch.from_numpy(rng.integers(0, 256, size=(3, 45, 67), dtype=np.uint8))
        ann_ids = [image_id * 10, image_id * 10 + 1]
        items.append(
            {
                "image": image,
                "masks": torch.from_numpy(masks),
                "labels": torch.tensor([1, 2]),
                "image_id": image_id,
                "ann_ids": ann_ids,
            }
        )
    taps = {}
    for item in items:
        for k, a in enumerate(item["ann_ids"]):
            ys, xs = np.nonzero(masks[k])
            taps[a] = [
                (int(xs[i]), int(ys[i]), j // 2) for j, i in enumerate(rng.choice(len(ys), 4, replace=False))
            ]
    return Split(items, taps, {1: "disc", 2: "bar"})


def test_evaluate_split_writes_every_output(split, tmp_path):
    summary, overlays = evaluate_split(small_model(), split, tmp_path, progress=False)
    assert summary["overall"]["instances"] == 4 and summary["overall"]["taps"] == 16
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["overall"]["mta"] == pytest.approx(summary["overall"]["mta"])
    assert {r["name"] for r in metrics["per_category"].values()} == {"disc", "bar"}
    assert [b["band"] for b in json.loads((tmp_path / "plots" / "per_band.json").read_text())] == [0, 1]
    assert (tmp_path / "plots" / "per_category.csv").read_text().startswith("category_id,name,")
    assert "## Per band" in (tmp_path / "report.md").read_text()
    assert [p.name.split("_")[0] for p in overlays] == ["best", "median", "worst"]
    assert all(p.is_file() and p.parent == tmp_path / "overlays" for p in overlays)


def test_ablation_taps_round_robin_over_instances(split):
    images = list(ablation_taps(split, max_images=1, taps_per_image=5))
    assert len(images) == 1
    image, taps = images[0]
    assert image.shape == (45, 67, 3)
    assert [t.ann_id for t in taps] == [100, 101, 100, 101, 100]
    assert taps[0].click == split.taps[100][0][:2] and taps[2].click == split.taps[100][1][:2]
    with pytest.raises(ValueError, match="max_images >= 1"):
        list(ablation_taps(split, max_images=0, taps_per_image=5))


@pytest.mark.slow
def test_wandb_tables_and_overlays_land_in_an_offline_run(tmp_path, monkeypatch):
    """Starts a real (offline) W&B run: the wandb service takes seconds to come up."""
    from tracenet.images import save_png
    from tracenet.metrics.breakdowns import summarize
    from tracenet.metrics.records import InstanceResult, Tap
    from tracenet.metrics.wandb_log import log_evaluation

    monkeypatch.setenv("WANDB_MODE", "offline")
    rec = InstanceResult(1, 2, 1, 4, (Tap(0, 0, 0, 0.8),), 0.8, np.array([0.8]), np.array([4]))
    png = save_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "best.png")
    log_evaluation({"project": "tracenet-test"}, tmp_path, "eval-test", summarize([rec]), [png])
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.slow
@pytest.mark.realdata
def test_lvis_split_is_evaluated_with_lvis_category_names(lvis_val_100, tmp_path):
    """LVIS through the `lvis` package: its categories name the per-category rows."""
    from torch.utils.data import Subset

    from tracenet.data.clicks_file import read_centers, read_clicks, simulate_split, write_clicks
    from tracenet.data.coco import InstanceDataset

    full = InstanceDataset(
        lvis_val_100 / "lvis_val_100.json", lvis_val_100 / "images", format="lvis", skip_missing_images=True
    )
    ds = Subset(full, [0])
    clicks = write_clicks(*simulate_split(full, seed=0), tmp_path / "val.csv")
    split = Split(ds, read_clicks(clicks), dict(enumerate(full.category_names)), read_centers(clicks))
    summary, _ = evaluate_split(small_model(), split, tmp_path / "eval", progress=False)
    names = {r["name"] for r in summary["per_category"].values()}
    expected = {full.category_names[int(label)] for label in ds[0]["labels"]}
    assert names == expected and not names & {str(i) for i in range(2000)}
    assert summary["overall"]["instances"] == len(ds[0]["ann_ids"])
