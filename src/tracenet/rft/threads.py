"""The thread count a schedule runs under. The executor drops torch to one thread for small
steps; kernels that choose their algorithm by thread count (PyTorch's convolution dispatch)
must still choose as the full forward did, at the count the run started with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_AMBIENT: ContextVar[int | None] = ContextVar("tracenet_rft_ambient_threads", default=None)


def ambient_threads() -> int:
    """torch's thread count outside any serial step of the running schedule."""
    threads = _AMBIENT.get()
    return torch.get_num_threads() if threads is None else threads


@contextmanager
def running_schedule() -> Iterator[int]:
    """Marks a schedule's run: yields the ambient count and restores it on exit."""
    threads = torch.get_num_threads()
    token = _AMBIENT.set(threads)
    try:
        yield threads
    finally:
        _AMBIENT.reset(token)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
