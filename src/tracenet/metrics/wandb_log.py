"""W&B tables and images of an evaluation, through the project's W&B logger (offline by
default, never waiting on the network; see tracenet.logging_utils)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tracenet.metrics.report import band_rows, category_rows


def _table(logger, key: str, rows: Sequence[dict]) -> None:
    columns = list(rows[0])
    logger.log_table(key=key, columns=columns, data=[[r[c] for c in columns] for r in rows])


def log_evaluation(
    wandb_options: Mapping, out_dir: str | Path, run_name: str, summary: dict, overlays: Sequence[Path]
) -> None:
    """Overall metrics, per-band and per-category tables and the overlay images as one W&B run."""
    from tracenet.logging_utils import build_loggers

    (logger,) = build_loggers({"wandb": dict(wandb_options)}, Path(out_dir), run_name)
    o = summary["overall"]
    logger.log_metrics({f"eval/{k}": float(v) for k, v in o.items()})
    _table(logger, "eval/per_band", band_rows(summary))
    _table(logger, "eval/per_category", category_rows(summary))
    if overlays:
        logger.log_image(
            key="eval/overlays", images=[str(p) for p in overlays], caption=[p.stem for p in overlays]
        )
    logger.experiment.finish()
