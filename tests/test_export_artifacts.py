"""ONNX and TFLite artifacts: checked, with metadata, equal to PyTorch on coco_mini taps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tracenet.export import metadata
from tracenet.export.build import export_model
from tracenet.export.errors import ExportError
from tracenet.export.onnx import export_onnx
from tracenet.export.static import TapNet
from tracenet.export.tflite import export_tflite

for _mod in ("onnx", "onnxruntime", "onnxscript", "litert_torch", "ai_edge_litert", "ai_edge_quantizer"):
    pytest.importorskip(_mod, reason=f"{_mod} is part of the export extra: pip install -e '.[export]'")

from test_export import SIZE, tiny_model  # noqa: E402

MASK_WINDOW = 8  # of 16 stride-8 cells: windowed P3 and mask branch in the artifacts


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def artifacts(model, tmp_path_factory) -> list[Path]:
    """FullNet, the windowed TraceNet and its exact fallback (the dense-mask TraceNet), in every
    format."""
    return export_model(model, SIZE, tmp_path_factory.mktemp("export"), mask_window=MASK_WINDOW)


@pytest.mark.slow
def test_artifacts_are_valid_and_described(artifacts: list[Path]) -> None:
    import onnx

    names = sorted(p.name for p in artifacts)
    assert names == sorted(
        f"resnet18_{m}_128{ext}"
        for m in ("full", "trace", "tracedense")
        for ext in (".onnx", ".tflite", "_int8.tflite")
    )
    proto = onnx.load(str(next(p for p in artifacts if p.name == "resnet18_trace_128.onnx")))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    for p in artifacts:
        meta = metadata.read(p)
        assert meta["input_size"] == [SIZE, SIZE] and meta["file_bytes"] == p.stat().st_size
        assert meta["macs"] > 0 and meta["normalization"]["mean"] == [0.485, 0.456, 0.406]
        assert {"tracenet", "torch"} <= set(meta["version"]) and meta["thresholds"]["mask_logit"] == 0.0
        assert list(meta["inputs"]) == ["image", "cells", "prompt", "extent"]
        m = MASK_WINDOW if meta["mode"] == "trace" else SIZE // 8
        assert meta["outputs"]["logits"]["shape"] == [1, 1, m, m]
        assert meta["mask_window"]["cells"] == m and "window" in meta["outputs"]
        assert oct(p.stat().st_mode & 0o777) == "0o644"


@pytest.mark.slow
@pytest.mark.realdata
def test_artifacts_reproduce_pytorch_on_coco_taps(model, artifacts: list[Path], coco_mini: Path) -> None:
    from tracenet.export.verify import coco_samples, verify

    samples = coco_samples(coco_mini, max_images=3)
    kinds = {t.kind for _, taps in samples for t in taps}
    assert kinds == {"instance", "border"}
    report = verify(model, artifacts, samples)
    for name, summary in report.items():
        assert summary["taps"] >= 20
        if "int8" not in name:  # float32 artifacts must agree; int8's cost is measured, not bounded
            # against the model's unclipped mask: clipped taps fell back to the full artifact
            assert summary["min_iou"] >= 0.99, (name, summary["min_iou"])
            assert summary["min_iou_window"] >= 0.99, (name, summary["min_iou_window"])
            assert summary["same_level"] == summary["taps"]
        assert summary["fallback"] == summary["clipped"] < summary["taps"]  # most regions fit
        assert summary["max_logit_diff"] is not None and summary["median_max_abs_logit"] > 0
        if "_trace_" in name:  # both cases ran, the clipped taps answered by the dense-mask TraceNet
            assert summary["fallback"] > 0
            assert summary["fallback_artifact"] == name.replace("_trace_", "_tracedense_")
        else:  # FullNet and the dense-mask TraceNet are exact themselves
            assert summary["fallback"] == 0 and summary["fallback_artifact"] is None
    assert any(r["prompt_mask_pixels"] > 0 for r in report["resnet18_trace_128.onnx"]["rows"])


@pytest.mark.slow
def test_profile_reports_every_artifact(artifacts: list[Path], tmp_path: Path) -> None:
    from tracenet.export.profile import main

    folder = artifacts[0].parent
    main([str(folder), "--out", str(tmp_path), "--threads", "1", "--runs", "3", "--warmup", "1"])
    doc = json.loads((tmp_path / "profile.json").read_text())
    rows = doc["rows"]
    assert sorted(r["artifact"] for r in rows) == sorted(p.name for p in artifacts)
    assert sorted(p["trace"] for p in doc["alternated"]) == [
        "resnet18_trace_128.onnx",
        "resnet18_trace_128.tflite",
        "resnet18_trace_128_int8.tflite",
    ]
    assert all(r["alternated"] and r["trace_ms"] > 0 for r in doc["ratios"]) and len(doc["ratios"]) == 3
    # the expected cost counts the fallback the host uses: the dense-mask TraceNet, timed alongside
    assert all(p["exact"] == p["trace"].replace("_trace_", "_tracedense_") for p in doc["alternated"])
    assert all(p["exact_ms"] > 0 for p in doc["alternated"])
    for r in rows:
        assert r["cold_start_ms"] >= r["load_ms"] > 0 and r["p90_ms"] >= r["median_ms"] > 0
        assert r["peak_rss_mb"] > r["file_mb"] > 0 and r["macs"] > 0
    assert "| resnet18_trace_128.tflite | 1 |" in (tmp_path / "profile.md").read_text()


class _DataDependent(nn.Module):
    """A backbone whose output shape depends on the data: torch.export (and so both converters) rejects it."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.inner(x)
        if torch.nonzero(out["c5"].flatten() > 0).shape[0] > 3:  # branch on data: no static graph
            out["c5"] = out["c5"] * 2
        return out


@pytest.mark.parametrize("export", [export_onnx, export_tflite], ids=["onnx", "tflite"])
def test_unsupported_op_gives_a_clear_error(export, tmp_path: Path) -> None:
    model = tiny_model()
    model.dense.backbone = _DataDependent(model.dense.backbone)
    target = tmp_path / "bad.bin"
    with pytest.raises(ExportError, match="resnet18 trace network"):
        export(TapNet(model, SIZE, "trace"), target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
