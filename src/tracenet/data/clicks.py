"""The paper's tap protocol (section IV-B) and the center tap of RITM and the SAM family.

Bands. Let the instance's tight box be h × w pixels. Its moment (centroid) pixel is the seed
of a binary image B; the first band boundary is B dilated once with a k × k square of ones,
and each further boundary dilates the previous one again with the same kernel. The kernel
side is the box's longer side divided by n_bands, made odd so the dilation stays centred:

    k = 2 * r + 1,  r = max(1, floor(max(h, w) / (2 * n_bands) + 1/2))

n dilations of one pixel give the square max(|dy|, |dx|) <= n*r, so with the moment at the
box centre the n_bands-th dilation reaches the box's far sides. Band b (0 = innermost) is the
mask inside dilation b+1 but outside dilation b; the last band also takes whatever mask lies
beyond dilation n_bands-1 (moments off the box centre). The paper's text gives the rule only
in words ("kernel size" derived from the box; the formula did not survive extraction); a
square kernel makes the bands rings of Chebyshev distance, so distance to the moment grows
with the band whatever the box's aspect ratio (a kernel shaped like the box gives rings
whose corners overlap the next band's sides on elongated instances). The band of every mask
pixel is computed at once as ``ceil(max(|dy|, |dx|) / r) - 1``, which equals the dilation
count (tests/test_clicks.py checks it against repeated ``scipy.ndimage.binary_dilation``).

Taps. ``per_band`` mask pixels are drawn per band, uniformly without replacement (partial
Fisher-Yates on uniforms from ``numpy.random.default_rng(seed)``); a band with fewer mask
pixels yields all it has, and the result records it (``Taps.short_bands``). If the moment's
pixel is not on the mask (concave or ring-shaped instances), the bands grow from the
nearest mask pixel instead (Euclidean, first in raster order on ties), so band 0 always
touches the mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, overload

import numpy as np
from scipy import ndimage


class Tap(NamedTuple):
    """One simulated tap in image pixels; ``band`` 0 is the innermost. A plain (x, y, band)
    tuple too, the row format of the clicks file and of the evaluator's tap tables."""

    x: int
    y: int
    band: int


@dataclass(frozen=True)
class Taps(Sequence[Tap]):
    """The taps of one instance, with what the bands were built from."""

    taps: tuple[Tap, ...]
    moment: tuple[float, float]  # centroid (x, y) of the mask
    anchor: tuple[int, int]  # pixel the bands grow from: the moment's pixel or the nearest mask pixel
    kernel: int  # side of the square dilation kernel
    band_sizes: tuple[int, ...]  # mask pixels in each band
    per_band: int

    @property
    def short_bands(self) -> tuple[int, ...]:
        """Bands with fewer than ``per_band`` mask pixels (they yield fewer taps)."""
        return tuple(b for b, n in enumerate(self.band_sizes) if n < self.per_band)

    @overload
    def __getitem__(self, i: int) -> Tap: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Tap, ...]: ...
    def __getitem__(self, i):
        return self.taps[i]

    def __len__(self) -> int:
        return len(self.taps)

    def __iter__(self) -> Iterator[Tap]:
        return iter(self.taps)


def _as_mask(mask) -> np.ndarray:
    """A 2-D bool array; rejects other shapes, non-binary values and empty masks early."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be a 2-D H×W array, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"mask must be binary (bool or 0/1), got values of dtype {arr.dtype}")
        arr = arr.astype(bool)
    if not arr.any():
        raise ValueError("mask is empty: an instance needs at least one pixel to be tapped")
    return arr


def _crop(mask: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The mask's tight box and its top-left corner (y0, x0): all work happens inside it."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, x0 = int(rows[0]), int(cols[0])
    return mask[y0 : rows[-1] + 1, x0 : cols[-1] + 1], y0, x0


def dilation_kernel(box_h: int, box_w: int, n_bands: int = 5) -> int:
    """Side k of the square dilation kernel for an instance whose tight box is box_h × box_w."""
    r = max(1, int(np.floor(max(box_h, box_w) / (2 * n_bands) + 0.5)))
    return 2 * r + 1


def band_index(dy: np.ndarray, dx: np.ndarray, kernel: int, n_bands: int = 5) -> np.ndarray:
    """Band of each offset (dy, dx) from the anchor: the number of k × k dilations of the
    anchor pixel that first reach it, minus one, clipped to the last band. Broadcasts, so a
    column of row offsets and a row of column offsets give the band of a whole grid while
    the divisions run on the two vectors only (ceil and max commute)."""
    r = (kernel - 1) // 2

    def steps(d: np.ndarray) -> np.ndarray:
        return np.clip(-(-np.abs(d) // r) - 1, 0, n_bands - 1).astype(np.uint8)

    return np.maximum(steps(np.asarray(dy)), steps(np.asarray(dx)))


def _distinct(size: int, k: int, uniform: np.ndarray) -> list[int]:
    """min(k, size) distinct indices of range(size), uniformly: the first steps of a
    Fisher-Yates shuffle over a virtual arange, its swaps kept in a dict (O(k), not O(size))."""
    swaps: dict[int, int] = {}
    out = []
    for j in range(min(k, size)):
        r = j + int(uniform[j] * (size - j))
        out.append(swaps.get(r, r))
        swaps[r] = swaps.get(j, j)
    return out


def _check_counts(n_bands: int, per_band: int) -> None:
    for name, value in (("n_bands", n_bands), ("per_band", per_band)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def simulate_clicks(mask, n_bands: int = 5, per_band: int = 5, seed: int | Sequence[int] = 0) -> Taps:
    """``per_band`` taps in each of ``n_bands`` bands around the instance's moment.

    ``mask``: H×W bool array (one instance). ``seed``: anything ``np.random.default_rng``
    takes (an int, or a sequence such as ``[seed, ann_id]`` for order-independent files).
    """
    _check_counts(n_bands, per_band)
    crop, y0, x0 = _crop(_as_mask(mask))
    h, w = crop.shape
    rows, cols = crop.sum(axis=1), crop.sum(axis=0)
    area = int(rows.sum())
    cy, cx = rows @ np.arange(h) / area, cols @ np.arange(w) / area
    ay, ax = int(np.floor(cy + 0.5)), int(np.floor(cx + 0.5))
    if not crop[ay, ax]:
        ys, xs = np.nonzero(crop)
        nearest = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
        ay, ax = int(ys[nearest]), int(xs[nearest])
    kernel = dilation_kernel(h, w, n_bands=n_bands)
    grid = band_index(np.arange(h)[:, None] - ay, np.arange(w)[None, :] - ax, kernel, n_bands)
    labels = np.where(crop, grid, np.uint8(n_bands)).ravel()  # n_bands: not on the mask
    uniform = np.random.default_rng(seed).random((n_bands, per_band))
    sizes, taps = [], []
    for b in range(n_bands):
        members = np.flatnonzero(labels == b)
        sizes.append(len(members))
        for i in members[_distinct(len(members), per_band, uniform[b])]:
            taps.append(Tap(int(i % w) + x0, int(i // w) + y0, b))
    return Taps(
        taps=tuple(taps),
        moment=(float(cx) + x0, float(cy) + y0),
        anchor=(ax + x0, ay + y0),
        kernel=kernel,
        band_sizes=tuple(sizes),
        per_band=per_band,
    )


def center_click(mask) -> tuple[int, int]:
    """(x, y) of the mask pixel farthest from the background (argmax of the Euclidean distance
    transform, the image border counting as background; first in raster order on ties)."""
    crop, y0, x0 = _crop(_as_mask(mask))
    dist = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x) + x0, int(y) + y0


def evaluation_taps(
    mask, ann_id: int, n_bands: int = 5, per_band: int = 5, seed: int = 0
) -> tuple[Taps, tuple[int, int]]:
    """An instance's taps as the clicks stage writes them: band taps seeded with
    ``[seed, ann_id]`` (independent of image order and subset), and the center tap."""
    return simulate_clicks(mask, n_bands, per_band, seed=[seed, ann_id]), center_click(mask)
