"""TFLite export through litert-torch (float32), and int8 dynamic-range weights via ai-edge-quantizer."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from tracenet.export.errors import HINT, ExportError, require
from tracenet.export.files import atomic
from tracenet.export.onnx import sample_inputs
from tracenet.export.static import TapNet


def export_tflite(net: TapNet, path: str | Path) -> Path:
    """Convert ``net`` with litert-torch and write the flatbuffer at ``path`` atomically."""
    litert_torch = require("litert_torch", "TFLite export")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            edge = litert_torch.convert(net.eval(), sample_inputs(net))
        except Exception as err:  # converters raise many types; name the artifact and the reason
            raise ExportError(
                f"TFLite conversion of the {net.cfg.backbone} {net.mode} network ({net.size}×{net.size}) failed. "
                f"{HINT}\n{err}"
            ) from err
    return atomic(Path(path), edge.export)


def quantize_int8(src: str | Path, path: str | Path) -> Path:
    """int8 weights, float activations (dynamic range): the variant LiteRT's CPU kernels support."""
    aeq = require("ai_edge_quantizer", "TFLite int8 quantization")
    qt = aeq.Quantizer(str(src))
    qt.load_quantization_recipe(aeq.recipe.dynamic_wi8_afp32())
    result = qt.quantize()
    return atomic(Path(path), lambda tmp: result.export_model(tmp, overwrite=True))
