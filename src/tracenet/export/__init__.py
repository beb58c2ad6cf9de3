"""Mobile export: FullNet and TraceNet as static-shape ONNX and TFLite artifacts.

    static    TapNet: one tap's outputs at a fixed input size (TraceNet = heads on a window)
    host      pre-processing, tap cells and mask decoding around an artifact
    onnx, tflite, build   exporters and the per-model driver (metadata JSON beside each file)
    runners   one call form for onnxruntime and the LiteRT interpreter
    verify    artifacts vs PyTorch on real taps;  profile   latency, cold start, RSS, size, MACs
    stage     the export/profile DVC stages

See docs/export.md. Heavy optional packages (the ``export`` extra) are imported on use.
"""
