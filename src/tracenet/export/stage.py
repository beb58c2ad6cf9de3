"""The export and profile DVC stages: parameters from params.yaml's ``export`` block."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tracenet.export.build import check_formats, export_model
from tracenet.export.files import write_json
from tracenet.models.tracenet import TraceNet

log = logging.getLogger(__name__)
SEED = 0  # random weights: torch.manual_seed before building each backbone


def models(p) -> list[tuple[TraceNet, dict]]:
    """The checkpoint's model, or the listed backbones with random weights, each with the
    description of its weights that the artifacts' metadata carries.

    Random weights (latency and the artifacts' agreement with PyTorch do not depend on training)
    get their BatchNorm statistics recalibrated on a few images (``tracenet.export.calibrate``),
    so that the mask logits have the scale of a trained model's rather than ~1e-8; a
    checkpoint is exported untouched."""
    from tracenet.export.calibrate import calibrate_random_weights

    if p.checkpoint:
        path = Path(p.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"export.checkpoint {path} not found: train first or set it to null")
        return [(TraceNet.from_checkpoint(path), {"source": f"checkpoint {path}", "batchnorm": "as trained"})]
    if not p.backbones:
        raise ValueError("export.backbones is empty and export.checkpoint is null: nothing to export")
    data = p.verify.data if "verify" in p else None
    out = []
    for b in p.backbones:
        torch.manual_seed(SEED)  # the same random weights on every run: artifacts are reproducible
        model = TraceNet.build(backbone=b)
        out.append((model, calibrate_random_weights(model, int(p.input_size), data, SEED)))
    return out


def run_export(p) -> dict:
    """Export every model, then verify its artifacts on coco_mini taps when the data is there."""
    from tracenet.export.verify import coco_samples, fallback_rates, verify, window_cost

    formats = check_formats(p.formats)
    out = Path(p.out_dir)
    data = Path(p.verify.data)
    samples = coco_samples(data, int(p.verify.max_images)) if data.is_dir() else None
    if samples is None:
        log.warning("verify data %s is absent: artifacts are not verified", data)
    size, window = int(p.input_size), p.get("mask_window")
    window = None if window is None else int(window)
    windowed = samples is not None and window is not None and window < size // 8
    report, rates = {}, {}
    for model, weights in models(p):
        written = export_model(model, size, out, formats, mask_window=window, weights=weights)
        log.info("exported %s", ", ".join(w.name for w in written))
        if samples is not None:
            report.update(verify(model, written, samples))
        if windowed:  # how often the host falls back to FullNet on coco_mini val taps
            rates[model.cfg.backbone] = fallback_rates(data, model, size, window)
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in report.items()}
    if windowed:  # what the window clips, and how often that costs a FullNet call
        summary["window_cost"] = window_cost(data, model.cfg, size, window)
        summary["fallback_rate"] = rates
    write_json(out / "verify.json", {"summary": summary, "artifacts": report})
    return summary


def run_profile(p) -> tuple[Path, Path]:
    from tracenet.export.profile import profile_folder

    pr = p.profile
    return profile_folder(p.out_dir, pr.out_dir, tuple(pr.threads), int(pr.runs), int(pr.warmup))
