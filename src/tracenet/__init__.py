"""TraceNet: one-tap single-instance segmentation with the Receptive Field Tracer (RFT)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tracenet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["TraceNet", "__version__"]


def __getattr__(name: str):
    # Lazy: `import tracenet` stays cheap (the CLI's --help must not import torch).
    if name == "TraceNet":
        from tracenet.models.tracenet import TraceNet

        return TraceNet
    raise AttributeError(f"module 'tracenet' has no attribute {name!r}")
