"""Checkpoint policy pieces: atomic writes, resume lookup, export to the inference format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tracenet.checkpointing import AtomicCheckpointIO, export_model, resolve_ckpt_path
from tracenet.optim import OptimConfig, lr_factor


def test_atomic_write_keeps_the_old_file_when_saving_fails(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - any pickling error will do
        io.save_checkpoint({"step": 2, "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "no temporary file left behind"


def test_resume_lookup(tmp_path):
    assert resolve_ckpt_path(None, tmp_path) is None
    assert resolve_ckpt_path("last", tmp_path) is None  # nothing yet: a fresh start
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert resolve_ckpt_path("last", tmp_path) == str(tmp_path / "last.ckpt")
    with pytest.raises(FileNotFoundError, match="ckpt_path=last"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), tmp_path)


def test_export_writes_what_from_checkpoint_reads(tmp_path):
    from tracenet.models.tracenet import TraceNet

    options = {"backbone": "resnet18", "pretrained": None, "fpn_channels": 32, "mask_branch_channels": 16}
    model = TraceNet.build(**options)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": {"model": options}, "state_dict": state}, tmp_path / "best.ckpt")
    loaded = TraceNet.from_checkpoint(export_model(tmp_path / "best.ckpt", tmp_path / "model.pt"))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert Path(tmp_path / "model.pt").is_file()


def test_warmup_then_steps():
    cfg = OptimConfig(lr=0.01, warmup_iters=10, warmup_factor=0.001, milestones=(60, 80), gamma=0.1)
    assert lr_factor(0, cfg, 90) == pytest.approx(0.001)
    assert lr_factor(5, cfg, 90) == pytest.approx(0.5 * 0.001 + 0.5)
    assert lr_factor(10, cfg, 90) == 1.0
    assert lr_factor(60, cfg, 90) == pytest.approx(0.1)
    assert lr_factor(85, cfg, 90) == pytest.approx(0.01)
    cos = OptimConfig(schedule="cosine", warmup_iters=0)
    assert lr_factor(0, cos, 100) == 1.0 and lr_factor(50, cos, 100) == pytest.approx(0.5)
    assert lr_factor(100, cos, 100) == pytest.approx(0.0)


def test_bad_optimizer_settings_are_named():
    with pytest.raises(ValueError, match=r"train\.optim\.name"):
        OptimConfig(name="adam")
    with pytest.raises(ValueError, match="milestones"):
        OptimConfig(milestones=(80, 60))
