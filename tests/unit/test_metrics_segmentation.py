"""Dice, IoU and HD95 against scikit-learn, scipy's distance transform and a KD-tree over surface voxels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree
from sklearn.metrics import f1_score, jaccard_score

from lightbox.sandbox.metrics import segmentation as seg


def reference_hd95(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> float:
    def surface(m: np.ndarray) -> np.ndarray:
        if m.shape[0] == 1:  # a one-slice volume is an image: erode in the plane
            return (m[0] & ~ndimage.binary_erosion(m[0], border_value=0))[None]
        return m & ~ndimage.binary_erosion(m, border_value=0)

    pa, pb = np.argwhere(surface(a)) * spacing, np.argwhere(surface(b)) * spacing
    return max(np.percentile(cKDTree(pb).query(pa)[0], 95), np.percentile(cKDTree(pa).query(pb)[0], 95))


def _blobs(seed: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = ndimage.binary_opening(rng.random(shape) < 0.35)
    b = ndimage.binary_dilation(rng.random(shape) < 0.02, iterations=int(rng.integers(1, 3)))
    return a, b


@pytest.mark.parametrize("seed", range(6))
def test_dice_and_iou_match_sklearn(seed: int) -> None:
    a, b = _blobs(seed, (12, 20, 17))
    d, j = seg.dice_iou(a, b)
    assert d == pytest.approx(f1_score(b.ravel(), a.ravel()))
    assert j == pytest.approx(jaccard_score(b.ravel(), a.ravel()))


@pytest.mark.parametrize("seed", range(8))
def test_hd95_matches_kdtree_reference_with_anisotropic_spacing(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    shape = tuple(int(v) for v in rng.integers(6, 40, 3))
    a, b = _blobs(seed, shape)
    a[0, 0, 0] = b[-1, -1, -1] = True  # neither empty, whatever the draw
    spacing = rng.uniform(0.3, 3.0, 3)
    assert seg.hd95(a, b, spacing) == pytest.approx(reference_hd95(a, b, spacing), rel=1e-12)


def test_hd95_far_apart_objects_need_the_wide_search() -> None:
    a = np.zeros((4, 120, 120), bool)
    b = np.zeros_like(a)
    a[1:3, 5:15, 5:15] = True
    b[1:3, 100:110, 90:115] = True
    sp = np.array([2.5, 0.7, 0.9])
    assert seg.hd95(a, b, sp) == pytest.approx(reference_hd95(a, b, sp), rel=1e-12)


def _offset_squares(k: int, axis: int = 0, size: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Two size x size squares in a 2-D image, the second moved k pixels along ``axis``."""
    a = np.zeros((40, 40), bool)
    a[8 : 8 + size, 8 : 8 + size] = True
    return a, np.roll(a, k, axis=axis)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_two_dimensional_offset_squares_have_the_offset_as_hd95(k: int) -> None:
    """Known answer (MONAI and medpy agree): on the 4-neighbour outline, the 20 pixels of the
    leading edge are k from the other square's outline and no outline pixel is farther, so at
    least 20 of 76 are at the maximum and the 95th percentile is k. Taking every pixel as
    surface put only 20 of 400 pixels at k and gave 0.05, 2.05, 4.05."""
    a, b = _offset_squares(k)
    assert seg.hd95(a, b) == k
    assert seg.score_masks(a, b).hd95 == k
    # The same image stored as a one-slice volume (a single-slice study) is still an image.
    assert seg.hd95(a[None], b[None]) == k
    assert seg.score_masks(a[None].astype(np.uint8), b[None].astype(np.uint8), [3.0, 1.0, 1.0]).hd95 == k


@pytest.mark.parametrize("k", [1, 3, 5])
def test_two_dimensional_hd95_in_millimetres_with_anisotropic_spacing(k: int) -> None:
    # Rows 2.0 mm apart, columns 0.5 mm: a shift of k rows is 2k mm, of k columns k/2 mm
    # (every other outline pixel is at least that many rows or columns away, by the same count).
    rows, cols = _offset_squares(k, axis=0), _offset_squares(k, axis=1)
    assert seg.hd95(*rows, [2.0, 0.5]) == 2.0 * k
    assert seg.hd95(*cols, [2.0, 0.5]) == 0.5 * k
    # (slice, row, column) spacing as the stage step writes it: the slice spacing has no effect.
    assert seg.hd95(rows[0][None], rows[1][None], [7.5, 2.0, 0.5]) == 2.0 * k
    assert seg.hd95(*rows, [7.5, 2.0, 0.5]) == 2.0 * k


def edt_directed_2d(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scipy on the 2-D array itself: surfaces by erosion with the 2-D cross, distances by the
    2-D Euclidean distance transform."""
    sa = a & ~ndimage.binary_erosion(a, border_value=0)
    sb = b & ~ndimage.binary_erosion(b, border_value=0)
    return ndimage.distance_transform_edt(~sb, sampling=spacing)[sa], ndimage.distance_transform_edt(
        ~sa, sampling=spacing
    )[sb]


def edt_hd95_2d(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> float:
    d_ab, d_ba = edt_directed_2d(a, b, spacing)
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


@pytest.mark.parametrize("seed", range(10))
def test_two_dimensional_and_single_slice_hd95_equal_scipy_on_the_2d_array(seed: int) -> None:
    rng = np.random.default_rng(500 + seed)
    shape = tuple(int(v) for v in rng.integers(8, 60, 2))
    a = ndimage.binary_opening(rng.random(shape) < 0.4)
    b = ndimage.binary_dilation(rng.random(shape) < 0.03, iterations=int(rng.integers(1, 3)))
    a[0, 0] = b[-1, -1] = True  # neither empty
    spacing = rng.uniform(0.2, 3.0, 2)
    expected = edt_hd95_2d(a, b, spacing)
    assert seg.hd95(a, b, spacing) == pytest.approx(expected, rel=1e-12)
    assert seg.hd95(a[None], b[None], np.r_[2.0, spacing]) == pytest.approx(expected, rel=1e-12)
    d_ab = ndimage.distance_transform_edt(~seg.surface(b), sampling=spacing)[seg.surface(a)]
    assert seg.directed_surface_distances(seg.surface(a), seg.surface(b), spacing) == pytest.approx(d_ab, rel=1e-12)


def test_surface_of_an_image_is_its_outline() -> None:
    a, _ = _offset_squares(0, size=4)
    outline = a & ~ndimage.binary_erosion(a)
    assert seg.surface(a).sum() == 12 and np.array_equal(seg.surface(a), outline)  # 4 x 4 less its 2 x 2 inside
    assert np.array_equal(seg.surface(a[None])[0], outline)
    # In a volume of several slices a one-slice-thick object is all surface (its neighbours on
    # the slices above and below are background): 3-D stays 3-D.
    vol = np.zeros((3, 40, 40), bool)
    vol[1] = a
    assert np.array_equal(seg.surface(vol)[1], a)


def test_one_slice_object_in_a_volume_is_scored_in_3d() -> None:
    a, b = _offset_squares(3)
    va, vb = np.zeros((3, 40, 40), bool), np.zeros((3, 40, 40), bool)
    va[1], vb[1] = a, b
    spacing = np.array([2.0, 1.0, 1.0])
    assert seg.hd95(va, vb, spacing) == edt_hd95(va, vb, spacing)


def test_spacing_must_fit_the_mask() -> None:
    vol = np.zeros((4, 6, 6), bool)
    vol[1:3, 2:4, 2:4] = True
    with pytest.raises(ValueError, match="3-D mask must be 3 numbers"):
        seg.hd95(vol, vol, [0.5, 0.5])  # a missing slice spacing is not 1 mm
    with pytest.raises(ValueError, match="2-D mask must be 2 numbers"):
        seg.hd95(vol[1], vol[1], [1.0, 1.0, 1.0, 1.0])
    for bad in ([0.0, 1.0, 1.0], [-1.0, 1.0, 1.0], [np.inf, 1.0, 1.0], [np.nan, 1.0, 1.0]):
        with pytest.raises(ValueError, match="finite numbers > 0"):
            seg.score_masks(vol, vol, bad)
    with pytest.raises(ValueError, match="list of numbers"):
        seg.hd95(vol, vol, ["1", "1", "1"])
    assert seg.hd95(vol[1], vol[1], [1.0, 1.0, 1.0]) == 0.0  # (slice, row, column) for an image


@pytest.mark.parametrize("bad", [np.nan, -1.0, 0.3, 2.0])
def test_masks_hold_only_zero_and_one(bad: float) -> None:
    truth = np.zeros((2, 5, 5))
    truth[0, 1:3, 1:3] = 1
    pred = truth.copy()
    pred[1, 4, 4] = bad  # was read as foreground
    for fn in (seg.dice_iou, seg.hd95, seg.score_masks):
        with pytest.raises(ValueError, match="pred must hold only 0 and 1"):
            fn(pred, truth)
        with pytest.raises(ValueError, match="truth must hold only 0 and 1"):
            fn(truth, pred)
    with pytest.raises(ValueError, match="mask must hold only 0 and 1"):
        seg.surface(pred)
    with pytest.raises(ValueError, match="from_surface must hold only 0 and 1"):
        seg.directed_surface_distances(pred, truth, [1.0, 1.0, 1.0])
    ints = np.array([[0, 1], [-1, 0]])
    with pytest.raises(ValueError, match="pred must hold only 0 and 1"):
        seg.dice_iou(ints, np.abs(ints))
    with pytest.raises(ValueError, match="must be 0/1 or bool"):
        seg.dice_iou(np.array([["a", "b"]]), np.array([["a", "b"]]))


def test_empty_mask_conventions() -> None:
    empty = np.zeros((3, 5, 5), bool)
    full = np.ones((3, 5, 5), bool)
    assert seg.score_masks(empty, empty) == seg.SegmentationScores(1.0, 1.0, 0.0)
    r = seg.score_masks(empty, full)
    assert (r.dice, r.iou) == (0.0, 0.0) and math.isnan(r.hd95)


def test_identical_masks_are_perfect() -> None:
    a, _ = _blobs(1, (10, 10, 10))
    assert seg.score_masks(a, a) == seg.SegmentationScores(1.0, 1.0, 0.0)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        seg.dice_iou(np.zeros((2, 2)), np.zeros((2, 3)))


# --- exactness against scipy's Euclidean distance transform --------------------------------
#
# The reference below is what medpy/MONAI do: surfaces by binary erosion, then
# distance_transform_edt over the whole volume per direction. It sums squared per-axis
# distances in the same order as the scorer, so values must agree to the last bit.


def edt_directed(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape[0] == 1:  # a one-slice volume is an image: the reference works on the 2-D array
        return edt_directed_2d(a[0], b[0], np.asarray(spacing)[1:])
    sa = a & ~ndimage.binary_erosion(a, border_value=0)
    sb = b & ~ndimage.binary_erosion(b, border_value=0)
    return (
        ndimage.distance_transform_edt(~sb, sampling=spacing)[sa],
        ndimage.distance_transform_edt(~sa, sampling=spacing)[sb],
    )


def edt_hd95(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> float:
    d_ab, d_ba = edt_directed(a, b, spacing)
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + seed)
    shape = tuple(int(v) for v in rng.integers(1, 28, 3))
    a = rng.random(shape) < rng.uniform(0.01, 0.5)
    if seed % 3 == 0:
        a = ndimage.binary_opening(a)
    b = ndimage.binary_dilation(rng.random(shape) < rng.uniform(0.002, 0.05), iterations=int(rng.integers(0, 3)))
    for m in (a, b):  # an empty draw becomes a one-voxel mask
        if not m.any():
            m[tuple(int(rng.integers(n)) for n in shape)] = True
    spacing = rng.uniform(0.2, 3.0, 3)
    if seed % 4 == 0:  # ties in spacing decide which axis the search runs along
        spacing[rng.integers(3)] = spacing[rng.integers(3)]
    return a, b, spacing


@pytest.mark.parametrize("seed", range(40))
def test_hd95_and_directed_distances_equal_distance_transform_on_random_anisotropic_masks(seed: int) -> None:
    a, b, spacing = _random_case(seed)
    d_ab, d_ba = edt_directed(a, b, spacing)
    assert np.array_equal(seg.directed_surface_distances(seg.surface(a), seg.surface(b), spacing), d_ab)
    assert np.array_equal(seg.directed_surface_distances(seg.surface(b), seg.surface(a), spacing), d_ba)
    assert seg.hd95(a, b, spacing) == edt_hd95(a, b, spacing)
    assert seg.hd95(a, b, spacing) == pytest.approx(reference_hd95(a, b, spacing), rel=1e-12)


@pytest.mark.parametrize("finest", range(3))
def test_hd95_exact_whichever_axis_is_finest(finest: int) -> None:
    a, b = _blobs(7, (18, 21, 16))
    spacing = np.array([1.7, 1.3, 2.1])
    spacing[finest] = 0.4
    assert seg.hd95(a, b, spacing) == edt_hd95(a, b, spacing)


@pytest.mark.parametrize(
    "limits",
    [
        {"_MAX_LINES": 1},  # every open query goes to a fallback at once
        {"_MAX_LINES": 5, "_SEPARABLE_COST": 10**9},  # brute force
        {"_MAX_LINES": 5, "_BRUTE_SPEEDUP": 10**-9},  # separable transform
        {"_SEPARABLE_COST": 0},  # switch after the first line
        {"_TABLE_GAP": 0},  # the gap table only knows hits; binary search does the rest
        {"_TABLE_GAP": 2, "_MAX_LINES": 30},
    ],
)
@pytest.mark.parametrize("seed", range(6))
def test_search_phases_and_fallbacks_are_exact(
    monkeypatch: pytest.MonkeyPatch, limits: dict[str, float], seed: int
) -> None:
    for name, value in limits.items():
        monkeypatch.setattr(seg, name, value)
    a, b, spacing = _random_case(seed)
    d_ab, _ = edt_directed(a, b, spacing)
    assert np.array_equal(seg.directed_surface_distances(seg.surface(a), seg.surface(b), spacing), d_ab)
    assert seg.hd95(a, b, spacing) == edt_hd95(a, b, spacing)


def test_far_apart_objects_and_a_stray_voxel_are_exact() -> None:
    shape = (20, 90, 100)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    a = (z - 10) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 36
    b = (z - 9) ** 2 + (y - 70) ** 2 + (x - 80) ** 2 < 64
    spacing = np.array([2.0, 0.8, 0.6])
    assert seg.hd95(a, b, spacing) == edt_hd95(a, b, spacing)
    c = b.copy()
    c[0, 0, 0] = True  # one far outlier among many near voxels: above the 95th percentile
    near = (z - 9) ** 2 + (y - 70) ** 2 + (x - 79) ** 2 < 64
    assert seg.hd95(c, near, spacing) == edt_hd95(c, near, spacing)
    assert seg.hd95(near, c, spacing) == edt_hd95(near, c, spacing)


def test_one_voxel_masks() -> None:
    a = np.zeros((5, 9, 11), bool)
    b = np.zeros_like(a)
    a[1, 2, 3] = True
    b[4, 7, 1] = True
    spacing = np.array([2.5, 0.9, 0.6])
    expected = math.sqrt((3 * 2.5) ** 2 + (5 * 0.9) ** 2 + (2 * 0.6) ** 2)
    assert seg.hd95(a, b, spacing) == pytest.approx(expected, rel=1e-15)
    assert seg.hd95(a, b, spacing) == edt_hd95(a, b, spacing)
    assert seg.score_masks(a, a, spacing) == seg.SegmentationScores(1.0, 1.0, 0.0)
    r = seg.score_masks(a, b, spacing)
    assert (r.dice, r.iou) == (0.0, 0.0)
    blob = np.zeros_like(a)
    blob[1:4, 3:8, 2:9] = True
    blob[2, 5, 5] = False
    assert seg.hd95(a, blob, spacing) == edt_hd95(a, blob, spacing)
    assert seg.hd95(blob, a, spacing) == edt_hd95(blob, a, spacing)
    empty = np.zeros_like(a)
    assert math.isnan(seg.hd95(a, empty, spacing)) and math.isnan(seg.hd95(empty, a, spacing))
    assert seg.hd95(empty, empty, spacing) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_score_masks_dice_matches_dice_iou_and_accepts_0_1_numbers(seed: int) -> None:
    a, b, _ = _random_case(seed)
    a[..., : a.shape[-1] // 3] = False  # bounding boxes that only partly overlap
    b[..., 2 * b.shape[-1] // 3 :] = False
    a[0, 0, -1] = b[-1, -1, 0] = True  # neither mask empty
    r = seg.score_masks(a.astype(np.uint8), b.astype(np.float32), [1.5, 0.5, 0.7])
    assert (r.dice, r.iou) == seg.dice_iou(a, b)
    assert r.hd95 == seg.hd95(a, b, [1.5, 0.5, 0.7])
