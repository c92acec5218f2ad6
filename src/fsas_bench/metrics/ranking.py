"""The one sort behind every exact metric, and the counts read off it (spec metrics.md §2.1, §9).

A category's scores are ranked once: every score sorted ascending (the pool), plus the scores of the
positive class sorted with a float64 tail sum of their weights (1/n⁺ each for TPR, 1/(R·|r|) for PRO).
The number of samples with ``score >= t`` (or ``> t``) in each channel — all, positive, positive weight —
is then a binary search, so a whole curve costs O(m log n) for m thresholds after the O(n log n) sort.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

# Below this many scores a single-threaded sort is as fast as the threaded one.
_PARALLEL_SORT_MIN = 1 << 20


class RankedScores(NamedTuple):
    """A category's scores, ranked.

    pool: (n,) every score, ascending.
    positives: (n⁺,) the positive-class scores, ascending, same dtype as ``pool``.
    tail_weight: (n⁺ + 1,) float64; ``tail_weight[j]`` is the weight of ``positives[j:]`` (0 at j = n⁺).
    """

    pool: Tensor
    positives: Tensor
    tail_weight: Tensor

    @property
    def n_pos(self) -> int:
        return self.positives.numel()

    @property
    def n_neg(self) -> int:
        return self.pool.numel() - self.positives.numel()


class Counts(NamedTuple):
    """Per threshold: negatives (fp, int64), positives (tp, int64) and positive weight (float64) at or above it."""

    fp: Tensor
    tp: Tensor
    weight: Tensor


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scores are ranked in: float32 or float64, holding every input value exactly (float16 → float32)."""
    return torch.promote_types(dtype, torch.float32)


def rank_scores(scores: Tensor, positive_index: Tensor, weights: Tensor | None = None) -> RankedScores:
    """Rank (n,) ``scores`` of which the (n⁺,) int64 ``positive_index`` are the positive class.

    ``weights``: (n⁺,) float64 weight of each positive, in ``positive_index`` order; default 1/n⁺ each,
    which makes the weight channel the TPR.
    """
    dtype = score_dtype(scores.dtype)
    positives = scores[positive_index].to(dtype)
    if weights is None:
        weights = torch.full_like(positives, 1.0 / max(positives.numel(), 1), dtype=torch.float64)
    positives, order = torch.sort(positives)
    tail = weights[order].flip(0).cumsum(0).flip(0)
    return RankedScores(_sorted_copy(scores, dtype), positives, torch.cat([tail, tail.new_zeros(1)]))


def counts_above(ranked: RankedScores, thresholds: Tensor, strict: bool) -> Counts:
    """Counts of the samples with ``score > t`` (``strict``) or ``score >= t``, for each of the (m,) thresholds."""
    side = "right" if strict else "left"
    n_all = ranked.pool.numel() - torch.searchsorted(ranked.pool, thresholds, side=side)
    j = torch.searchsorted(ranked.positives, thresholds, side=side)
    tp = ranked.n_pos - j
    return Counts(n_all - tp, tp, ranked.tail_weight[j])


def distinct_positive_scores(ranked: RankedScores) -> Tensor:
    """t_1 > … > t_m, the distinct positive scores: the only thresholds the exact curves need.

    A threshold at a negative-only score lies on the straight segment between the ``>= t_k`` point and the
    ``> t_{k+1}`` point of the curve, so it adds no area, no AP term and no larger F1.
    """
    return torch.unique_consecutive(ranked.positives).flip(0)


def partial_area(x: Tensor, y: Tensor, limit: float) -> float:
    """Trapezoidal area under the polyline (x, y) for x ≤ ``limit``; x non-decreasing, x[0] ≤ limit.

    Points with x == limit count; a segment crossing ``limit`` is cut there, y interpolated linearly.
    """
    k = int(torch.searchsorted(x, x.new_tensor([limit]), right=True))
    area = torch.trapezoid(y[:k], x[:k]).item()
    if k < x.numel() and x[k - 1] < limit:
        x0, x1, y0, y1 = x[k - 1].item(), x[k].item(), y[k - 1].item(), y[k].item()
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += (limit - x0) * (y0 + y_limit) / 2
    return area


def _sorted_copy(scores: Tensor, dtype: torch.dtype) -> Tensor:
    """An ascending copy of the (n,) ``scores`` in ``dtype``.

    Off the CPU this is ``torch.sort``. On the CPU, ``torch.sort`` returns int64 indices nobody needs and its
    radix sort double-buffers keys and indices (about 24 bytes per float32 score), so one copy is sorted in
    place with numpy instead: contiguous chunks in parallel threads (the sort releases the GIL), then a stable
    sort (timsort), which merges the presorted chunks in linear time and at most half a copy of extra memory.
    """
    if scores.device.type != "cpu":
        return torch.sort(scores.to(dtype)).values
    pool = torch.empty(scores.shape, dtype=dtype)
    pool.copy_(scores)
    array = pool.numpy()
    workers = torch.get_num_threads() if array.size >= _PARALLEL_SORT_MIN else 1
    if workers > 1:
        with ThreadPoolExecutor(workers) as executor:
            list(executor.map(np.ndarray.sort, np.array_split(array, workers)))
        array.sort(kind="stable")
    else:
        array.sort()
    return pool
