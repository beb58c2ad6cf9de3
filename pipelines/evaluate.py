"""DVC stage `evaluate`: mIoU-T, mTA and their breakdowns for the trained model on one split.

Reads params.yaml (`evaluation`, `data`, `trainer`, `logger`) and the clicks file; writes
`<evaluation.out_dir>/`: metrics.json, plots/per_band.json, plots/per_category.csv,
report.md, overlays/*.png (and a W&B run when the `wandb` logger is configured).
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf


def main() -> int:
    from tracenet.checkpoints import load_model
    from tracenet.cli import UserError
    from tracenet.config import load_params
    from tracenet.metrics.stage import evaluate_split, open_split

    try:
        params = load_params()
        ev = params.evaluation
        model = load_model(ev.checkpoint)
        split = open_split(OmegaConf.to_container(params.data), ev.split, ev.clicks, ev.max_images)
        summary, overlays = evaluate_split(
            model,
            split,
            ev.out_dir,
            tau=ev.tau,
            chunk=ev.chunk,
            num_workers=ev.num_workers,
            accelerator=params.trainer.accelerator,
            devices=params.trainer.devices,
        )
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 2
    wandb = (params.get("logger") or {}).get("wandb")
    if wandb is not None:
        from tracenet.metrics.wandb_log import log_evaluation

        log_evaluation(OmegaConf.to_container(wandb), ev.out_dir, f"evaluate-{ev.split}", summary, overlays)
    o = summary["overall"]
    print(
        f"evaluate: {o['instances']} instances, mIoU-T {o['miou_t']:.4f}, mTA {o['mta']:.4f}, "
        f"center mIoU {o['center_miou']:.4f} -> {ev.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
