"""The shared metric layer: exact image/pixel AUROC, AP, F1-max and AUPRO (spec metrics.md).

``evaluate`` is the entry point; :class:`AnomalyMetrics` accumulates the same inputs batch by batch as a
torchmetrics ``Metric``; :mod:`fsas_bench.metrics.functional` holds the pure functions both call.
"""

from fsas_bench.metrics.classes import AnomalyMetrics
from fsas_bench.metrics.evaluate import MetricResults, evaluate
from fsas_bench.metrics.functional import IMAGE_METRICS, PIXEL_METRICS, REGION_METRICS
from fsas_bench.metrics.inputs import AUPRO_FPR_LIMIT, REGION_CONNECTIVITY
from fsas_bench.metrics.legacy import LEGACY_AUPRO
from fsas_bench.metrics.regions import GroundTruthRegions

__all__ = [
    "AUPRO_FPR_LIMIT",
    "IMAGE_METRICS",
    "LEGACY_AUPRO",
    "PIXEL_METRICS",
    "REGION_CONNECTIVITY",
    "REGION_METRICS",
    "AnomalyMetrics",
    "GroundTruthRegions",
    "MetricResults",
    "evaluate",
]
