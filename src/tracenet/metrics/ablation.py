"""TraceNet vs FullNet on the same checkpoint and taps: accuracy, MACs, latency, peak memory
and exactness.

Both modes compute the same function (RFT is exact), so accuracy must agree; what differs is
cost. FullNet runs the dense network on the whole image for every tap; TraceNet computes
only the tap's receptive field. "trace_session" adds the product case: later taps on the
same image reuse the crops of earlier ones through the session's region cache.

Per image, one untimed tap per mode warms up what is paid once per input shape (RFT graph
capture, allocator growth), so latencies are per-tap steady state.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from tracenet.metrics.taps import mask_iou, miou_t

MODES = ("full", "trace", "trace_session")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class AblationTap:
    """One tap to measure: the image it is on, the tap, and the ground truth it should find."""

    ann_id: int
    click: tuple[int, int]
    gt: np.ndarray  # H×W bool


def _vm_kib(field_name: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} missing from {_STATUS}")


def _trim_heap() -> None:
    """Hand memory freed by earlier calls back to the OS (glibc ``malloc_trim``): otherwise a
    block that reuses it shows no RSS growth and its peak is under-counted."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: peaks may be under-counted
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


class PeakRSS:
    """Peak resident memory growth (bytes) of a block: VmHWM after resetting it (Linux
    ``clear_refs`` 5), with the heap trimmed first. Unlike tracemalloc it sees torch's native
    allocations; ``None`` where the kernel does not offer the reset."""

    def __init__(self) -> None:
        self.peak: int | None = None

    def __enter__(self) -> PeakRSS:
        _trim_heap()
        try:
            _CLEAR_REFS.write_text("5")
            self._base = _vm_kib("VmRSS")
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc) -> None:
        if self._base is not None:
            self.peak = max(0, _vm_kib("VmHWM") - self._base) * 1024


@dataclass
class ModeStats:
    macs: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    peak_bytes: list[int] = field(default_factory=list)
    ious: dict[int, list[float]] = field(default_factory=dict)  # ann_id -> IoU of each tap vs GT
    head_diffs: list[float] = field(default_factory=list)  # vs FullNet on the same tap
    mask_ious: list[float] = field(default_factory=list)  # vs FullNet on the same tap

    def add(self, tap: AblationTap, result, seconds: float, peak: int | None, full=None) -> None:
        """Record one tap; ``full`` is FullNet's result on the same tap (for exactness)."""
        self.macs.append(int(result.macs))
        self.seconds.append(seconds)
        if peak is not None:
            self.peak_bytes.append(peak)
        self.ious.setdefault(tap.ann_id, []).append(mask_iou(result.mask, tap.gt))
        if full is not None:
            self.head_diffs.append(head_diff(full.heads, result.heads))
            self.mask_ious.append(mask_iou(full.mask, result.mask))

    def summary(self) -> dict:
        sec = sorted(self.seconds)
        return {
            "taps": len(self.macs),
            "miou_t": miou_t(list(self.ious.values())),
            "macs_mean": float(np.mean(self.macs)),
            "macs_median": float(np.median(self.macs)),
            "latency_median_s": statistics.median(sec),
            "latency_p90_s": float(np.quantile(sec, 0.9)),
            "peak_memory_bytes": max(self.peak_bytes) if self.peak_bytes else None,
        }


def head_diff(ref: dict, other: dict) -> float:
    """Largest difference between two modes' head outputs at the tap, relative to the
    reference's magnitude (absolute below 1), over every level and head."""
    worst = 0.0
    for lvl, heads in ref.items():
        for key, v in heads.items():
            a, b = torch.as_tensor(v), torch.as_tensor(other[lvl][key])
            worst = max(worst, ((a - b).abs().max() / a.abs().max().clamp(min=1.0)).item())
    return worst


def _timed(call: Callable[[], object]) -> tuple[object, float, int | None]:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - t0
    return result, seconds, mem.peak


def run_ablation(model, images: Iterable[tuple[object, Sequence[AblationTap]]]) -> dict[str, ModeStats]:
    """Measure every tap in each mode; ``images`` yields (image, its taps)."""
    if model.training:
        raise RuntimeError("the ablation needs BatchNorm running statistics: call model.eval() first")
    stats = {m: ModeStats() for m in MODES}
    with torch.no_grad():
        for image, taps in images:
            if not taps:
                continue
            for mode in ("full", "trace"):  # warm-up, untimed
                model.segment(image, taps[0].click, mode=mode)
            fulls = []
            for tap in taps:  # modes interleaved tap by tap, so machine load hits both alike
                full, sec, peak = _timed(partial(model.segment, image, tap.click, mode="full"))
                stats["full"].add(tap, full, sec, peak)
                fulls.append(full)
                r, sec, peak = _timed(partial(model.segment, image, tap.click, mode="trace"))
                stats["trace"].add(tap, r, sec, peak, full)
            with model.session(image) as session:
                for tap, full in zip(taps, fulls, strict=True):
                    r, sec, peak = _timed(partial(session.segment, tap.click))
                    stats["trace_session"].add(tap, r, sec, peak, full)
    return stats


def summarize_ablation(stats: dict[str, ModeStats]) -> dict:
    """Per-mode figures plus the exactness of each trace mode against FullNet."""
    full = stats["full"]
    if not full.macs:
        raise ValueError("ablation: no taps were measured (no image had taps)")
    out: dict = {"modes": {m: s.summary() for m, s in stats.items()}}
    for mode in ("trace", "trace_session"):
        s = stats[mode]
        out[f"{mode}_vs_full"] = {
            "max_head_diff": max(s.head_diffs),
            "min_mask_iou": min(s.mask_ious),
            "miou_t_diff": abs(s.summary()["miou_t"] - full.summary()["miou_t"]),
            "macs_ratio": float(np.mean(s.macs) / np.mean(full.macs)),
            "latency_ratio": statistics.median(s.seconds) / statistics.median(full.seconds),
        }
    return out


def accuracy_vs_macs_rows(summary: dict) -> list[dict]:
    """`dvc plots` data: one point per mode (x: GMACs per tap, y: mIoU-T)."""
    return [
        {"mode": m, "gmacs_per_tap": s["macs_mean"] / 1e9, "miou_t": s["miou_t"]}
        for m, s in summary["modes"].items()
    ]
