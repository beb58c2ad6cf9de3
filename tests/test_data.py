"""Datasets and transforms: the synthetic generator, the COCO/LVIS dataset on real samples,
transforms keeping masks/boxes/taps consistent, the clicks file and the prepare stage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tracenet.data.clicks_file import HEADER, read_centers, read_clicks, simulate_split, write_clicks
from tracenet.data.coco import ConcatInstanceDataset, InstanceDataset, build_dataset, image_path
from tracenet.data.prepare import prepare
from tracenet.data.synthetic import CATEGORIES, SyntheticSpec, generate_split, render
from tracenet.data.transforms import InstanceTransform

SMALL = SyntheticSpec(seed=3, height=96, width=128)


@pytest.fixture(scope="module")
def synthetic_split(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "val"
    generate_split(SMALL, "val", 12, out, workers=1)
    return out


def dataset_of(split_dir: Path, **kwargs) -> InstanceDataset:
    return InstanceDataset(split_dir / "annotations.json", split_dir / "images", **kwargs)


# --- synthetic -------------------------------------------------------------------------------


def test_render_is_deterministic_by_seed():
    a_img, a_inst = render(SMALL, 0, 5)
    b_img, b_inst = render(SMALL, 0, 5)
    assert np.array_equal(a_img, b_img) and len(a_inst) == len(b_inst)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(a_inst, b_inst, strict=True))
    other, _ = render(SyntheticSpec(seed=4, height=96, width=128), 0, 5)
    assert not np.array_equal(a_img, other)


def test_generated_split_does_not_depend_on_workers(tmp_path: Path, synthetic_split: Path):
    generate_split(SMALL, "val", 12, tmp_path / "val", workers=2)
    assert (tmp_path / "val" / "annotations.json").read_bytes() == (
        synthetic_split / "annotations.json"
    ).read_bytes()
    for img in sorted((synthetic_split / "images").iterdir()):
        assert (tmp_path / "val" / "images" / img.name).read_bytes() == img.read_bytes()


def test_synthetic_is_varied_occluded_and_round_trips_through_the_dataset(synthetic_split: Path):
    ds = dataset_of(synthetic_split)
    assert ds.category_names == list(CATEGORIES)
    _, instances = render(SMALL, 1, 0)  # split "val" is index 1
    item = ds[0]
    assert item["image"].shape == (3, 96, 128) and item["image"].dtype == torch.uint8
    assert item["masks"].shape[0] == len(instances)
    for mask, (_, expected) in zip(item["masks"], instances, strict=True):
        assert np.array_equal(mask.numpy(), expected)
    labels, areas = set(), []
    for i in range(60):
        _, inst = render(SMALL, 0, i)
        labels.update(k for k, _ in inst)
        areas += [int(m.sum()) for _, m in inst]
        union = np.zeros(inst[0][1].shape, int) if inst else 0
        for _, m in inst:
            union = union + m
        assert np.all(union <= 1)  # annotations are the visible parts: they never overlap
    assert labels == set(range(len(CATEGORIES)))
    assert min(areas) < 0.01 * 96 * 128 and max(areas) > 0.1 * 96 * 128  # small to large
    # occlusion happens: demanding fully visible objects drops some of them
    strict = SyntheticSpec(seed=3, height=96, width=128, min_visible=1.0)
    assert sum(len(render(strict, 0, i)[1]) for i in range(60)) < sum(
        len(render(SMALL, 0, i)[1]) for i in range(60)
    )


def test_synthetic_generation_is_fast():
    start = time.perf_counter()
    for i in range(50):
        render(SyntheticSpec(), 0, i)  # the default 192 × 192
    per_image = (time.perf_counter() - start) / 50
    assert per_image < 0.05, f"{per_image * 1e3:.1f} ms per image"  # a few thousand in well under a minute


def test_flat_objects_are_one_color_and_textured_ones_are_not():
    def spread(texture: str) -> list[float]:
        spec = SyntheticSpec(
            seed=1, height=96, width=96, min_scale=0.4, max_scale=0.8, object_texture=texture
        )
        out = []
        for i in range(6):
            image, instances = render(spec, 0, i)
            out += [float(image[mask].std(axis=0).max()) for _, mask in instances if mask.sum() > 100]
        return out

    flat, textured = spread("flat"), spread("textured")
    assert flat and max(flat) < 10  # the pixel noise (sigma 6) only
    assert np.median(textured) > 20
    plain = SyntheticSpec(seed=1, height=96, width=96, background_texture="flat")
    for i in range(3):
        image, instances = render(plain, 0, i)
        background = (
            ~np.any([mask for _, mask in instances], axis=0) if instances else np.ones((96, 96), bool)
        )
        assert image[background].std(axis=0).max() < 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_objects": 0}, "objects"),
        ({"height": 16}, "32"),
        ({"min_scale": 0.7}, "scales"),
        ({"min_visible": 2}, "fraction"),
        ({"object_texture": "plaid"}, "object_texture"),
        ({"background_texture": "plaid"}, "background_texture"),
    ],
)
def test_bad_synthetic_spec_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticSpec(**kwargs)


def test_generate_split_rejects_bad_split_and_count(tmp_path: Path):
    with pytest.raises(ValueError, match="split"):
        generate_split(SMALL, "holdout", 3, tmp_path / "x")
    with pytest.raises(ValueError, match="count"):
        generate_split(SMALL, "val", 0, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# --- dataset on real data ----------------------------------------------------------------------


@pytest.mark.realdata
def test_coco_mini_items_follow_the_contract(coco_mini: Path):
    from pycocotools.coco import COCO

    ds = InstanceDataset(coco_mini / "annotations" / "instances_val2017.json", coco_mini / "val2017")
    coco: COCO = ds.api
    assert ds.categories == sorted(coco.getCatIds()) and len(ds.categories) == 80
    item = ds[3]
    k = len(item["ann_ids"])
    h, w = item["image"].shape[-2:]
    assert item["image"].dtype == torch.uint8 and item["image"].shape[0] == 3
    assert item["masks"].shape == (k, h, w) and item["masks"].dtype == torch.bool
    assert item["boxes"].shape == (k, 4) and item["labels"].dtype == torch.int64
    for ann_id, label, box in zip(item["ann_ids"], item["labels"], item["boxes"], strict=True):
        ann = coco.anns[ann_id]
        assert not ann["iscrowd"]
        assert ds.categories[int(label)] == ann["category_id"]
        x, y, bw, bh = ann["bbox"]
        assert box.tolist() == pytest.approx([x, y, x + bw, y + bh], abs=1.5)
    crowd = [a for a in coco.anns.values() if a["iscrowd"]]
    with_crowd = InstanceDataset(
        coco_mini / "annotations" / "instances_val2017.json", coco_mini / "val2017", skip_crowd=False
    )
    kept = {a for i in range(len(with_crowd)) for a in with_crowd.instances(i)[1]}
    assert {a["id"] for a in crowd} <= kept
    assert not {a["id"] for a in crowd} & {a for i in range(len(ds)) for a in ds.instances(i)[1]}


@pytest.mark.realdata
def test_lvis_sample_resolves_coco_named_images(lvis_val_100: Path):
    with pytest.raises(FileNotFoundError, match="missing"):
        InstanceDataset(lvis_val_100 / "lvis_val_100.json", lvis_val_100 / "images", format="lvis")
    ds = InstanceDataset(
        lvis_val_100 / "lvis_val_100.json", lvis_val_100 / "images", format="lvis", skip_missing_images=True
    )
    assert len(ds) == 7
    assert sum(len(ds[i]["ann_ids"]) for i in range(len(ds))) == 52
    item = ds[0]
    assert item["masks"].shape[1:] == item["image"].shape[1:]
    assert int(item["labels"].max()) < len(ds.categories) == 1230


def test_missing_files_and_bad_options_fail_early(tmp_path: Path, synthetic_split: Path):
    with pytest.raises(FileNotFoundError, match="annotation file"):
        InstanceDataset(tmp_path / "none.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder"):
        InstanceDataset(synthetic_split / "annotations.json", tmp_path / "none")
    with pytest.raises(ValueError, match="format"):
        dataset_of(synthetic_split, format="voc")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        InstanceDataset(bad, synthetic_split / "images")
    bad.write_text('{"images": []}')
    with pytest.raises(ValueError, match="not a COCO annotation file"):
        InstanceDataset(bad, synthetic_split / "images")
    with pytest.raises(ValueError, match="no split"):
        build_dataset({"name": "x", "splits": {}}, "val")


def test_concat_keeps_label_blocks_apart(synthetic_split: Path):
    split = {
        "images": str(synthetic_split / "images"),
        "annotations": str(synthetic_split / "annotations.json"),
    }
    both = build_dataset({"name": "two", "splits": {"train": [split, split]}}, "train")
    assert isinstance(both, ConcatInstanceDataset) and len(both) == 24
    assert torch.equal(both[12]["labels"], both[0]["labels"] + len(CATEGORIES))
    assert len(both.categories) == len(both.category_names) == 2 * len(CATEGORIES)
    with pytest.raises(ValueError, match="single-source"):
        simulate_split(both)


def test_lvis_images_resolve_from_coco_url(tmp_path: Path):
    (tmp_path / "train2017").mkdir()
    (tmp_path / "train2017" / "000000000009.jpg").touch()
    (tmp_path / "000000000025.jpg").touch()
    url = "http://images.cocodataset.org/{}/{}"
    nested = image_path(tmp_path, {"coco_url": url.format("train2017", "000000000009.jpg")})
    assert nested == tmp_path / "train2017" / "000000000009.jpg"
    flat = image_path(tmp_path, {"coco_url": url.format("val2017", "000000000025.jpg")})
    assert flat == tmp_path / "000000000025.jpg"
    assert image_path(tmp_path, {"file_name": "a.jpg"}) == tmp_path / "a.jpg"


# --- transforms -----------------------------------------------------------------------------------


def test_resize_flip_and_jitter_keep_masks_boxes_and_taps_consistent(synthetic_split: Path):
    item = dataset_of(synthetic_split)[1]
    k = len(item["ann_ids"])
    taps = torch.tensor([[m.nonzero()[0][1], m.nonzero()[0][0]] for m in item["masks"]], dtype=torch.float32)
    item = {**item, "taps": taps, "tap_instance": torch.arange(k)}
    torch.manual_seed(0)
    out = InstanceTransform(short_side=192, max_side=200, flip=1.0, jitter=0.3)(item)
    assert out["image"].shape == (3, 150, 200)  # short side capped by the long side
    assert out["masks"].shape[1:] == (150, 200) and out["masks"].dtype == torch.bool
    expected = torch.nn.functional.interpolate(item["masks"][None].float(), size=(150, 200), mode="nearest")[
        0
    ]
    assert torch.equal(out["masks"], expected.flip(-1).bool()[out["masks"].flatten(1).any(1)])
    for mask, box in zip(out["masks"], out["boxes"], strict=True):
        ys, xs = mask.nonzero(as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    for (x, y), owner in zip(out["taps"].tolist(), out["tap_instance"].tolist(), strict=True):
        assert out["masks"][owner, y, x]
    assert len(out["ann_ids"]) == len(out["labels"]) == out["masks"].shape[0]


def test_instances_that_vanish_are_dropped_with_their_taps():
    masks = torch.zeros((2, 100, 100), dtype=torch.bool)
    masks[0, 10:60, 10:60] = True
    masks[1, 81, 81] = True  # one pixel that nearest sampling at a quarter of the size skips
    item = {
        "image": torch.zeros((3, 100, 100), dtype=torch.uint8),
        "masks": masks,
        "labels": torch.tensor([0, 1]),
        "ann_ids": [7, 8],
        "taps": torch.tensor([[30.0, 30.0], [81.0, 81.0]]),
        "tap_instance": torch.tensor([0, 1]),
    }
    out = InstanceTransform(short_side=25)(item)
    assert out["masks"].shape == (1, 25, 25)
    assert out["ann_ids"] == [7] and out["labels"].tolist() == [0]
    assert out["tap_instance"].tolist() == [0] and out["taps"].shape == (1, 2)
    assert all(
        out["masks"][o, y, x]
        for (x, y), o in zip(out["taps"].tolist(), out["tap_instance"].tolist(), strict=True)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"short_side": 0}, "short_side"),
        ({"short_side": 100, "max_side": 50}, "max_side"),
        ({"short_side": 9, "flip": 2}, "flip"),
    ],
)
def test_bad_transform_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InstanceTransform(**kwargs)


# --- clicks file and prepare ------------------------------------------------------------------------


def test_clicks_file_round_trip_and_subset_independence(tmp_path: Path, synthetic_split: Path):
    ds = dataset_of(synthetic_split)
    rows, summary = simulate_split(ds, seed=1)
    path = write_clicks(rows, summary, tmp_path / "val.csv")
    assert path.read_text().splitlines()[0] == ",".join(HEADER)
    taps, centers = read_clicks(path), read_centers(path)
    assert set(taps) == set(centers) and len(taps) == summary["instances"]
    assert json.loads(path.with_suffix(".json").read_text())["band_taps"] == sum(map(len, taps.values()))
    image_id, ann_ids, masks, _ = ds.instances(5)
    for ann_id, mask in zip(ann_ids, masks, strict=True):
        assert all(mask[t.y, t.x] for t in taps[ann_id])
        assert mask[centers[ann_id][1], centers[ann_id][0]]
    subset = torch.utils.data.Subset(ds, [5])
    subset.instances = lambda i: ds.instances(5)
    alone, _ = simulate_split(subset, seed=1)
    assert [r for r in rows if r[0] == image_id] == alone  # seeds mix in the ann id, not the order


def test_clicks_file_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="dvc repro clicks"):
        read_clicks(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a clicks file"):
        read_clicks(bad)
    bad.write_text(",".join(HEADER) + "\n1,2,band,zero,3,4\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2"):
        read_clicks(bad)


def test_prepare_generates_synthetic_and_summarizes(tmp_path: Path):
    root = tmp_path / "synthetic"
    data = {
        "name": "synthetic",
        "root": str(root),
        "prepared": str(root),
        "splits": {
            s: {"images": str(root / s / "images"), "annotations": str(root / s / "annotations.json")}
            for s in ("train", "val")
        },
        "synthetic": {"seed": 0, "image_size": [64, 80], "counts": {"train": 4, "val": 2}, "workers": 1},
    }
    summary = prepare(data, log=lambda _: None)
    assert summary["splits"]["train"]["images"] == 4 and summary["splits"]["val"]["images"] == 2
    assert json.loads((root / "summary.json").read_text())["splits"] == summary["splits"]
    assert dataset_of(root / "train")[0]["image"].shape == (3, 64, 80)
    # Training on it with other generator settings is refused, naming the difference.
    from tracenet.data.datamodule import TraceNetDataModule

    other = {**data, "synthetic": {**data["synthetic"], "object_texture": "flat"}}
    module = TraceNetDataModule(data=other, model={}, batch_size=2)
    with pytest.raises(ValueError, match="object_texture: 'textured' there, 'flat' asked"):
        module.prepare_data()


def test_prepare_reports_missing_downloads(tmp_path: Path):
    data = {
        "name": "coco",
        "prepared": str(tmp_path / "prepared"),
        "splits": {"val": {"images": str(tmp_path / "val2017"), "annotations": str(tmp_path / "a.json")}},
    }
    with pytest.raises(FileNotFoundError, match="annotation file"):
        prepare(data, log=lambda _: None)
    assert not (tmp_path / "prepared").exists()
