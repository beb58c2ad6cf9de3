"""ONNX export of a tap network (torch.export-based exporter, static shapes, checked)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from tracenet.export.errors import HINT, ExportError, require
from tracenet.export.files import atomic
from tracenet.export.static import INPUTS, OUTPUTS, TapNet

MIN_OPSET = 17


def export_onnx(net: TapNet, path: str | Path, opset: int = 18) -> Path:
    """Write ``net`` as float32 ONNX at ``path`` (atomically) and check it with onnx.checker."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export (torch's exporter uses it)")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                net.eval(),
                sample_inputs(net),
                dynamo=True,
                opset_version=opset,
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                optimize=True,
                verbose=False,
            )
        except Exception as err:  # the exporter raises many types; name the artifact and the reason
            raise ExportError(f"ONNX export of {_name(net)} failed. {HINT}\n{err}") from err

    def save(tmp: str) -> None:
        program.save(tmp)
        onnx.checker.check_model(onnx.load(tmp), full_check=True)

    return atomic(Path(path), save)


def sample_inputs(net: TapNet) -> tuple[torch.Tensor, ...]:
    """Inputs of the artifact's static signature (``static.INPUTS``): image ``[1,3,S,S]``,
    cells int32 ``[5,2]``, prompt ``[4]`` (zeros: the predicted box), extent int32 ``[2]``."""
    extent = torch.full((2,), net.n, dtype=torch.int32)
    return torch.zeros(1, 3, net.size, net.size), torch.zeros(5, 2, dtype=torch.int32), torch.zeros(4), extent


def _name(net: TapNet) -> str:
    return f"the {net.cfg.backbone} {net.mode} network at {net.size}×{net.size}"
