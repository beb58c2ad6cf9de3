"""Errors of the export stack, and the optional-dependency check that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

HINT = (
    "Artifacts need a static graph: fixed shapes and no branch or shape that depends on tensor "
    "values. Replace the offending op (see the converter's message below) or choose a supported "
    "backbone; docs/export.md lists the design."
)


class ExportError(RuntimeError):
    """A converter rejected the model: the message names the artifact and the converter's reason."""


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional export dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{purpose} needs the '{module}' package: pip install -e '.[export]'") from err
