"""Overlap and surface-distance metrics for binary masks, with physical voxel spacing.

HD95 is the larger of the two directed 95th-percentile surface distances (as in MONAI), where
a surface voxel is a foreground voxel with a background 6-neighbour (outside the array counts
as background). A 2-D mask, and a volume of one slice, is an image: its surface is taken in
the plane (4-neighbours), else every pixel would border the empty slices above and below and
count as surface. A directed distance is the Euclidean distance (in mm, summed as
``((d0*s0)**2 + (d1*s1)**2) + (d2*s2)**2``) from a surface voxel of one mask to the nearest
surface voxel of the other; the percentile is numpy's default (linear) one.

How it is computed, exactly and with numpy only:

* each mask's surface is taken inside its own bounding box (outside it nothing is foreground,
  so the surface is unchanged); Dice/IoU count the intersection inside the boxes' overlap;
* distances run along lines on the axis with the finest spacing: for a query, the parallel
  lines are visited in increasing order of their in-plane distance, and on each line the gap
  to the nearest target comes from a byte table of gaps up to ``_TABLE_GAP`` voxels (built by
  scattering around each target), or, once that limit binds, from a binary search over sorted
  target keys; a query's best distance is final once it is no larger than the in-plane
  distance of the next line (and than the table's limit while the table is in use);
* HD95 needs only the two order statistics around the 95th percentile, so the search stops
  once that many of the smallest distances are final: every distance not yet final is
  provably at least as large as every final one, so the percentile is the same as on the
  full set of distances (``directed_surface_distances`` still computes all of them);
* queries still open after many lines (objects far apart) are finished by brute force when
  few, otherwise by the bounded separable distance transform used before (first axis exact,
  second axis by a doubling bound on the slices that hold open queries, third at the queries).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lightbox.sandbox.metrics._stats import check_binary

_FIRST_BOUND = 4
_MAX_LINES = 4096  # parallel lines visited per query before the fallback takes over
_TABLE_GAP = 15  # gaps along a line held in the byte table (at most 254)
_BRUTE_PAIRS = 1 << 20  # query-target pairs per brute-force chunk
# Rough costs of the fallbacks in units of one query-line visit (for choosing, not results):
_BRUTE_SPEEDUP = 3  # one brute-force query-target pair is about a third of a visit
_SEPARABLE_COST = 0.5  # visits per voxel of its box that the separable transform is worth (tuned on far-apart balls)
_PERCENTILE = 95


@dataclass(frozen=True)
class SegmentationScores:
    dice: float
    iou: float
    hd95: float  # NaN when exactly one of the masks is empty (undefined)


def _as_bool(mask: ArrayLike, name: str = "mask") -> NDArray[np.bool_]:
    """A mask of bool or of numbers that are exactly 0 or 1: NaN, -1 or 0.5 are refused, not
    read as foreground (a probability map must be thresholded by whoever knows the threshold)."""
    return check_binary(mask, name)


def _as_3d(mask: ArrayLike, name: str = "mask") -> NDArray[np.bool_]:
    arr = _as_bool(mask, name)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be 2-D or 3-D, got {arr.ndim}-D")
    return arr


def _spacing(spacing: Sequence[float] | NDArray[np.float64] | None, ndim_in: int) -> NDArray[np.float64]:
    """(slice, row, column) spacing for a mask of ``ndim_in`` dimensions. A 3-D mask needs all
    three (a missing slice spacing is not 1 mm); a 2-D mask takes (row, column), or three with
    the slice spacing, which has no effect on one plane."""
    if ndim_in not in (2, 3):
        raise ValueError(f"masks must be 2-D or 3-D, got {ndim_in}-D")
    if spacing is None:
        return np.ones(3)
    sp = np.asarray(spacing)
    if sp.dtype.kind not in "iuf" or sp.ndim != 1:
        raise ValueError("spacing must be a list of numbers (slice, row, column)")
    sp = sp.astype(float)
    allowed = (2, 3) if ndim_in == 2 else (3,)
    if sp.size not in allowed:
        what = "2 numbers (row, column) or 3 (slice, row, column)" if ndim_in == 2 else "3 numbers (slice, row, column)"
        raise ValueError(f"spacing for a {ndim_in}-D mask must be {what}, got {sp.size}")
    if not (np.isfinite(sp).all() and (sp > 0).all()):
        raise ValueError("spacing must be finite numbers > 0 (mm)")
    return np.r_[1.0, sp] if sp.size == 2 else sp


def _surface_axes(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Axes along which a voxel's neighbours count for the surface: all of them, except the
    slice axis of a one-slice volume (an image, not a slab one voxel thick)."""
    if len(shape) == 3 and shape[0] == 1:
        return (1, 2)
    return tuple(range(len(shape)))


def dice_iou(pred: ArrayLike, truth: ArrayLike) -> tuple[float, float]:
    """Dice and IoU; both masks empty counts as perfect agreement."""
    a, b = _as_bool(pred, "pred"), _as_bool(truth, "truth")
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return 1.0, 1.0
    inter = int(np.count_nonzero(a & b)) if sa and sb else 0
    return 2.0 * inter / (sa + sb), inter / (sa + sb - inter)


def _bounding_box(mask: NDArray[np.bool_]) -> tuple[slice, slice, slice] | None:
    """Smallest box holding every foreground voxel of a 3-D mask, or None if there is none."""
    rows = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if rows.size == 0:
        return None
    sub = mask[rows[0] : rows[-1] + 1]
    cols = np.flatnonzero(sub.any(axis=(0, 2)))
    deep = np.flatnonzero(sub.any(axis=(0, 1)))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1), slice(deep[0], deep[-1] + 1)


def surface(mask: ArrayLike, axes: Sequence[int] | None = None) -> NDArray[np.bool_]:
    """Foreground voxels with a background neighbour along one of ``axes``; outside the array is
    background. By default all axes (6-neighbours in 3-D, 4 in 2-D), except the slice axis of a
    one-slice volume. Give ``axes`` when ``mask`` is a crop of a larger volume."""
    mask = _as_bool(mask)
    chosen = _surface_axes(mask.shape) if axes is None else tuple(axes)
    if not all(isinstance(ax, (int, np.integer)) and 0 <= ax < mask.ndim for ax in chosen):
        raise ValueError(f"axes must be axes of the {mask.ndim}-D mask, got {chosen}")
    inner = mask.copy()
    for axis in chosen:
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        inner[tuple(hi)] &= mask[tuple(lo)]
        inner[tuple(lo)] &= mask[tuple(hi)]
        edge: list[slice | int] = [slice(None)] * mask.ndim
        for end in (0, -1):
            edge[axis] = end
            inner[tuple(edge)] = False
    return mask & ~inner


# --- exact nearest-target search ------------------------------------------------------------


def _ordered_sum(terms: dict[int, NDArray[np.float64]]) -> NDArray[np.float64]:
    """(t0 + t1) + t2, the order the reference (and the definition above) uses."""
    return (terms[0] + terms[1]) + terms[2]


def _brute_force_sq(q: NDArray[np.intp], t: NDArray[np.intp], sp: NDArray[np.float64]) -> NDArray[np.float64]:
    out = np.empty(len(q))
    chunk = max(1, _BRUTE_PAIRS // max(len(t), 1))
    for s in range(0, len(q), chunk):
        qq = q[s : s + chunk]
        terms = {ax: ((qq[:, ax, None] - t[None, :, ax]) * sp[ax]) ** 2 for ax in range(3)}
        out[s : s + chunk] = _ordered_sum(terms).min(axis=1)
    return out


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


def _separable_sq(q: NDArray[np.intp], t: NDArray[np.intp], spacing: NDArray[np.float64]) -> NDArray[np.float64]:
    """Exact squared distances by a separable transform with a doubling bound (far-apart objects)."""
    both = np.vstack([q, t])
    lo, hi = both.min(axis=0), both.max(axis=0) + 1
    crop = np.zeros(hi - lo, bool)
    tt = t - lo
    crop[tt[:, 0], tt[:, 1], tt[:, 2]] = True
    q = q - lo
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
    return result


def _nearest_sq(
    q: NDArray[np.intp], t: NDArray[np.intp], spacing: NDArray[np.float64], need: int
) -> tuple[NDArray[np.float64], float]:
    """Squared distance from each query voxel to its nearest target voxel (both (n, 3) indices).

    At least ``need`` entries are exact; the others are NaN and their true values are all
    >= the returned bound, which is >= every exact entry.

    Lines run along axis ``a`` (the finest spacing). For each query, parallel lines are visited
    in increasing in-plane distance; on each, the gap to the nearest target comes first from a
    table of gaps up to ``_TABLE_GAP`` voxels (one byte per voxel of the box), then, for queries
    still open once that limit binds, from a binary search over all target keys.
    """
    n = len(q)
    out = np.full(n, np.nan)
    if n == 0:
        return out, math.inf
    if len(t) == 0:
        out[:] = np.inf
        return out, math.inf
    lo = np.array([min(q[:, ax].min(), t[:, ax].min()) for ax in range(3)])
    hi = np.array([max(q[:, ax].max(), t[:, ax].max()) for ax in range(3)])
    q, t = q - lo, t - lo
    shape = hi - lo + 1
    # Lines run along the axis with the finest spacing (the last one among equals), leaving
    # out axes one voxel long (2-D masks).
    a = max(range(3), key=lambda ax: (bool(shape[ax] > 1), -spacing[ax], ax))
    b, c = (ax for ax in range(3) if ax != a)
    na, nb, nc = (int(shape[ax]) for ax in (a, b, c))

    # In-plane offsets (parallel lines) in increasing order of in-plane distance.
    radius = math.sqrt(_MAX_LINES * spacing[b] * spacing[c] / math.pi)
    eb, ec = min(nb - 1, int(radius / spacing[b])), min(nc - 1, int(radius / spacing[c]))
    db, dc = (v.ravel() for v in np.meshgrid(np.arange(-eb, eb + 1), np.arange(-ec, ec + 1), indexing="ij"))
    xb, xc = (db * spacing[b]) ** 2, (dc * spacing[c]) ** 2
    plane = xb + xc
    whole = eb == nb - 1 and ec == nc - 1
    if not whole:
        keep = plane <= radius * radius
        db, dc, xb, xc, plane = db[keep], dc[keep], xb[keep], xc[keep], plane[keep]
    by_cost = np.argsort(plane, kind="stable")
    db, dc, xb, xc, plane = db[by_cost], dc[by_cost], xb[by_cost], xc[by_cost], plane[by_cost]
    # Every target on a line not yet visited is at least this far (squared):
    next_plane = np.r_[plane[1:], np.inf if whole else radius * radius]
    along = (np.arange(max(na, 256) + 1) * spacing[a]) ** 2

    # Queries in the order of their lines (b, c), then along a: memory access stays local.
    order = np.argsort((q[:, b].astype(np.int64) * nc + q[:, c]) * na + q[:, a], kind="stable")
    q = q[order]
    pend = np.arange(n)
    best = np.full(n, np.inf)
    final = 0
    # Work is counted in query-line visits. Once the visits so far exceed what finishing the
    # open queries another way is estimated to cost, do that instead (at most twice the best).
    separable_cost = _SEPARABLE_COST * int(np.prod(shape))
    work = 0
    cols: NDArray[np.intp]  # bound below, before settle() first runs

    def too_long() -> bool:
        return work > min(separable_cost, pend.size * len(t) // _BRUTE_SPEEDUP)

    def settle(bound: float) -> bool:
        """Record the queries whose best is final; True once enough are."""
        nonlocal pend, best, final, cols
        ok = best <= bound
        if ok.any():
            out[order[pend[ok]]] = best[ok]
            final += int(np.count_nonzero(ok))
            keep = ~ok
            pend, best, cols = pend[keep], best[keep], cols[keep]
        return final >= need or pend.size == 0

    # Phase 1: a byte per voxel holds the gap to the nearest target on its line, up to g_max
    # (255: none that close). Lines are padded so that visited neighbours stay inside.
    g_max = _TABLE_GAP
    cap = float((g_max + 1) * spacing[a]) ** 2  # a gap beyond g_max costs at least this
    pb, pc = int(math.sqrt(cap) / spacing[b]) + 1, int(math.sqrt(cap) / spacing[c]) + 1
    wa, wc = na + g_max, nc + 2 * pc

    def flat(p: NDArray[np.intp]) -> NDArray[np.intp]:
        return g_max + ((p[:, b] + pb) * wc + (p[:, c] + pc)) * wa + p[:, a]

    table = np.full(g_max + (nb + 2 * pb) * wc * wa, 255, np.uint8)
    tf = flat(t)
    for d in range(g_max, 0, -1):
        table[tf + d] = d
        table[tf - d] = d
    table[tf] = 0
    near = along[:256].copy()
    near[g_max + 1 :] = np.inf
    cols = flat(q)
    shift = (db * wc + dc) * wa
    bound = 0.0
    for s in range(len(shift)):
        if plane[s] >= cap:
            break
        if too_long():
            break
        work += pend.size // 4
        lut = _ordered_sum({a: near, b: xb[s], c: xc[s]})  # squared distance for each gap
        np.minimum(best, lut.take(table[cols + shift[s]]), out=best)
        bound = min(float(next_plane[s]), cap)
        if settle(bound):
            return out, bound
    del table

    # Phase 2 (objects farther apart): the same walk from the first line, with exact gaps from
    # a binary search over sorted target keys. Keys on different lines differ by more than na.
    if not too_long():
        width, stride = 2 * na, 3 * nc

        def keys(p: NDArray[np.intp]) -> NDArray[np.int64]:
            return ((p[:, b].astype(np.int64) + nb) * stride + (p[:, c] + nc)) * width + p[:, a]

        tk = np.sort(keys(t))
        mid = (tk[:-1] + tk[1:]) // 2  # the nearest key to x is tk[searchsorted(mid, x)]
        cols = keys(q[pend])
        shift = (db.astype(np.int64) * stride + dc) * width
        along[na:] = np.inf  # a gap of na or more: no target on that line
        for s in range(len(shift)):
            if too_long():
                break
            work += pend.size
            moved = cols + shift[s]
            gap = tk[np.searchsorted(mid, moved)]
            gap -= moved
            np.abs(gap, out=gap)
            total = _ordered_sum({a: along.take(gap, mode="clip"), b: xb[s], c: xc[s]})
            np.minimum(best, total, out=best)
            bound = float(next_plane[s])
            if settle(bound):
                return out, bound

    # Objects far apart: finish the open queries another way.
    rest = order[pend]
    qr = q[pend]
    if len(rest) * len(t) // _BRUTE_SPEEDUP <= separable_cost:
        out[rest] = _brute_force_sq(qr, t, spacing)
    else:
        out[rest] = _separable_sq(qr, t, spacing)
    return out, math.inf


def _voxels(mask: NDArray[np.bool_], origin: Sequence[int] = (0, 0, 0)) -> NDArray[np.intp]:
    """(n, 3) indices of the foreground voxels, in C order, shifted by ``origin``."""
    flat = np.flatnonzero(mask)
    return np.stack(np.unravel_index(flat, mask.shape), axis=1) + np.asarray(origin, np.intp)


def directed_surface_distances(
    from_surface: NDArray[np.bool_], to_surface: NDArray[np.bool_], spacing: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Distance from every voxel of ``from_surface`` to the nearest voxel of ``to_surface``
    (3-D masks of one shape, or 2-D ones, which are taken as one slice)."""
    a, b = _pair(from_surface, to_surface, ("from_surface", "to_surface"))
    q = _voxels(a)
    sq, _ = _nearest_sq(q, _voxels(b), _spacing(spacing, np.ndim(from_surface)), len(q))
    return np.sqrt(sq)


def _directed_percentile(q: NDArray[np.intp], t: NDArray[np.intp], spacing: NDArray[np.float64]) -> float:
    """np.percentile(directed distances, 95), computing only the distances it depends on."""
    n = len(q)
    low = int(math.floor(_PERCENTILE / 100 * (n - 1)))
    sq, bound = _nearest_sq(q, t, spacing, min(low + 2, n))
    # Open entries are >= bound >= every exact entry, so standing in ``bound`` for them leaves
    # the order statistics np.percentile reads (positions low and low + 1) unchanged.
    sq[np.isnan(sq)] = bound
    return float(np.percentile(np.sqrt(sq), _PERCENTILE))


Box = tuple[slice, slice, slice]


def _pair(
    pred: ArrayLike, truth: ArrayLike, names: tuple[str, str] = ("pred", "truth")
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    a, b = _as_3d(pred, names[0]), _as_3d(truth, names[1])
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    return a, b


def _hd95(
    a: NDArray[np.bool_], b: NDArray[np.bool_], box_a: Box | None, box_b: Box | None, sp: NDArray[np.float64]
) -> float:
    if box_a is None and box_b is None:
        return 0.0
    if box_a is None or box_b is None:
        return float("nan")
    # A surface only depends on its own mask, and outside a mask's box there is no foreground;
    # whether the slice axis counts depends on the whole volume, not on the box.
    axes = _surface_axes(a.shape)
    qa = _voxels(surface(a[box_a], axes), [s.start for s in box_a])
    qb = _voxels(surface(b[box_b], axes), [s.start for s in box_b])
    return max(_directed_percentile(qa, qb, sp), _directed_percentile(qb, qa, sp))


def hd95(pred: ArrayLike, truth: ArrayLike, spacing: Sequence[float] | None = None) -> float:
    a, b = _pair(pred, truth)
    return _hd95(a, b, _bounding_box(a), _bounding_box(b), _spacing(spacing, np.ndim(pred)))


def score_masks(pred: ArrayLike, truth: ArrayLike, spacing: Sequence[float] | None = None) -> SegmentationScores:
    """Dice, IoU and HD95 (in the units of ``spacing``) of one predicted mask against the truth."""
    a, b = _pair(pred, truth)
    sp = _spacing(spacing, np.ndim(pred))
    box_a, box_b = _bounding_box(a), _bounding_box(b)
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    inter = 0
    if box_a is not None and box_b is not None:
        both = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(box_a, box_b, strict=True))
        if all(s.start < s.stop for s in both):
            inter = int(np.count_nonzero(a[both] & b[both]))
    d, j = (1.0, 1.0) if sa + sb == 0 else (2.0 * inter / (sa + sb), inter / (sa + sb - inter))
    return SegmentationScores(dice=d, iou=j, hd95=_hd95(a, b, box_a, box_b, sp))
