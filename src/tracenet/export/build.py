"""Export FullNet and TraceNet of one model to every requested format, with metadata."""

from __future__ import annotations

from importlib import metadata as pkg
from pathlib import Path

from tracenet.export import metadata
from tracenet.export.files import write_json
from tracenet.export.static import MODES, TapNet
from tracenet.models.tracenet import TraceNet

FORMATS = ("onnx", "tflite", "tflite_int8")
OPSET = 18


def check_formats(formats) -> tuple[str, ...]:
    formats = tuple(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"unsupported export formats {unknown or formats}; choose from {FORMATS}")
    if "tflite_int8" in formats and "tflite" not in formats:
        raise ValueError("tflite_int8 is quantized from the float TFLite artifact: also request 'tflite'")
    return formats


def artifact_stem(model: TraceNet, mode: str, size: int) -> str:
    return f"{model.cfg.backbone}_{mode}_{size}"


def export_model(
    model: TraceNet,
    size: int,
    out_dir: str | Path,
    formats=FORMATS,
    modes=MODES,
    mask_window: int | None = None,
) -> list[Path]:
    """Write ``{backbone}_{mode}_{size}.{onnx,tflite}`` (+ ``_int8.tflite``), each with ``<file>.json``.

    ``mask_window``: TraceNet's mask window in stride-8 cells (None: dense mask branch)."""
    from tracenet.export.onnx import export_onnx
    from tracenet.export.tflite import export_tflite, quantize_int8

    formats = check_formats(formats)
    out_dir = Path(out_dir)
    model = model.eval()
    written = []
    for mode in modes:
        net = TapNet(model, size, mode, mask_window).eval()
        macs = metadata.network_macs(net)
        stem = out_dir / artifact_stem(model, mode, size)
        items = []
        if "onnx" in formats:
            items.append((export_onnx(net, stem.with_suffix(".onnx"), OPSET), "float32", {"opset": OPSET}))
        if "tflite" in formats:
            tfl = export_tflite(net, stem.with_suffix(".tflite"))
            conv = {"litert_torch": pkg.version("litert-torch")}
            items.append((tfl, "float32", conv))
            if "tflite_int8" in formats:
                q = quantize_int8(tfl, stem.parent / f"{stem.name}_int8.tflite")
                items.append((q, "int8 weights (dynamic range), float32 activations", conv))
        for path, precision, versions in items:
            write_json(metadata.metadata_path(path), metadata.describe(net, path, precision, macs, versions))
            written.append(path)
    return written
