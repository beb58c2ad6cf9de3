"""The data stage scripts end to end (download -> prepare -> clicks) on a tiny synthetic
config, run the way DVC runs them: from a folder holding params.yaml."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tracenet.config import compose
from tracenet.data.clicks_file import read_centers, read_clicks
from tracenet.data.coco import build_dataset

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def stage(name: str):
    return runpy.run_path(str(PIPELINES / f"{name}.py"))["main"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    cfg = compose(
        [
            f"paths.data_root={tmp_path / 'data'}",
            f"paths.out_root={tmp_path / 'out'}",
            "data.synthetic.counts.train=3",
            "data.synthetic.counts.val=2",
            "data.synthetic.image_size=[64,96]",
            "data.synthetic.workers=1",
        ]
    )
    (tmp_path / "params.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_download_prepare_clicks_on_synthetic(project: Path, capsys):
    assert stage("download")() == 0
    assert "nothing to download" in capsys.readouterr().out
    assert json.loads((project / "data" / "downloads" / "synthetic.json").read_text())["sources"] == {}
    assert stage("prepare")() == 0
    params = OmegaConf.load(project / "params.yaml")
    summary = json.loads((Path(params.data.root) / "summary.json").read_text())
    assert summary["splits"]["train"]["images"] == 3 and summary["splits"]["val"]["images"] == 2
    assert stage("clicks")() == 0
    for split in ("train", "val"):
        path = project / "out" / "clicks" / f"{split}.csv"
        taps, centers = read_clicks(path), read_centers(path)
        dataset = build_dataset(OmegaConf.to_container(params.data), split)
        ann_ids = {a for i in range(len(dataset)) for a in dataset.instances(i)[1]}
        assert set(taps) == set(centers) == ann_ids
        assert all(0 <= t.band < 5 for ts in taps.values() for t in ts)


def test_clicks_before_prepare_fails_with_a_clear_message(project: Path, capsys):
    assert stage("clicks")() == 1
    assert "annotation file" in capsys.readouterr().err
