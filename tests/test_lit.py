"""The LightningModule on tiny hand-made batches: NaN handling, checkpoints, optimizer wiring."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from tracenet.checkpointing import AtomicCheckpointIO, checkpoint_callbacks
from tracenet.data.datamodule import pad_batch
from tracenet.lit import NonFiniteLossError, TraceNetModule

TINY = {"backbone": "resnet18", "pretrained": None, "fpn_channels": 16, "mask_branch_channels": 16}
TINY |= {"min_size": 64, "max_size": 64, "assign": "mask"}
OPTIM = {"name": "adamw", "lr": 1e-3, "schedule": "constant", "warmup_iters": 0}


def _item(image_id: int, poison: bool = False) -> dict:
    image = torch.full((3, 64, 64), 40, dtype=torch.uint8)
    image[:, 16:48, 8:40] = 200
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 16:48, 8:40] = True
    item = {"image": image, "masks": masks, "boxes": torch.tensor([[8.0, 16.0, 40.0, 48.0]])}
    item |= {"labels": torch.zeros(1, dtype=torch.int64), "image_id": image_id, "ann_ids": [image_id]}
    item["poison"] = poison
    return item


def _collate(items: list[dict]) -> dict:
    batch = pad_batch(items)
    if any(it["poison"] for it in items):
        batch["images"][0, 0, 0, 0] = float("nan")
    return batch


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=checkpoint_callbacks(tmp_path / "checkpoints", every_n_steps=1),
        plugins=[AtomicCheckpointIO()],
        default_root_dir=tmp_path,
        **kwargs,
    )


@pytest.mark.slow
def test_nan_loss_stops_naming_step_and_batch_and_keeps_the_checkpoint(tmp_path):
    items = [_item(1), _item(2), _item(3), _item(4), _item(5, poison=True), _item(6)]
    loader = torch.utils.data.DataLoader(items, batch_size=2, collate_fn=_collate)
    module = TraceNetModule(model=TINY, optim=OPTIM, val={})
    with pytest.raises(NonFiniteLossError, match=r"global step 2 .*batch 2, image ids \[5, 6\]"):
        _trainer(tmp_path, max_epochs=1).fit(module, loader)
    last = tmp_path / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)  # the checkpoint format needs no unpickling of code
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
def test_training_steps_change_the_weights_and_follow_the_schedule(tmp_path):
    loader = torch.utils.data.DataLoader([_item(i) for i in range(4)], batch_size=2, collate_fn=_collate)
    optim = {"name": "sgd", "lr": 0.01, "schedule": "step", "warmup_iters": 2, "milestones": [1]}
    module = TraceNetModule(model=TINY, optim=optim, val={})
    before = [p.detach().clone() for p in module.model.parameters()]
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(module, loader)
    assert trainer.global_step == 2
    changed = sum(not torch.equal(a, b) for a, b in zip(before, module.model.parameters(), strict=True))
    assert changed > len(before) // 2
    # step 2: warm-up over (factor 1) times one milestone passed (gamma 0.1)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.001)
    assert module.rank_checksums and len(module.rank_checksums) == 1
    # Each level's head BatchNorm learned its own statistics (the towers' convs are shared).
    tower = module.model.dense.heads.cls_tower
    first = [norms[0].running_mean for norms in tower.norms]
    last = [norms[-1].running_mean for norms in tower.norms]
    assert all(torch.count_nonzero(m) > 0 for m in first + last)
    assert not all(torch.allclose(a, b) for a, b in zip(first, last, strict=True))
    backbone_bns = [m for m in module.model.dense.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert any(torch.count_nonzero(m.running_mean) > 0 for m in backbone_bns)


def test_bad_validation_settings_are_named():
    with pytest.raises(ValueError, match="trace_taps"):
        TraceNetModule(model=TINY, optim=OPTIM, val={"trace_taps": -1})
