"""Convolution widths probed on this machine (conv_kernel.min_width), kept on disk so that a new
process skips the probes an earlier one ran, as oneDNN's and Inductor's caches do. Answers are
filed under a fingerprint of everything that picks the kernels' loops (the CPU model and
flags, the torch build and its oneDNN), so another machine or build never reads them.

``TRACENET_CACHE_DIR`` sets the folder (default ``$XDG_CACHE_HOME/tracenet``, else
``~/.cache/tracenet``); ``off`` keeps answers in memory only. A file that cannot be read or
written only costs the probes again (one warning), never a wrong width: a damaged file is
ignored and replaced, and every write is atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch

ENV = "TRACENET_CACHE_DIR"


def store_dir() -> Path | None:
    """The folder answers are kept in, or None when disabled."""
    chosen = os.environ.get(ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off", "0", "none") else Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tracenet"


@cache
def fingerprint() -> str:
    """Hash of the CPU (model name and flags) and the torch/oneDNN build."""
    cpu = platform.processor() + platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu += "".join(line for line in info if line.startswith(("model name", "flags")))[:4096]
    except OSError:
        pass
    build = torch.__version__ + torch.__config__.show()
    return hashlib.sha1((cpu + build).encode()).hexdigest()[:16]


class WidthStore:
    """{key: width} for one machine and build, read once and written through."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._widths: dict[str, int] | None = None
        self._warned = False

    def _file(self) -> Path | None:
        folder = store_dir()
        return None if folder is None else folder / f"conv-widths-{fingerprint()}.json"

    def _load(self) -> dict[str, int]:
        path = self._file()
        if self._widths is None or path != self._path:
            self._path, self._widths = path, (_read(path) if path is not None else {})
        return self._widths

    def get(self, key: str) -> int | None:
        return self._load().get(key)

    def put(self, key: str, width: int) -> None:
        widths = self._load()
        widths[key] = width
        if self._path is None:
            return
        try:
            merged = {**_read(self._path), **widths}  # other processes' answers too
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".widths-", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(merged, f)
            os.replace(tmp, self._path)
        except OSError as e:
            if not self._warned:
                warnings.warn(
                    f"cannot keep probed convolution widths in {self._path} ({e}); they stay in memory. "
                    f"Set {ENV} to a writable folder, or to 'off'.",
                    stacklevel=2,
                )
                self._warned = True


def _read(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and type(v) is int and v >= 0}


def store_key(*parts: object) -> str:
    """A stable text key for a probe's inputs (dataclasses and tuples of numbers and bools)."""
    return json.dumps(parts, default=lambda o: list(o.__dict__.values()), separators=(",", ":"))
