"""LightningModule: TraceNet's losses for training; validation the way users run the model.

Validation evaluates every simulated tap with the fast evaluator (one dense forward per
image) for mIoU-T / mTA, runs a fixed sample of taps in trace mode to log the MACs a tap
costs and to raise an exactness alarm when trace != full, and keeps a few mask overlays for W&B.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from tracenet.data.clicks import center_click
from tracenet.metrics import miou_t, mta
from tracenet.metrics.loop import evaluate_item
from tracenet.models.tracenet import TraceNet
from tracenet.optim import OptimConfig, build_optimizer, lr_factor


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf; the message names the step and the batch."""


@dataclass(frozen=True)
class ValConfig:
    """The ``train.val`` config node."""

    trace_taps: int = 4  # images whose center tap also runs in trace mode (MACs + exactness)
    overlays: int = 4  # images whose center-tap mask is logged to W&B

    def __post_init__(self) -> None:
        if self.trace_taps < 0 or self.overlays < 0:
            raise ValueError("train.val.trace_taps and train.val.overlays must be >= 0")


class TraceNetModule(L.LightningModule):
    def __init__(self, model: dict[str, Any], optim: dict[str, Any], val: dict[str, Any]) -> None:
        super().__init__()
        # Plain dicts only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters()
        self.optim_cfg = OptimConfig(**optim)
        self.val_cfg = ValConfig(**val)
        self.model = TraceNet.build(**model)
        self.rank_checksums: list[list[float]] = []
        self._val_reset()

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.model.compute_loss(batch["images"], batch["targets"])
        self._check_finite(losses, batch, batch_idx)
        n = len(batch["targets"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"}, batch_size=n)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=n)
        return losses["loss"]

    def _check_finite(self, losses: dict[str, torch.Tensor], batch: dict, batch_idx: int) -> None:
        bad = not bool(torch.isfinite(losses["loss"]).item())
        # Every rank must stop together, or the others would hang in the next all-reduce.
        if self.trainer.strategy.reduce_boolean_decision(bad, all=False):
            terms = {k: float(v) for k, v in losses.items()}
            raise NonFiniteLossError(
                f"non-finite training loss at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}, image ids {list(batch.get('image_ids', []))}, rank {self.global_rank}): "
                f"{terms}. The weights before this step are in the last checkpoint; lower train.optim.lr, "
                "lengthen the warm-up or set trainer.gradient_clip_val, then resume with ckpt_path=last"
            )

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.optim_cfg)
        total = int(self.trainer.estimated_stepping_batches)
        if not 0 < total < math.inf:
            raise ValueError("set trainer.max_steps or trainer.max_epochs: the lr schedule needs a length")
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, self.optim_cfg, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_end(self) -> None:
        """Record every rank's parameter checksum; DDP ranks that disagree are a bug, not noise."""
        flat = torch.cat([p.detach().double().flatten() for p in self.model.parameters()])
        weights = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64, device=flat.device)
        local = torch.stack([flat.sum(), (flat * weights).sum()])
        gathered = self.all_gather(local).reshape(-1, 2).cpu()
        self.rank_checksums = gathered.tolist()
        if not torch.equal(gathered.min(0).values, gathered.max(0).values):
            raise RuntimeError(f"DDP ranks ended with different weights (checksums {self.rank_checksums})")

    # ------------------------------------------------------------------ validation
    def _val_reset(self) -> None:
        self._sums = {"miou_t": 0.0, "mta": 0.0, "instances": 0.0, "exact": 0.0, "traced": 0.0}
        self._sums.update(trace_macs=0.0, full_macs=0.0)
        self._overlays: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def on_validation_epoch_start(self) -> None:
        self._val_reset()

    def setup(self, stage: str) -> None:
        # Taps are simulated once per validation instance by the datamodule (fixed across epochs).
        self.val_taps = getattr(self.trainer.datamodule, "val_taps", None) if self._trainer else None

    def validation_step(self, batch: list[dict], batch_idx: int) -> None:
        """``batch``: dataset items (images differ in size); every tap of every instance is scored."""
        if self.val_taps is None:
            raise RuntimeError("validation needs the taps table of TraceNetDataModule (datamodule.val_taps)")
        for item in batch:
            for result in evaluate_item(self.model, item, self.val_taps, center_click):
                self._sums["miou_t"] += miou_t([result.tap_ious])
                self._sums["mta"] += mta([result.pixel_ious], weights=[result.pixel_counts])
                self._sums["instances"] += 1
            tapped = [k for k, a in enumerate(item["ann_ids"]) if int(a) in self.val_taps]
            if tapped and self._sums["traced"] < self.val_cfg.trace_taps:
                mask = np.asarray(item["masks"][tapped[0]], dtype=bool)
                self._trace_check(item["image"], center_click(mask))
            if tapped and len(self._overlays) < self.val_cfg.overlays and self.global_rank == 0:
                mask = np.asarray(item["masks"][tapped[0]], dtype=bool)
                pred = self.model.segment(item["image"], center_click(mask), mode="full").mask
                self._overlays.append((item["image"].permute(1, 2, 0).cpu().numpy(), mask, pred))

    def _trace_check(self, image: torch.Tensor, click: tuple[int, int]) -> None:
        """One tap in both modes: the MACs a user's tap costs, and whether trace == full."""
        trace = self.model.segment(image, click, mode="trace")
        full = self.model.segment(image, click, mode="full")
        same = trace.level == full.level and np.array_equal(trace.mask, full.mask)
        self._sums["exact"] += float(same)
        self._sums["traced"] += 1
        self._sums["trace_macs"] += trace.macs
        self._sums["full_macs"] += full.macs

    def on_validation_epoch_end(self) -> None:
        keys = list(self._sums)
        local = torch.tensor([self._sums[k] for k in keys], dtype=torch.float64, device=self.device)
        s = dict(zip(keys, self.trainer.strategy.reduce(local, reduce_op="sum").tolist(), strict=True))
        if s["instances"] == 0:
            raise ValueError("the validation set has no instances with taps: check the val split")
        metrics = {"val/miou_t": s["miou_t"] / s["instances"], "val/mta": s["mta"] / s["instances"]}
        if s["traced"]:
            metrics["val/trace_exact"] = s["exact"] / s["traced"]
            metrics["val/trace_macs_per_tap"] = s["trace_macs"] / s["traced"]
            metrics["val/trace_macs_ratio"] = s["trace_macs"] / s["full_macs"]
            if s["exact"] < s["traced"]:
                rank_zero_warn(
                    f"EXACTNESS ALARM: trace mode differs from full mode on {int(s['traced'] - s['exact'])} "
                    f"of {int(s['traced'])} sampled taps at step {self.global_step}"
                )
        self.log_dict(metrics, prog_bar=True, sync_dist=False, rank_zero_only=False)
        self._log_overlays()

    def _log_overlays(self) -> None:
        from lightning.pytorch.loggers import WandbLogger

        if not self._overlays:
            return
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                images, masks = [], []
                for img, gt, pred in self._overlays:
                    images.append(img)
                    masks.append(
                        {
                            "ground_truth": {"mask_data": gt.astype(np.uint8), "class_labels": {1: "object"}},
                            "prediction": {
                                "mask_data": pred.astype(np.uint8),
                                "class_labels": {1: "tap mask"},
                            },
                        }
                    )
                logger.log_image("val/overlays", images=images, step=self.global_step, masks=masks)
