"""W&B must stay offline by default and never block a run when the network is unreachable."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tracenet.logging_utils import build_loggers, wandb_mode

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from tracenet.logging_utils import build_loggers
    csv, wb = build_loggers({"csv": {}, "wandb": {"project": "t", "mode": "offline"}}, Path(sys.argv[1]), "net")
    wb.log_hyperparams({"model": {"backbone": "resnet18"}})
    wb.log_metrics({"val/miou_t": 0.5}, step=1)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:10, 4:10] = 1
    wb.log_image("val/overlays", images=[np.zeros((32, 32, 3), np.uint8)], step=1,
                 masks=[{"ground_truth": {"mask_data": mask}}])
    import wandb
    wandb.finish()
    """
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


@pytest.mark.slow
def test_offline_wandb_does_not_block_without_network(tmp_path):
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {**os.environ, "WANDB_MODE": "offline", "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy}
    env.pop("WANDB_ERROR_REPORTING", None)  # the code itself must turn error reports off
    # Bound: wandb's network retries last minutes; a run that waits on them fails here.
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, check=True, timeout=120)
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "the offline run must land in the run's own folder"


def test_environment_mode_wins_and_bad_modes_are_named(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("online") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode("offline") == "offline"
    with pytest.raises(ValueError, match=r"logger\.wandb\.mode"):
        wandb_mode("sometimes")


def test_unknown_logger_and_offline_artifacts_are_rejected(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown loggers"):
        build_loggers({"tensorboard": {}}, tmp_path, "run")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(ValueError, match="log_model needs mode=online"):
        build_loggers({"wandb": {"mode": "offline", "log_model": True}}, tmp_path, "run")


def test_no_logger_config_means_no_loggers(tmp_path):
    assert build_loggers({}, tmp_path, "run") == []
    assert build_loggers(None, tmp_path, "run") == []


def test_a_restarted_run_keeps_the_earlier_csv_metrics(tmp_path):
    for step in range(2):  # first start, then a resume into the same run folder
        (csv,) = build_loggers({"csv": {}}, tmp_path, "run")
        csv.log_metrics({"train/loss": 1.0 + step}, step=step)
        csv.save()
    files = sorted(tmp_path.glob("csv/*/metrics.csv"))
    assert len(files) == 2
    assert "1.0" in files[0].read_text() and "2.0" in files[1].read_text()
