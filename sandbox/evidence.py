"""A run's sufficient statistics for pooling across regions, with small cells suppressed. Pure.

Scores are binned on fixed edges k/20. Cells smaller than the minimum are not dropped (that would
bias a pooled AUC) but merged with their neighbours, left to right, into wider cells of adjacent
fixed bins: statistical disclosure control by recoding. A class with fewer cases than the
minimum in all is suppressed whole. Confusion counts are suppressed in pairs, since the class
total is published.
"""

from __future__ import annotations

import numpy as np

from lightbox.api.evidence import BINS, Cell, Confusion, Evidence


def bin_of(scores: np.ndarray) -> np.ndarray:
    """Fixed bin index of each score in [0, 1]; 1.0 falls in the last bin."""
    return np.clip(np.floor(np.asarray(scores, dtype=float) * BINS).astype(int), 0, BINS - 1)


def coarsen(counts: np.ndarray, min_cell: int) -> list[Cell] | None:
    """Adjacent bins merged until every non-zero cell holds at least ``min_cell``; None if the
    class as a whole holds fewer."""
    total = int(counts.sum())
    if total < min_cell:
        return None
    cells: list[list[int]] = []
    start, pending = 0, 0
    for b, count in enumerate(counts.tolist()):
        pending += int(count)
        if pending == 0:
            cells.append([b, b + 1, 0])
            start = b + 1
        elif pending >= min_cell:
            cells.append([start, b + 1, pending])
            start, pending = b + 1, 0
    if pending:  # a short tail joins the last non-empty cell (and the empty cells in between)
        while cells and cells[-1][2] == 0:
            cells.pop()
        last = cells.pop()
        cells.append([last[0], BINS, last[2] + pending])
    return [(a, b, c) for a, b, c in _join_zero_runs(cells)]


def _join_zero_runs(cells: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for cell in cells:
        if out and cell[2] == 0 and out[-1][2] == 0:
            out[-1][1] = cell[1]
        else:
            out.append(list(cell))
    return out


def _pair(a: int, b: int, min_cell: int) -> tuple[int | None, int | None]:
    if 0 < a < min_cell or 0 < b < min_cell:
        return None, None
    return a, b


def sufficient_statistics(labels: np.ndarray, scores: np.ndarray, threshold: float, min_cell: int) -> Evidence:
    """Evidence of one classification run: ``labels`` 1 = positive, ``scores`` in [0, 1]."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    if s.size and (not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1):
        raise ValueError("scores must be finite and in [0, 1]")
    bins = bin_of(s)
    pos = np.bincount(bins[y], minlength=BINS)
    neg = np.bincount(bins[~y], minlength=BINS)
    called = s >= threshold
    tp, fn = _pair(int((called & y).sum()), int((~called & y).sum()), min_cell)
    fp, tn = _pair(int((called & ~y).sum()), int((~called & ~y).sum()), min_cell)
    return Evidence(
        min_cell=min_cell,
        threshold=threshold,
        positives=coarsen(pos, min_cell),
        negatives=coarsen(neg, min_cell),
        confusion=Confusion(tp=tp, fn=fn, fp=fp, tn=tn),
    )
