"""Scoring one category: its ground truth in the evaluation frame, computed once, and the metrics of a method's
output against it. The runner scores every cell with :func:`score_category`; :func:`score_maps` is the
pixel-only scorer handed to methods that validate on ground truth during training (they never import metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from fsas_bench.data.sample import Sample
from fsas_bench.metrics.evaluate import MetricResults, evaluate
from fsas_bench.metrics.frame import EvalFrame
from fsas_bench.metrics.functional import pixel_metrics
from fsas_bench.metrics.inputs import AUPRO_FPR_LIMIT
from fsas_bench.metrics.regions import GroundTruthRegions


@dataclass(frozen=True)
class CategoryTruth:
    """The ground truth of one category's test split in the evaluation frame.

    Attributes:
        labels: (N,) 0 normal / 1 anomalous, in query order.
        masks: (N, H, W) bool masks in the frame (all False where the dataset has no masks).
        regions: the masks' AUPRO regions, or ``None`` when the dataset has no pixel ground truth.
    """

    labels: np.ndarray
    masks: np.ndarray
    regions: GroundTruthRegions | None

    @classmethod
    def load(cls, frame: EvalFrame, samples: Sequence[Sample], has_masks: bool) -> CategoryTruth:
        """Read the masks of ``samples`` into ``frame`` and label their regions (only when ``has_masks``)."""
        masks = frame.masks(samples)
        regions = GroundTruthRegions.from_masks(masks, connectivity=frame.connectivity) if has_masks else None
        return cls(np.array([s.label for s in samples]), masks, regions)


def score_category(truth: CategoryTruth, image_scores: Tensor, maps: Tensor) -> MetricResults:
    """Every metric of one category: image metrics always, pixel and region metrics when it has masks.

    Args:
        truth: the category's ground truth.
        image_scores: (N,) image scores, in query order.
        maps: (N, H, W) maps already in the evaluation frame (ignored without pixel ground truth).
    """
    if truth.regions is None:
        return evaluate(image_scores, truth.labels, fpr_limit=AUPRO_FPR_LIMIT)
    return evaluate(image_scores, truth.labels, maps, truth.masks, fpr_limit=AUPRO_FPR_LIMIT, regions=truth.regions)


def score_maps(samples: Sequence[Sample], maps: Tensor, mask_resize: str) -> dict[str, float]:
    """Pixel metrics (P-AUROC, P-AP, P-F1max, AUPRO) of ``maps`` (N, S, S) against the masks of ``samples``
    resized to S × S with ``mask_resize`` (one of :data:`fsas_bench.options.MASK_RESIZE_RULES`)."""
    frame = EvalFrame(size=maps.shape[-1], mask_resize=mask_resize)
    return pixel_metrics(maps, GroundTruthRegions.from_masks(frame.masks(samples)))[0]
