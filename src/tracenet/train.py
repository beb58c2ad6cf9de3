"""Hydra training app: ``python -m tracenet.train [experiment=default_cpu] [key=value ...]``.

Each run writes into its own folder (Hydra's run/sweep dir): ``checkpoints/last.ckpt`` and
``checkpoints/best.ckpt`` (Lightning, full training state), ``model.pt`` (the best weights in
the ``TraceNet.from_checkpoint`` format), ``summary.json``, and the loggers' files. Resume an
interrupted run with the same folder and ``ckpt_path=last``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from tracenet.atomic import write_json
from tracenet.config import CONF_DIR

log = logging.getLogger("tracenet.train")


def train(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train with the composed config, writing everything under ``out_dir``; returns the summary."""
    from tracenet.logging_utils import quiet_wandb_env

    quiet_wandb_env()
    import lightning as L
    import torch

    from tracenet.checkpointing import (
        AtomicCheckpointIO,
        checkpoint_callbacks,
        export_model,
        resolve_ckpt_path,
    )
    from tracenet.data.datamodule import TraceNetDataModule
    from tracenet.lit import TraceNetModule
    from tracenet.logging_utils import build_loggers

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if cfg.train.get("threads"):
        torch.set_num_threads(int(cfg.train.threads))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    datamodule = TraceNetDataModule(
        data=resolved["data"],
        model=resolved["model"],
        batch_size=int(cfg.train.batch_size),
        num_workers=int(cfg.train.num_workers),
        val_images=cfg.train.get("val_images"),
        # The clicks stage's protocol and seed: validation scores the taps evaluation will use.
        seed=int(cfg.clicks.seed),
        n_bands=int(cfg.clicks.n_bands),
        per_band=int(cfg.clicks.per_band),
    )
    datamodule.check_available()  # a missing dataset fails here, before any model is built
    module = TraceNetModule(
        model=resolved["model"],
        optim=resolved["train"]["optim"],
        val=resolved["train"]["val"],
    )
    loggers = build_loggers(resolved.get("logger"), out_dir, run_name=out_dir.name)
    for logger in loggers:
        logger.log_hyperparams(resolved)
    ckpt_dir = out_dir / "checkpoints"
    trainer = L.Trainer(
        **resolved["trainer"],
        default_root_dir=str(out_dir),
        logger=loggers or False,
        callbacks=checkpoint_callbacks(ckpt_dir, int(cfg.train.checkpoint_every_n_steps)),
        plugins=[AtomicCheckpointIO()],
    )
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), ckpt_dir)
    if cfg.get("ckpt_path") == "last":
        log.info(
            f"resuming from {ckpt_path}" if ckpt_path else f"no {ckpt_dir}/last.ckpt yet: starting fresh"
        )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    finally:
        _finish_wandb(loggers)

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    summary = {
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
        "best_miou_t": _float_or_none(trainer.checkpoint_callback.best_model_score),
        "best_ckpt": best,
        "last_ckpt": str(ckpt_dir / "last.ckpt"),
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "world_size": int(trainer.world_size),
        "rank_checksums": module.rank_checksums,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    if trainer.is_global_zero:
        source = best or summary["last_ckpt"]
        summary["model"] = str(export_model(source, out_dir / "model.pt"))
        write_json(out_dir / "summary.json", summary)
        log.info("summary: %s", json.dumps(summary["metrics"]))
    return summary


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)


def _finish_wandb(loggers: list) -> None:
    """Close the W&B run so the next run of a sweep starts its own."""
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns validation mIoU-T (what an Optuna sweeper maximizes)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from tracenet.lit import NonFiniteLossError

    hydra_cfg = HydraConfig.get()
    try:
        summary = train(cfg, hydra_cfg.runtime.output_dir)
    except (FileNotFoundError, ValueError, TypeError, NonFiniteLossError) as err:
        log.error("%s: %s", type(err).__name__, err)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # One bad point of a sweep (say a diverging lr) must not end the others: the
            # sweeper records NaN as a failed trial and goes on.
            return float("nan")
        sys.exit(2)
    return summary["metrics"].get("val/miou_t")


if __name__ == "__main__":
    main()
