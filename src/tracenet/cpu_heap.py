"""Keep freed activation memory in the process heap for CPU inference.

glibc's malloc serves every block larger than its mmap threshold (128 KiB, adapting up to
32 MiB) with a fresh mmap and unmaps it on free. A CPU forward at 800×1333 allocates dozens
of 15-60 MiB activations, so each one's pages fault in and are zeroed by the kernel on first
touch: measured here (2-core Xeon, torch 2.14), a dense R-50 TraceNet forward spends about a
tenth of its time on that, and ResNet's stage 1 (1×1 convolutions over 256-channel maps)
runs at a third of its arithmetic speed. Raising the mmap and trim thresholds keeps freed
blocks for the next allocation, as jemalloc/tcmalloc do (Intel's PyTorch CPU tuning guide
preloads one of them for this reason). The cost: the heap keeps its peak size instead of
returning memory to the OS between forwards.

Only glibc is tuned; ``TRACENET_MALLOC_TUNING=off`` leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_LIMIT = 2**31 - 1  # mallopt takes an int: blocks up to 2 GiB come from the heap
_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process (see the module doc); whether the setting holds."""
    global _tuned
    if _tuned is None:
        _tuned = _tune()
    return _tuned


def _tune() -> bool:
    if os.environ.get("TRACENET_MALLOC_TUNING", "").lower() in ("off", "0", "false", "no"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, _LIMIT))
