"""Run an artifact (ONNX in onnxruntime, TFLite in the LiteRT interpreter) with one call form.

``runner(image, cells, prompt, extent) -> {"level", "score", "box", "logits", "window"}`` (numpy),
whatever the runtime; ``runner(**host.tap_inputs(...))`` feeds one tap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tracenet.export.errors import require
from tracenet.export.static import INPUTS, OUTPUTS

KINDS = {".onnx": "onnx", ".tflite": "tflite"}


def load(path: str | Path, threads: int = 1):
    """A runner for the artifact at ``path``, with ``threads`` CPU threads."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"artifact {path} not found: run `python pipelines/export.py` first")
    if path.suffix not in KINDS:
        raise ValueError(f"unknown artifact type {path.suffix!r} ({path}); expected one of {sorted(KINDS)}")
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return (OnnxRunner if path.suffix == ".onnx" else TFLiteRunner)(path, int(threads))


class OnnxRunner:
    def __init__(self, path: Path, threads: int) -> None:
        ort = require("onnxruntime", "running ONNX artifacts")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, image, cells, prompt, extent) -> dict[str, np.ndarray]:
        feed = dict(zip(INPUTS, (image, cells, prompt, extent), strict=True))
        return dict(zip(OUTPUTS, self.session.run(list(OUTPUTS), feed), strict=True))


class TFLiteRunner:
    """litert-torch names the signature's inputs args_0.. and outputs output_0.. in forward order."""

    def __init__(self, path: Path, threads: int) -> None:
        litert = require("ai_edge_litert.interpreter", "running TFLite artifacts")
        self.interpreter = litert.Interpreter(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner()

    def __call__(self, image, cells, prompt, extent) -> dict[str, np.ndarray]:
        out = self.runner(args_0=image, args_1=cells, args_2=prompt, args_3=extent)
        return {name: out[f"output_{i}"] for i, name in enumerate(OUTPUTS)}
