"""Errors of the export stack, and the optional-dependency check that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType


class ExportError(RuntimeError):
    """A converter rejected the model: the message names the artifact and the converter's reason."""


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional export dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{purpose} needs the '{module}' package: pip install -e '.[export]'") from err
