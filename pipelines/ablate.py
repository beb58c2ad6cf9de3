"""DVC stage `ablate`: TraceNet vs FullNet on the same checkpoint and taps.

Reads params.yaml (`evaluation`, `evaluation.ablation`, `data`) and the clicks file; writes
`<evaluation.ablation.out_dir>/`: metrics.json, plots/accuracy_vs_macs.json, report.md.
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

# Both modes compute the same function: any larger gap is an RFT or decode bug.
MAX_MIOU_DIFF = 1e-3
MIN_MASK_IOU = 0.999


def main() -> int:
    from tracenet.checkpoints import load_model
    from tracenet.cli import UserError
    from tracenet.config import load_params
    from tracenet.metrics.stage import ablate_split, open_split

    try:
        params = load_params()
        ev, ab = params.evaluation, params.evaluation.ablation
        model = load_model(ev.checkpoint)
        split = open_split(OmegaConf.to_container(params.data), ev.split, ev.clicks, ab.max_images)
        summary = ablate_split(
            model, split, ab.out_dir, max_images=ab.max_images, taps_per_image=ab.taps_per_image
        )
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"ablate: error: {err}", file=sys.stderr)
        return 2
    m, ex = summary["modes"], summary["trace_vs_full"]
    exact = all(
        summary[k]["miou_t_diff"] <= MAX_MIOU_DIFF and summary[k]["min_mask_iou"] >= MIN_MASK_IOU
        for k in ("trace_vs_full", "trace_session_vs_full")
    )
    print(
        f"ablate: {m['full']['taps']} taps; MACs trace/full {ex['macs_ratio']:.3f}, latency trace/full "
        f"{ex['latency_ratio']:.3f}, max head diff {ex['max_head_diff']:.2e}, min mask IoU "
        f"{ex['min_mask_iou']:.4f} -> {ab.out_dir}"
    )
    if not exact:
        print(
            f"ablate: error: trace mode does not reproduce FullNet (mIoU-T diff > {MAX_MIOU_DIFF} or a "
            f"mask IoU < {MIN_MASK_IOU}); see {ab.out_dir}/report.md",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
