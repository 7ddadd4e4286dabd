"""Dice, IoU and HD95 against scikit-learn and a KD-tree over surface voxels."""

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
    if not a.any() or not b.any():
        pytest.skip("empty draw")
    spacing = rng.uniform(0.3, 3.0, 3)
    assert seg.hd95(a, b, spacing) == pytest.approx(reference_hd95(a, b, spacing), rel=1e-12)


def test_hd95_far_apart_objects_need_the_wide_search() -> None:
    a = np.zeros((4, 120, 120), bool)
    b = np.zeros_like(a)
    a[1:3, 5:15, 5:15] = True
    b[1:3, 100:110, 90:115] = True
    sp = np.array([2.5, 0.7, 0.9])
    assert seg.hd95(a, b, sp) == pytest.approx(reference_hd95(a, b, sp), rel=1e-12)


def test_two_dimensional_masks_take_row_and_column_spacing() -> None:
    a = np.zeros((30, 30), bool)
    b = np.zeros_like(a)
    a[5:15, 5:15] = True
    b[8:20, 6:18] = True
    got = seg.hd95(a, b, [0.5, 2.0])
    assert got == pytest.approx(reference_hd95(a[None], b[None], np.array([1.0, 0.5, 2.0])))


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
