"""Training checkpoints: atomic writes, last/best policy, resume lookup and model export.

Lightning checkpoints (``checkpoints/last.ckpt``, ``checkpoints/best.ckpt``) hold the whole
training state; ``model.pt`` next to them is the inference format of
``TraceNet.from_checkpoint`` (weights and build options only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tracenet.atomic import atomic_file

MONITOR = "val/miou_t"
LAST = "last"
BEST = "best"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file in the same folder, then ``os.replace``: a kill -9 mid-write
    leaves the previous checkpoint intact instead of a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())


def checkpoint_callbacks(dirpath: Path, every_n_steps: int) -> list[ModelCheckpoint]:
    """``last.ckpt`` every ``every_n_steps`` optimizer steps (and at each validation and at the
    end), ``best.ckpt`` whenever validation mIoU-T improves."""
    if every_n_steps < 1:
        raise ValueError(f"train.checkpoint_every_n_steps must be >= 1, got {every_n_steps}")
    best = ModelCheckpoint(
        dirpath=dirpath,
        filename=BEST,
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    periodic = ModelCheckpoint(
        dirpath=dirpath,
        save_top_k=0,
        save_last=True,
        every_n_train_steps=every_n_steps,
        enable_version_counter=False,
    )
    return [best, periodic]


def resolve_ckpt_path(spec: str | None, dirpath: Path) -> str | None:
    """``null`` (fresh start), ``last`` (this run folder's last.ckpt, if any) or a file path."""
    if spec is None:
        return None
    if spec == LAST:
        last = dirpath / f"{LAST}.ckpt"
        return str(last) if last.is_file() else None
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={spec!r} is not a file; pass ckpt_path=last to resume this run folder "
            "(hydra.run.dir=<the interrupted run's folder>) or a path to a .ckpt file"
        )
    return str(path)


def export_model(ckpt_path: str | Path, out_path: str | Path) -> Path:
    """Write the ``TraceNet.from_checkpoint`` format from a Lightning checkpoint (loaded with
    weights_only=True, so no pickled code runs)."""
    from tracenet.models.tracenet import TraceNet

    payload = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    options = dict(payload["hyper_parameters"]["model"])
    options.pop("pretrained", None)  # the weights below replace any pretrained backbone
    model = TraceNet.build(**options)
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return model.save_checkpoint(out_path)
