"""AUPRO-legacy (``metric_impl=legacy_cflow``, spec metrics.md §3.1), for comparison with papers only.

The ``cal_pro_score`` family (CFlow-AD and its copies): ``steps`` equal-width score thresholds, strict
``score > t``, points with FPR < L kept without interpolation, their FPR min-max rescaled to [0, 1], and the
absolute trapezoidal area. Masks are binarised with > 0 (the uint8 ``1 - mask`` wrap of some copies is not
reproduced). Computed from the same ranking as the exact metrics, so it costs ``steps`` binary searches.
"""

from __future__ import annotations

import math

import torch

from fsas_bench.metrics.inputs import AUPRO_FPR_LIMIT
from fsas_bench.metrics.ranking import RankedScores, counts_above, partial_area

LEGACY_AUPRO = "AUPRO-legacy"


def aupro_legacy(
    ranked: RankedScores, fpr_limit: float = AUPRO_FPR_LIMIT, steps: int = 200
) -> tuple[float, str | None]:
    """AUPRO-legacy of pixel scores ranked with PRO weights 1/(R·|r|); returns (value, None) or (NaN, reason).

    Thresholds t_j = s_min + j·δ, δ = (s_max − s_min)/steps, for j = 0, 1, … while t_j < s_max, computed in
    float64 and compared in the scores' dtype, as the original code does with float32 maps.
    """
    low, high = ranked.pool[0].item(), ranked.pool[-1].item()
    if low == high:
        return math.nan, "constant anomaly maps: legacy thresholds are undefined (the original code raises)"
    thresholds = torch.arange(low, high, (high - low) / steps, dtype=torch.float64, device=ranked.pool.device)
    counts = counts_above(ranked, thresholds.to(ranked.pool.dtype), strict=True)
    fpr = counts.fp.double() / ranked.n_neg
    keep = fpr < fpr_limit
    if int(keep.sum()) < 2:
        return math.nan, f"fewer than two of the {thresholds.numel()} legacy thresholds give FPR < {fpr_limit}"
    fpr, pro = fpr[keep].flip(0), counts.weight[keep].flip(0)  # increasing FPR
    span = (fpr[-1] - fpr[0]).item()
    if span == 0:
        return math.nan, f"all legacy thresholds with FPR < {fpr_limit} give the same FPR: min-max rescaling fails"
    return partial_area((fpr - fpr[0]) / span, pro, 1.0), None
