"""cpu_heap: large freed blocks stay in glibc's heap instead of being unmapped (the page
faults of fresh mmaps cost a CPU forward about a tenth of its time)."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import pytest

from tracenet import cpu_heap

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

_PROBE = """
import ctypes, torch
from tracenet import cpu_heap

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
tuned = cpu_heap.keep_freed_memory()
before = libc.mallinfo2().hblkhd
t = torch.empty(64 << 20, dtype=torch.uint8)
mapped = libc.mallinfo2().hblkhd - before
print(tuned, mapped >= 64 << 20)
"""


def _run(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env={**os.environ, **env}, check=True
    )
    return out.stdout.strip()


@pytest.mark.skipif(
    not GLIBC or not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"), reason="glibc >= 2.33 only"
)
def test_large_blocks_come_from_the_heap_once_tuned_and_the_setting_can_be_turned_off() -> None:
    assert _run({}) == "True False"  # tuned: a 64 MiB tensor is not a fresh mmap
    assert _run({"TRACENET_MALLOC_TUNING": "off"}) == "False True"  # glibc's default: it is


def test_tuning_is_done_once_and_reports_whether_it_holds(monkeypatch) -> None:
    monkeypatch.setattr(cpu_heap, "_tuned", None)
    calls = []
    monkeypatch.setattr(cpu_heap, "_tune", lambda: calls.append(1) or GLIBC)
    assert cpu_heap.keep_freed_memory() is GLIBC and cpu_heap.keep_freed_memory() is GLIBC
    assert len(calls) == 1
