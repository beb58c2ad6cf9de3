"""The Hydra training app end to end on a tiny synthetic set: errors, resume, sweeps, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

TINY = [
    "experiment=default_cpu",
    "data.synthetic.counts.train=24",
    "data.synthetic.counts.val=3",
    "train.val_images=3",
    "train.batch_size=4",
    "train.checkpoint_every_n_steps=1",
    "train.val.trace_taps=1",
    "train.val.overlays=0",
    "model.fpn_channels=16",
    "model.mask_branch_channels=16",
    "trainer.max_epochs=2",
    "trainer.max_time=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
]


def _train(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "tracenet.train", *args], env=env, capture_output=True, text=True, **kwargs
    )


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    """One generated tiny synthetic set for the whole module (the first run generates it)."""
    return str(tmp_path_factory.mktemp("data"))


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_missing_dataset_is_one_clear_line(tmp_path):
    result = _train(
        ["data=coco", f"paths.data_root={tmp_path}/nowhere", f"hydra.run.dir={tmp_path}/run"], timeout=300
    )
    assert result.returncode == 2
    assert "FileNotFoundError: coco train split not found" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_failing_sweep_run_is_logged_and_the_sweep_goes_on(tmp_path):
    """Both runs fail (no dataset): each says why, and the second still runs (an Optuna sweeper
    records the NaN as a failed trial)."""
    args = [
        "-m",
        "data=coco,lvis",
        f"paths.data_root={tmp_path}/nowhere",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    result = _train(args, timeout=300)
    out = result.stderr + result.stdout
    assert result.returncode == 0, out[-3000:]
    assert "coco train split not found" in out and "lvis train split not found" in out
    assert "Traceback" not in result.stderr


def test_bad_config_key_is_named(tmp_path):
    result = _train(["train.optim.nmae=sgd", f"hydra.run.dir={tmp_path}/run"], timeout=300)
    assert result.returncode != 0
    assert "nmae" in result.stderr


@pytest.mark.slow
def test_resume_after_kill_9_matches_an_uninterrupted_run(tmp_path, data_root):
    common = [*TINY, f"paths.data_root={data_root}"]
    straight = tmp_path / "straight"
    done = _train([*common, f"hydra.run.dir={straight}"], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    run = tmp_path / "killed"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "tracenet.train", *common, f"hydra.run.dir={run}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step_at_kill = torch.load(last, weights_only=True)["global_step"]  # intact despite the kill
    assert step_at_kill < _summary(straight)["global_step"]

    resumed = _train([*common, f"hydra.run.dir={run}", "ckpt_path=last"], timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr + resumed.stdout
    a, b = _summary(straight), _summary(run)
    assert b["global_step"] == a["global_step"]
    # Same seed; data order and augmentation after the restart differ, so equal within noise.
    assert abs(a["metrics"]["val/miou_t"] - b["metrics"]["val/miou_t"]) < 0.1
    from tracenet.models.tracenet import TraceNet

    TraceNet.from_checkpoint(run / "model.pt")  # the exported inference checkpoint loads


@pytest.mark.slow
def test_multirun_sweep_gives_each_run_its_own_folder(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    args = [*TINY, "trainer.max_epochs=1", f"paths.data_root={data_root}", f"hydra.sweep.dir={sweep}"]
    result = _train(["-m", *args, "model=tracenet_r18,tracenet_mnv3"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 2
    backbones = {OmegaConf.load(p.parent / ".hydra" / "config.yaml").model.backbone for p in summaries}
    assert backbones == {"resnet18", "mobilenet_v3_large"}
    for p in summaries:
        assert "val/miou_t" in json.loads(p.read_text())["metrics"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree(tmp_path, data_root):
    run = tmp_path / "ddp"
    args = [*TINY, "trainer.max_epochs=1", f"paths.data_root={data_root}", f"hydra.run.dir={run}"]
    args += ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]
    result = _train(args, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(run)
    assert summary["world_size"] == 2
    first, second = summary["rank_checksums"]
    assert first == second, "DDP ranks must end with identical weights"
    assert summary["global_step"] > 0
