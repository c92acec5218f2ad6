"""ROC and PRO curves of one category, for drawing (spec metrics.md §2): the exact polylines whose areas the metrics
integrate, downsampled to a few hundred of their own vertices.

The metric values themselves always come from :func:`fsas_bench.metrics.evaluate`; a curve is only a picture
of them. Vertices are read off one ranking per level, like the metrics: (0, 0), then for every distinct
positive score t in decreasing order the ``score > t`` and ``score >= t`` points, then the end point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fsas_bench.metrics.functional import _CHUNK
from fsas_bench.metrics.inputs import as_tensor, check_image_inputs, check_pixel_inputs
from fsas_bench.metrics.ranking import RankedScores, counts_above, distinct_positive_scores, rank_scores
from fsas_bench.metrics.regions import GroundTruthRegions

CURVE_POINTS = 300
"""Default number of vertices a drawn curve keeps."""
_OVERSAMPLING = 2
"""Thresholds taken per kept vertex, among the positives' and all scores, before the even-length downsampling."""

Curve = tuple[np.ndarray, np.ndarray]
"""(x, y): two (P,) float64 arrays, x non-decreasing from 0 to 1."""


def curves(
    image_scores: Any,
    image_labels: Any,
    anomaly_maps: Any = None,
    regions: GroundTruthRegions | None = None,
    max_points: int | None = CURVE_POINTS,
) -> dict[str, Curve]:
    """The image ROC and, given maps and regions, the pixel ROC and the PRO curve of one category.

    Args:
        image_scores: (N,) image scores, raw.
        image_labels: (N,) 0 normal / 1 anomalous.
        anomaly_maps: (N, H, W) pixel scores.
        regions: the masks' :class:`GroundTruthRegions` (same shape as the maps).
        max_points: vertices kept per curve (``None``: every vertex).

    Returns:
        ``I-ROC`` (FPR, TPR), ``P-ROC`` (FPR, TPR) and ``PRO`` (FPR, per-region overlap) over the whole
        FPR range [0, 1]; a curve is absent where its metric is undefined (one class only).
    """
    scores, labels = as_tensor(image_scores), as_tensor(image_labels)
    check_image_inputs(scores, labels)
    out: dict[str, Curve] = {}
    positive_index = labels.nonzero().squeeze(1).to(scores.device)
    if 0 < positive_index.numel() < labels.numel():
        fpr, tpr, _ = _vertices(rank_scores(scores, positive_index), max_points)
        out["I-ROC"] = downsample(fpr, tpr, max_points)
    if anomaly_maps is None or regions is None:
        return out
    maps = as_tensor(anomaly_maps)
    check_pixel_inputs(maps, regions.shape, len(scores))
    if regions.num_defect_pixels == 0 or regions.num_normal_pixels == 0:
        return out
    regions = regions.to(maps.device)
    ranked = rank_scores(maps.reshape(-1), regions.defect_index, regions.pro_weights())
    fpr, tpr, pro = _vertices(ranked, max_points)
    out["P-ROC"] = downsample(fpr, tpr, max_points)
    out["PRO"] = downsample(fpr, pro, max_points)
    return out


def _thresholds(ranked: RankedScores, max_points: int | None) -> torch.Tensor:
    """Decreasing thresholds: every distinct positive score, or (given ``max_points``) at most
    ``_OVERSAMPLING · max_points`` of them and as many of all scores, evenly spaced in rank."""
    distinct = distinct_positive_scores(ranked)
    if max_points is None:
        return distinct
    n = _OVERSAMPLING * max_points
    picks = [distinct[_even(distinct.numel(), n)], ranked.pool[_even(ranked.pool.numel(), n)].to(distinct.dtype)]
    return torch.unique(torch.cat(picks)).flip(0)


def _even(size: int, n: int) -> torch.Tensor:
    """At most ``n`` indices into ``size`` items, evenly spaced, first and last included."""
    return torch.linspace(0, size - 1, min(n, size)).round().long().unique()


def _vertices(ranked: RankedScores, max_points: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FPR, TPR and weight (PRO, or TPR again for the default weights) at (0, 0), the points of the thresholds t
    (decreasing), and (1, 1, Σ weights). Exact curves (``max_points`` None) take the ``> t`` and ``>= t`` points
    of every distinct positive score; drawn ones the ``>= t`` point of each sampled threshold, a curve point too."""
    n_pos, n_neg = ranked.n_pos, ranked.n_neg
    parts = [(np.zeros(1), np.zeros(1), np.zeros(1))]
    for t in _thresholds(ranked, max_points).split(_CHUNK):
        counts = [counts_above(ranked, t, strict=False)]
        if max_points is None:
            counts.insert(0, counts_above(ranked, t, strict=True))
        fp, tp, weight = (torch.stack(c, dim=1).reshape(-1).cpu().numpy() for c in zip(*counts))
        parts.append((fp / n_neg, tp / n_pos, weight))
    parts.append((np.ones(1), np.ones(1), ranked.tail_weight[:1].cpu().numpy()))
    return tuple(np.concatenate(column).astype(np.float64) for column in zip(*parts))  # type: ignore[return-value]


def downsample(x: np.ndarray, y: np.ndarray, max_points: int | None = CURVE_POINTS) -> Curve:
    """At most ``max_points`` of the polyline's own vertices, evenly spaced along its length (|dx| + |dy|).

    Repeated consecutive vertices are dropped first; the first and last vertices are always kept, so the
    drawn curve starts and ends where the exact one does. ``max_points`` ≥ 2, or ``None`` to keep all.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = (np.diff(x) != 0) | (np.diff(y) != 0)
    x, y = x[keep], y[keep]
    if max_points is None or len(x) <= max_points:
        return x, y
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    length = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(x)) + np.abs(np.diff(y)))])
    # searchsorted can pick a vertex twice where a long segment spans several targets: fill up from the rest.
    chosen = np.unique(np.searchsorted(length, np.linspace(0.0, length[-1], max_points)))
    chosen = np.union1d(chosen, [0, len(x) - 1])
    if len(chosen) < max_points:
        rest = np.setdiff1d(np.arange(len(x)), chosen)
        extra = rest[np.linspace(0, len(rest) - 1, max_points - len(chosen)).round().astype(int)]
        chosen = np.union1d(chosen, extra)
    return x[chosen], y[chosen]
