"""Export FullNet and TraceNet of one model to every requested format, with metadata.

Artifacts per model, format and input size ``S`` (``{backbone}_{kind}_{S}[_int8].{ext}``):

- ``full``: FullNet, the baseline;
- ``trace``: TraceNet, with the mask branch on ``mask_window`` cells when one is given;
- ``tracedense``: TraceNet with the mask branch on the whole map (``mask_window`` None), written
  when ``trace`` has a window: exact for every mask region, it is the host's fallback where the
  window clips (``tracenet.export.fallback``), cheaper than FullNet.
"""

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


DENSE_MASK = "tracedense"  # the artifact kind of TraceNet without a mask window


def artifact_stem(model: TraceNet, mode: str, size: int) -> str:
    return f"{model.cfg.backbone}_{mode}_{size}"


def artifact_kinds(modes, size: int, mask_window: int | None) -> list[tuple[str, str, int | None]]:
    """(kind, TapNet mode, mask window) of each artifact: the ``modes`` asked for, plus the
    dense-mask TraceNet (exact fallback) when ``trace`` has a window smaller than the map."""
    kinds = [(mode, mode, mask_window if mode == "trace" else None) for mode in modes]
    if "trace" in modes and mask_window is not None and int(mask_window) < size // 8:
        kinds.append((DENSE_MASK, "trace", None))
    return kinds


def export_model(
    model: TraceNet,
    size: int,
    out_dir: str | Path,
    formats=FORMATS,
    modes=MODES,
    mask_window: int | None = None,
    weights: dict | None = None,
) -> list[Path]:
    """Write ``{backbone}_{kind}_{size}.{onnx,tflite}`` (+ ``_int8.tflite``), each with ``<file>.json``.

    ``mask_window``: TraceNet's mask window in stride-8 cells (None: dense mask branch); with a
    window, the dense-mask TraceNet (``tracedense``) is written too, as the exact fallback.
    ``weights``: where the weights come from (the metadata's ``weights``)."""
    from tracenet.export.onnx import export_onnx
    from tracenet.export.tflite import export_tflite, quantize_int8

    formats = check_formats(formats)
    out_dir = Path(out_dir)
    model = model.eval()
    written = []
    for kind, mode, window in artifact_kinds(modes, size, mask_window):
        net = TapNet(model, size, mode, window).eval()
        macs = metadata.network_macs(net)
        stem = out_dir / artifact_stem(model, kind, size)
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
            meta = metadata.describe(net, path, precision, macs, versions, kind=kind, weights=weights)
            write_json(metadata.metadata_path(path), meta)
            written.append(path)
    return written
