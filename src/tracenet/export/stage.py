"""The export and profile DVC stages: parameters from params.yaml's ``export`` block."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tracenet.export.build import check_formats, export_model
from tracenet.export.files import write_json
from tracenet.models.tracenet import TraceNet

log = logging.getLogger(__name__)


def models(p) -> list[TraceNet]:
    """The checkpoint's model, or the listed backbones with random weights (latency and the
    artifacts' agreement with PyTorch do not depend on the weights)."""
    if p.checkpoint:
        path = Path(p.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"export.checkpoint {path} not found: train first or set it to null")
        return [TraceNet.from_checkpoint(path)]
    if not p.backbones:
        raise ValueError("export.backbones is empty and export.checkpoint is null: nothing to export")
    models = []
    for b in p.backbones:
        torch.manual_seed(0)  # the same random weights on every run: artifacts are reproducible
        models.append(TraceNet.build(backbone=b).eval())
    return models


def run_export(p) -> dict:
    """Export every model, then verify its artifacts on coco_mini taps when the data is there."""
    from tracenet.export.verify import coco_samples, verify

    formats = check_formats(p.formats)
    out = Path(p.out_dir)
    data = Path(p.verify.data)
    samples = coco_samples(data, int(p.verify.max_images)) if data.is_dir() else None
    if samples is None:
        log.warning("verify data %s is absent: artifacts are not verified", data)
    size, window = int(p.input_size), p.get("mask_window")
    window = None if window is None else int(window)
    report = {}
    for model in models(p):
        written = export_model(model, size, out, formats, mask_window=window)
        log.info("exported %s", ", ".join(w.name for w in written))
        if samples is not None:
            report.update(verify(model, written, samples))
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in report.items()}
    if samples is not None and window is not None and window < size // 8:  # what the window clips
        from tracenet.export.verify import window_cost

        summary["window_cost"] = window_cost(data, model.cfg, size, window)
    write_json(out / "verify.json", {"summary": summary, "artifacts": report})
    return summary


def run_profile(p) -> tuple[Path, Path]:
    from tracenet.export.profile import profile_all, write_report

    rows = profile_all(p.out_dir, tuple(p.profile.threads), int(p.profile.runs), int(p.profile.warmup))
    return write_report(rows, p.profile.out_dir)
