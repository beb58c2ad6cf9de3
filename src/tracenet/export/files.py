"""Artifacts are written by converters that take a file name: hand them a temporary one and
move the result into place (tracenet.atomic), so a runtime never loads a half-written model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tracenet.atomic import atomic_file, write_json, write_text

__all__ = ["atomic", "write_json", "write_text"]


def atomic(path: str | Path, write: Callable[[str], object]) -> Path:
    """Let ``write(tmp)`` produce the file next to ``path`` (same folder and suffix), then move it."""
    with atomic_file(path) as tmp:
        write(str(tmp))
    return Path(path)
