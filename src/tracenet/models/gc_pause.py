"""No full garbage collection inside a tap.

A tap allocates thousands of short-lived Python objects (plans, steps, views), and every so
often those allocations trigger a full collection, which scans every object the process
holds: 0.13-0.18 s in the acceptance preview's process (torch's op registry, COCO
annotations, graph captures), a quarter of a traced R-50 tap, landing on one tap in five.
So a tap runs with the collector off, and on the way out collects only the young
generations (what the tap itself left: about a millisecond), which also resets the
allocation counters, so the caller's next allocations do not set off a collection the tap
caused. Full collections still run, when the caller's own allocations call for them. Both
modes do this.
"""

from __future__ import annotations

import gc
import threading


class _NoGcPause:
    """``with no_gc_pause:`` (one shared instance, so entering allocates next to nothing);
    nested and concurrent taps keep the collector off until the last one ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._was_enabled:
                gc.collect(1)
                gc.enable()


no_gc_pause = _NoGcPause()
