"""pipelines/evaluate.py and pipelines/ablate.py end to end on a tiny COCO-format split."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from test_evaluate import small_model  # same tiny random model as the evaluator tests

ROOT = Path(__file__).resolve().parents[1]


def _stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A working folder with params.yaml, a checkpoint and a 2-image COCO split."""
    root = tmp_path_factory.mktemp("project")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    polys = [[10, 5, 40, 5, 40, 30, 10, 30], [50, 8, 62, 8, 62, 40, 50, 40], [25, 32, 35, 38, 25, 44, 15, 38]]
    images, anns = [], []
    for image_id in (1, 2):
        name = f"{image_id}.png"
        Image.fromarray(rng.integers(0, 256, size=(45, 67, 3), dtype=np.uint8)).save(root / "images" / name)
        images.append({"id": image_id, "file_name": name, "height": 45, "width": 67})
        for k, poly in enumerate(polys):
            xs, ys = poly[0::2], poly[1::2]
            anns.append(
                {
                    "id": 10 * image_id + k,
                    "image_id": image_id,
                    "category_id": 3 + 4 * (k % 2),
                    "iscrowd": 0,
                    "segmentation": [poly],
                    "area": 100.0,
                    "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                }
            )
    cats = [{"id": 3, "name": "car"}, {"id": 7, "name": "dog"}]
    (root / "val.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    small_model().save_checkpoint(root / "model.pt")
    from tracenet.data.clicks_file import simulate_split, write_clicks
    from tracenet.data.coco import InstanceDataset

    write_clicks(
        *simulate_split(InstanceDataset(root / "val.json", root / "images"), seed=0), root / "clicks.csv"
    )
    params = {
        "seed": 0,
        "data": {
            "name": "tiny",
            "format": "coco",
            "splits": {"val": {"annotations": "val.json", "images": "images"}},
        },
        "trainer": {"accelerator": "cpu", "devices": 1},
        "logger": {"csv": None},
        "evaluation": {
            "checkpoint": "model.pt",
            "split": "val",
            "clicks": "clicks.csv",
            "tau": 0.7,
            "max_images": None,
            "chunk": 64,
            "num_workers": 0,
            "out_dir": "out/eval",
            "ablation": {"max_images": 1, "taps_per_image": 2, "out_dir": "out/ablation"},
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_evaluate_stage_end_to_end(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert _stage("evaluate")() == 0
    assert "evaluate: 6 instances" in capsys.readouterr().out
    metrics = json.loads((project / "out/eval/metrics.json").read_text())
    # Every band tap of the clicks file (the paper's 25, fewer where a band is tiny).
    from tracenet.data.clicks_file import read_centers, read_clicks

    assert metrics["overall"]["taps"] == sum(len(t) for t in read_clicks("clicks.csv").values()) > 5 * 6
    assert len(read_centers("clicks.csv")) == metrics["overall"]["instances"]
    assert {r["name"] for r in metrics["per_category"].values()} == {"car", "dog"}
    assert len(list((project / "out/eval/overlays").glob("*.png"))) == 3


def test_missing_checkpoint_is_one_clear_line(project, monkeypatch, capsys, tmp_path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluation"]["checkpoint"] = "nowhere/model.pt"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert _stage("evaluate")() == 2
    assert _stage("ablate")() == 2
    err = capsys.readouterr().err
    assert "evaluate: error: checkpoint nowhere/model.pt does not exist" in err
    assert "ablate: error:" in err


@pytest.mark.slow
def test_ablate_stage_end_to_end(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert _stage("ablate")() == 0
    assert "ablate: 2 taps" in capsys.readouterr().out
    metrics = json.loads((project / "out/ablation/metrics.json").read_text())
    assert metrics["trace_vs_full"]["min_mask_iou"] >= 0.999
    assert (project / "out/ablation/plots/accuracy_vs_macs.json").is_file()


@pytest.mark.parametrize("name", ["evaluate", "ablate"])
def test_stage_script_runs_as_dvc_runs_it(name, tmp_path):
    """`python pipelines/<stage>.py` (the script's folder first on sys.path) from a folder
    without params.yaml: one clear error line, exit status 2."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / f"{name}.py")], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr[-500:]
    assert proc.stderr.strip().startswith(f"{name}: error: params.yaml not found")
