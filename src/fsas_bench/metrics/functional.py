"""Exact image- and pixel-level metrics of one category as pure functions on tensors (spec metrics.md §2).

AUROC is the trapezoidal area under the ROC curve through (0, 0) and every distinct threshold, computed as
the equal Mann–Whitney statistic in exact integers; AP the step-wise Σ ΔR·P of scikit-learn's
``average_precision_score``; F1-max the maximum of 2TP / (2TP + FP + FN) over every distinct threshold,
without epsilon; AUPRO the MVTec AD per-region overlap integrated over FPR ∈ [0, fpr_limit] and divided by
it. Undefined values are NaN with a reason, never 0, 0.5 or L/2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fsas_bench.metrics.inputs import AUPRO_FPR_LIMIT, check_fpr_limit
from fsas_bench.metrics.legacy import LEGACY_AUPRO, aupro_legacy
from fsas_bench.metrics.ranking import RankedScores, counts_above, distinct_positive_scores, partial_area, rank_scores
from fsas_bench.metrics.regions import GroundTruthRegions

IMAGE_METRICS = ("I-AUROC", "I-AP", "I-F1max")
PIXEL_METRICS = ("P-AUROC", "P-AP", "P-F1max")
REGION_METRICS = ("AUPRO",)

Values = dict[str, float]
Reasons = dict[str, str]

# Thresholds handled per step: bounds the temporaries whatever the number of defect pixels.
_CHUNK = 1 << 16


def image_metrics(scores: Tensor, labels: Tensor) -> tuple[Values, Reasons]:
    """I-AUROC, I-AP and I-F1max of (N,) image scores against (N,) labels in {0, 1}."""
    positive_index = labels.nonzero().squeeze(1).to(scores.device)
    n_pos = positive_index.numel()
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return _undefined(IMAGE_METRICS, f"single-class image labels: {n_pos} anomalous and {n_neg} normal images")
    return dict(zip(IMAGE_METRICS, _curve_metrics(rank_scores(scores, positive_index))[:3])), {}


def pixel_metrics(
    maps: Tensor, regions: GroundTruthRegions, fpr_limit: float = AUPRO_FPR_LIMIT, legacy_aupro: bool = False
) -> tuple[Values, Reasons]:
    """P-AUROC, P-AP, P-F1max and AUPRO (plus AUPRO-legacy if asked) of (N, H, W) maps against the regions.

    All pixels of all images form one pool; the defect-free ones (normal images included) are the negatives.
    ``regions`` must have the maps' shape and device.
    """
    check_fpr_limit(fpr_limit)
    names = PIXEL_METRICS + REGION_METRICS + ((LEGACY_AUPRO,) if legacy_aupro else ())
    n_pos, n_neg = regions.num_defect_pixels, regions.num_normal_pixels
    if n_pos == 0 or n_neg == 0:
        return _undefined(names, f"single-class masks: {n_pos} defect and {n_neg} defect-free pixels")
    ranked = rank_scores(maps.reshape(-1), regions.defect_index, regions.pro_weights())
    values = dict(zip(PIXEL_METRICS + REGION_METRICS, _curve_metrics(ranked, fpr_limit)))
    reasons: Reasons = {}
    if legacy_aupro:
        values[LEGACY_AUPRO], reason = aupro_legacy(ranked, fpr_limit)
        if reason is not None:
            reasons[LEGACY_AUPRO] = reason
    return values, reasons


def _curve_metrics(ranked: RankedScores, fpr_limit: float | None = None) -> tuple[float, float, float, float]:
    """AUROC, AP, F1-max and (given ``fpr_limit``, else NaN) AUPRO of two-class ranked scores.

    Reads the counts of ``score > t`` and ``score >= t`` at every distinct positive score t, in chunks of
    thresholds. AUROC is the doubled Mann–Whitney sum in exact integers: each positive scores the
    negatives below it plus half the tied ones. AUPRO integrates the polyline through (0, 0), the
    ``> t`` and ``>= t`` points in order of decreasing t, and (1, Σ weights = 1), up to the limit.
    """
    n_pos, n_neg = ranked.n_pos, ranked.n_neg
    auroc2, ap, f1_max, area = 0, 0.0, 0.0, 0.0
    fpr, pro = 0.0, 0.0  # the last (FPR, PRO) point integrated so far
    for t in distinct_positive_scores(ranked).split(_CHUNK):
        above, at = counts_above(ranked, t, strict=True), counts_above(ranked, t, strict=False)
        ties = at.tp - above.tp  # positives scoring exactly t
        auroc2 += (ties * (2 * n_neg - above.fp - at.fp)).sum().item()
        tp, fp = at.tp.double(), at.fp.double()
        ap += (ties.double() * tp / (tp + fp)).sum().item()
        f1_max = max(f1_max, (2 * tp / (tp + fp + n_pos)).max().item())
        if fpr_limit is not None and fpr < fpr_limit:
            x = _polyline(fpr, above.fp.double() / n_neg, fp / n_neg)
            y = _polyline(pro, above.weight, at.weight)
            area += partial_area(x, y, fpr_limit)
            fpr, pro = x[-1].item(), y[-1].item()
    aupro = math.nan
    if fpr_limit is not None:
        if fpr < fpr_limit:  # the last segment, to (1, Σ weights)
            tail = ranked.tail_weight
            area += partial_area(tail.new_tensor([fpr, 1.0]), tail.new_tensor([pro, tail[0].item()]), fpr_limit)
        aupro = area / fpr_limit
    return auroc2 / (2 * n_pos * n_neg), ap / n_pos, f1_max, aupro


def _polyline(start: float, above: Tensor, at: Tensor) -> Tensor:
    """start, above[0], at[0], above[1], at[1], … as one float64 tensor."""
    return torch.cat([above.new_tensor([start]), torch.stack([above, at], dim=1).reshape(-1)])


def _undefined(names: tuple[str, ...], reason: str) -> tuple[Values, Reasons]:
    return dict.fromkeys(names, math.nan), dict.fromkeys(names, reason)
