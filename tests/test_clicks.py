"""Click simulation (paper IV-B): the band rule against real dilation, tap validity, order,
determinism, the center tap, bad input, and speed on real COCO masks."""

from __future__ import annotations

import contextlib
import io
import time

import numpy as np
import pytest
from scipy import ndimage

from tracenet.data.clicks import _distinct, band_index, center_click, dilation_kernel, simulate_clicks


def disk(h: int, w: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def bands_by_dilation(shape, anchor, kernel: int, n_bands: int) -> np.ndarray:
    """The paper's construction literally: dilate the anchor pixel again and again."""
    seed = np.zeros(shape, bool)
    seed[anchor] = True
    structure = np.ones((kernel, kernel), bool)
    out = np.full(shape, n_bands - 1)
    grown = seed
    for b in range(n_bands - 1):
        grown = ndimage.binary_dilation(grown, structure)
        out[grown & (out == n_bands - 1)] = b
    return out


@pytest.mark.parametrize(
    ("shape", "anchor", "kernel"), [((40, 50), (20, 25), 3), ((37, 61), (3, 50), 5), ((64, 64), (0, 0), 9)]
)
def test_band_index_equals_repeated_dilation(shape, anchor, kernel):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fast = band_index(yy - anchor[0], xx - anchor[1], kernel, n_bands=5)
    assert np.array_equal(fast, bands_by_dilation(shape, anchor, kernel, 5))
    # the broadcast form (row vector x column vector) gives the same grid
    grid = band_index(np.arange(shape[0])[:, None] - anchor[0], np.arange(shape[1])[None] - anchor[1], kernel)
    assert np.array_equal(grid, fast)


def test_kernel_follows_the_longer_box_side():
    assert dilation_kernel(100, 20) == 21  # r = 100 / 10
    assert dilation_kernel(20, 100) == 21
    assert dilation_kernel(3, 3) == 3  # never below one pixel of growth


def test_taps_lie_in_their_bands_on_the_mask():
    mask = disk(120, 160, 60, 70, 45)
    taps = simulate_clicks(mask, n_bands=5, per_band=5, seed=0)
    assert len(taps) == 25 and taps.short_bands == ()
    ay, ax = taps.anchor[1], taps.anchor[0]
    expected = bands_by_dilation(mask.shape, (ay, ax), taps.kernel, 5)
    for t in taps:
        assert mask[t.y, t.x]
        assert expected[t.y, t.x] == t.band
    assert [sum(t.band == b for t in taps) for b in range(5)] == [5] * 5
    assert len({(t.x, t.y) for t in taps}) == 25  # drawn without replacement
    assert taps.moment == pytest.approx((70.0, 60.0), abs=0.01)


def test_band_sampling_is_uniform_without_replacement():
    rng = np.random.default_rng(0)
    counts = np.zeros(10)
    for _ in range(20000):
        picked = _distinct(10, 3, rng.random(3))
        assert len(set(picked)) == 3 and all(0 <= i < 10 for i in picked)
        counts[picked] += 1
    assert np.allclose(counts / 20000, 0.3, atol=0.015)  # each index in 3 of 10 draws
    assert sorted(_distinct(4, 5, rng.random(5))) == [0, 1, 2, 3]  # short: all of them


def test_same_seed_same_taps_other_seed_other_taps():
    mask = disk(100, 100, 50, 50, 40)
    a = simulate_clicks(mask, seed=7)
    assert list(a) == list(simulate_clicks(mask, seed=7))
    assert list(a) != list(simulate_clicks(mask, seed=8))
    assert list(simulate_clicks(mask, seed=[7, 123])) == list(simulate_clicks(mask, seed=[7, 123]))


def test_moment_off_the_mask_grows_bands_from_the_nearest_mask_pixel():
    ring = disk(101, 101, 50, 50, 40) & ~disk(101, 101, 50, 50, 25)
    taps = simulate_clicks(ring, seed=0)
    assert not ring[50, 50]
    ax, ay = taps.anchor
    ys, xs = np.nonzero(ring)
    assert ring[ay, ax] and np.hypot(ax - 50, ay - 50) == np.hypot(xs - 50, ys - 50).min()
    assert all(ring[t.y, t.x] for t in taps)
    assert any(t.band == 0 for t in taps)


def test_small_mask_yields_what_it_has_and_says_so():
    mask = np.zeros((20, 20), bool)
    mask[5, 3:12] = True  # a 1 × 9 line: kernel 3, bands of 3, 2, 2, 2 and 0 pixels
    taps = simulate_clicks(mask, n_bands=5, per_band=5, seed=0)
    assert taps.band_sizes == (3, 2, 2, 2, 0)
    assert len(taps) == 9
    assert set(taps.short_bands) == set(range(5))
    assert all(mask[t.y, t.x] for t in taps)


def test_center_click_is_the_distance_transform_maximum_and_the_border_counts():
    mask = np.zeros((50, 80), bool)
    mask[10:31, 30:51] = True  # 21 × 21: unique maximum at the centre
    assert center_click(mask) == (40, 20)
    edge = np.zeros((40, 40), bool)
    edge[:, :10] = True  # touches the image border: the deepest pixel is not on it
    x, _ = center_click(edge)
    assert x in (4, 5)
    x, y = center_click(np.eye(5, dtype=int))  # 0/1 integers are accepted
    assert x == y


@pytest.mark.parametrize(
    ("mask", "kwargs", "message"),
    [
        (np.zeros((3, 4, 5), bool), {}, "2-D"),
        (np.zeros((8, 8), bool), {}, "empty"),
        (np.full((8, 8), 0.5), {}, "binary"),
        (np.ones((8, 8), bool), {"n_bands": 0}, "n_bands"),
        (np.ones((8, 8), bool), {"per_band": 2.5}, "per_band"),
    ],
)
def test_bad_input_is_rejected_early(mask, kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_clicks(mask, **kwargs)


def test_center_click_rejects_an_empty_mask():
    with pytest.raises(ValueError, match="empty"):
        center_click(np.zeros((4, 4), bool))


@pytest.mark.realdata
def test_real_coco_masks_inside_ordered_and_fast(coco_mini):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco_mini / "annotations" / "instances_val2017.json"))
    masks = [coco.annToMask(a).astype(bool) for a in coco.loadAnns(coco.getAnnIds(iscrowd=False))]
    masks = [m for m in masks if m.any()]
    start = time.perf_counter()
    all_taps = [simulate_clicks(m, seed=0) for m in masks]
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{len(masks)} instances took {elapsed:.2f} s"
    ordered = full = 0
    for m, taps in zip(masks, all_taps, strict=True):
        assert all(m[t.y, t.x] for t in taps)
        if len(taps) == 25:
            full += 1
            cy, cx = ndimage.center_of_mass(m)
            d = [np.mean([np.hypot(t.x - cx, t.y - cy) for t in taps if t.band == b]) for b in range(5)]
            ordered += all(d[i] <= d[i + 1] + 1.0 for i in range(4))
    assert full > 0.8 * len(masks)
    assert ordered >= 0.97 * full
