"""The JSON written next to each artifact: what a mobile engineer needs to feed and read it."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata as pkg
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from tracenet.export.onnx import sample_inputs
from tracenet.export.static import TapNet
from tracenet.models.config import LEVELS


def network_macs(net: TapNet) -> int:
    """MACs of one call (FlopCounterMode counts conv/matmul FLOPs, 2 per MAC)."""
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(*sample_inputs(net))
    return fc.get_total_flops() // 2


def describe(
    net: TapNet,
    artifact: Path,
    precision: str,
    macs: int,
    extra: dict | None = None,
    kind: str | None = None,
    weights: dict | None = None,
) -> dict:
    """The artifact's JSON. ``kind``: the artifact kind (``full``, ``trace``, ``tracedense``;
    default the network's mode); ``weights``: where the weights come from (checkpoint, or random
    with recalibrated BatchNorm statistics: ``tracenet.export.calibrate``)."""
    cfg = net.cfg
    s, m = net.size, net.mask_window
    return {
        "artifact": artifact.name,
        "format": artifact.suffix.lstrip("."),
        "mode": kind or net.mode,
        "backbone": cfg.backbone,
        "precision": precision,
        "input_size": [s, s],
        "inputs": {
            "image": {"shape": [1, 3, s, s], "dtype": "float32"},
            "cells": {"shape": [len(LEVELS), 2], "dtype": "int32", "levels": list(LEVELS)},
            "prompt": {
                "shape": [4],
                "dtype": "float32",
                "meaning": "prompt box x0,y0,x1,y1 in network-input pixels; zeros = the predicted box",
            },
            "extent": {
                "shape": [2],
                "dtype": "int32",
                "meaning": "resized (unpadded) image in stride-8 cells: ceil(h/8), ceil(w/8)",
            },
        },
        "outputs": {
            "level": {"shape": [1], "dtype": "int32", "meaning": "index into levels"},
            "score": {"shape": [1], "dtype": "float32"},
            "box": {"shape": [4], "dtype": "float32", "meaning": "x0,y0,x1,y1 in network-input pixels"},
            "logits": {
                "shape": [1, 1, m, m],
                "dtype": "float32",
                "meaning": "mask logits on the mask window's stride-8 cells",
            },
            "window": {"shape": [2], "dtype": "int32", "meaning": "first (row, col) of the mask window"},
        },
        "mask_window": {
            "cells": m,
            "exact": "when the mask region (box grown by margin, stride-8 cells) fits in cells×cells; "
            "otherwise the mask covers region ∩ window",
        },
        "normalization": {
            "resize": f"long side to {s} px (bilinear, antialias), RGB in [0, 1]",
            "mean": list(cfg.mean),
            "std": list(cfg.std),
            "pad": "zeros bottom/right after normalizing, to the input size",
        },
        "thresholds": {"mask_logit": 0.0, "mask_margin": cfg.margin},
        "version": {
            "tracenet": pkg.version("tracenet"),
            "torch": torch.__version__,
            **(extra or {}),
        },
        "macs": int(macs),
        "file_bytes": artifact.stat().st_size,
        "sha256": hashlib.sha256(artifact.read_bytes()).hexdigest(),
        "model_options": cfg.to_dict(),
        "weights": weights or {"source": "unspecified"},
    }


def metadata_path(artifact: str | Path) -> Path:
    """``x.onnx`` -> ``x.onnx.json``: the ONNX and TFLite files of one network each get their own."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def read(artifact: str | Path) -> dict:
    path = metadata_path(artifact)
    if not path.is_file():
        raise FileNotFoundError(f"metadata {path} not found next to {artifact}: re-export the artifact")
    return json.loads(path.read_text())
