"""Overlap and surface-distance metrics for binary masks, with physical voxel spacing.

HD95 is the larger of the two directed 95th-percentile surface distances (as in MONAI), where
a surface voxel is a foreground voxel with a background 6-neighbour (outside the array counts
as background). Distances come from a separable Euclidean distance transform evaluated only
where it is needed: exact 1-D distances along the first axis, a bounded parabola minimum along
the second, and the third axis only at the query voxels. A distance is accepted when it is
provably within the bound; the rest are recomputed with a larger bound, so results are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

_FIRST_BOUND = 4


@dataclass(frozen=True)
class SegmentationScores:
    dice: float
    iou: float
    hd95: float  # NaN when exactly one of the masks is empty (undefined)


def _as_3d(mask: ArrayLike) -> NDArray[np.bool_]:
    arr = np.asarray(mask).astype(bool)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"masks must be 2-D or 3-D, got {arr.ndim}-D")
    return arr


def _spacing(spacing: Sequence[float] | None, ndim_in: int) -> NDArray[np.float64]:
    if spacing is None:
        return np.ones(3)
    sp = np.asarray(spacing, dtype=float).ravel()
    if sp.size == 2:
        sp = np.r_[1.0, sp]
    if sp.size != 3 or not np.all(sp > 0):
        raise ValueError("spacing must be 2 or 3 positive numbers (slice, row, column)")
    return sp


def dice_iou(pred: ArrayLike, truth: ArrayLike) -> tuple[float, float]:
    """Dice and IoU; both masks empty counts as perfect agreement."""
    a, b = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    inter = int(np.count_nonzero(a & b))
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return 1.0, 1.0
    return 2.0 * inter / (sa + sb), inter / (sa + sb - inter)


def surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    padded = np.pad(mask, 1)
    inner = mask.copy()
    core = (slice(1, -1),) * 3
    for axis in range(3):
        for lo, hi in ((0, -2), (2, None)):
            sl = list(core)
            sl[axis] = slice(lo, hi)
            inner &= padded[tuple(sl)]
    return mask & ~inner


def _first_axis_sq(features: NDArray[np.bool_], step: float) -> NDArray[np.float64]:
    """Squared distance along axis 0 to the nearest feature on the same line (inf if none)."""
    n = features.shape[0]
    pos = np.arange(n, dtype=np.int32).reshape((n,) + (1,) * (features.ndim - 1))
    far = np.int32(4 * n + 4)  # farther than any feature, still small enough not to overflow
    last = np.maximum.accumulate(np.where(features, pos, -far), axis=0)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(features, pos, far), axis=0), axis=0), axis=0)
    gap = np.minimum(pos - last, nxt - pos)
    d = gap.astype(float) * step
    d[gap > 2 * n] = np.inf
    return d * d


def _extend_second_axis_sq(
    g: NDArray[np.float64], f: NDArray[np.float64], done: int, bound: int, step: float
) -> None:
    """Fold offsets done+1..bound along axis 1 into ``g`` (the minimum is incremental in the bound)."""
    for d in range(done + 1, min(bound, f.shape[1] - 1) + 1):
        w = (d * step) ** 2
        np.minimum(g[:, d:], f[:, :-d] + w, out=g[:, d:])
        np.minimum(g[:, :-d], f[:, d:] + w, out=g[:, :-d])


def _third_axis_at(g: NDArray[np.float64], q: NDArray[np.intp], bound: int, step: float) -> NDArray[np.float64]:
    i, j, k = q[:, 0], q[:, 1], q[:, 2]
    best = g[i, j, k].copy()
    size = g.shape[2]
    for d in range(1, min(bound, size - 1) + 1):
        w = (d * step) ** 2
        for kk in (k + d, k - d):
            ok = (kk >= 0) & (kk < size)
            cand = np.full(best.shape, np.inf)
            cand[ok] = g[i[ok], j[ok], kk[ok]] + w
            np.minimum(best, cand, out=best)
    return best


def directed_surface_distances(
    from_surface: NDArray[np.bool_], to_surface: NDArray[np.bool_], spacing: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Distance from every voxel of ``from_surface`` to the nearest voxel of ``to_surface``."""
    queries = np.argwhere(from_surface)
    targets = np.argwhere(to_surface)
    if queries.size == 0:
        return np.empty(0)
    if targets.size == 0:
        return np.full(len(queries), np.inf)
    both = np.vstack([queries, targets])
    lo, hi = both.min(axis=0), both.max(axis=0) + 1
    crop = to_surface[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    q = queries - lo
    first = _first_axis_sq(crop, spacing[0])
    second = first.copy()
    result = np.full(len(q), np.nan)
    pending = np.arange(len(q))
    done, bound = 0, _FIRST_BOUND
    min_step = min(spacing[1], spacing[2])
    while pending.size:
        full = bound >= max(crop.shape[1], crop.shape[2])
        # Only slices (first axis) holding unresolved queries need the wider search; the set
        # shrinks as queries resolve, so every slice in it has been searched up to ``done``.
        rows = np.unique(q[pending, 0])
        part = second[rows]
        _extend_second_axis_sq(part, first[rows], done, bound, spacing[1])
        second[rows] = part
        sq = _third_axis_at(second, q[pending], bound, spacing[2])
        exact = np.ones(sq.shape, bool) if full else sq < ((bound + 1) * min_step) ** 2
        result[pending[exact]] = sq[exact]
        pending = pending[~exact]
        done, bound = bound, bound * 2
    return np.sqrt(result)


def hd95(pred: ArrayLike, truth: ArrayLike, spacing: Sequence[float] | None = None) -> float:
    a, b = _as_3d(pred), _as_3d(truth)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    sp = _spacing(spacing, np.ndim(pred))
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("nan")
    sa, sb = surface(a), surface(b)
    return float(
        max(
            np.percentile(directed_surface_distances(sa, sb, sp), 95),
            np.percentile(directed_surface_distances(sb, sa, sp), 95),
        )
    )


def score_masks(pred: ArrayLike, truth: ArrayLike, spacing: Sequence[float] | None = None) -> SegmentationScores:
    d, j = dice_iou(pred, truth)
    return SegmentationScores(dice=d, iou=j, hd95=hd95(pred, truth, spacing))
