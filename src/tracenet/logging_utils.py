"""Loggers for training: CSV always works; W&B is offline by default and never waits on the network.

W&B in offline mode still tries to reach its servers for error reports; with no network
that can stall a run, so WANDB_ERROR_REPORTING=false is set before wandb is imported.
The environment's WANDB_MODE (e.g. ``disabled`` in tests) wins over the config's mode,
as in wandb itself; ``logger.wandb.mode=online`` streams to the server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WANDB_MODES = ("offline", "online", "disabled")
KNOWN_LOGGERS = ("csv", "wandb")


def quiet_wandb_env() -> None:
    """Environment that keeps wandb from phoning home unless the user asked for it."""
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")


def wandb_mode(configured: str) -> str:
    """The mode a run uses: WANDB_MODE from the environment if set, else the configured one."""
    mode = os.environ.get("WANDB_MODE") or configured
    if mode == "dryrun":  # wandb's old name for offline
        mode = "offline"
    if mode not in WANDB_MODES:
        raise ValueError(
            f"W&B mode must be one of {WANDB_MODES}, got {mode!r} (logger.wandb.mode / WANDB_MODE)"
        )
    return mode


def build_loggers(cfg: Mapping[str, Any] | None, out_dir: Path, run_name: str) -> list:
    """Lightning loggers from the ``logger`` config group (a mapping name -> options).

    Logs land in ``out_dir`` (the run's own folder), whatever the options say about paths.
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(KNOWN_LOGGERS))
    if unknown:
        raise ValueError(f"unknown loggers {unknown} in the logger config; known: {list(KNOWN_LOGGERS)}")
    loggers = []
    if cfg.get("csv") is not None:
        from lightning.pytorch.loggers import CSVLogger

        # One version_N folder per (re)start: a resumed run must not overwrite the earlier metrics.
        loggers.append(CSVLogger(save_dir=str(out_dir), name="csv", **dict(cfg["csv"])))
    if cfg.get("wandb") is not None:
        loggers.append(_wandb_logger(dict(cfg["wandb"]), out_dir, run_name))
    return loggers


def _wandb_logger(options: dict, out_dir: Path, run_name: str):
    quiet_wandb_env()
    from lightning.pytorch.loggers import WandbLogger

    mode = wandb_mode(options.pop("mode", "offline"))
    if options.get("log_model") and mode != "online":
        raise ValueError("logger.wandb.log_model needs mode=online (offline runs cannot upload artifacts)")
    (out_dir / "wandb").mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        save_dir=str(out_dir),
        name=options.pop("name", None) or run_name,
        mode=mode,
        settings=_settings(),
        **options,
    )


def _settings():
    import wandb

    # No console capture threads, no git/system probes: nothing that can block on a slow host.
    return wandb.Settings(console="off", x_disable_stats=True, disable_git=True)
