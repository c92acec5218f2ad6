"""A thin torchmetrics wrapper: accumulate a category batch by batch, compute with :func:`evaluate`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from fsas_bench.metrics.evaluate import MetricResults, evaluate
from fsas_bench.metrics.inputs import (
    AUPRO_FPR_LIMIT,
    REGION_CONNECTIVITY,
    as_tensor,
    binarise,
    check_connectivity,
    check_fpr_limit,
    check_image_inputs,
    check_pixel_inputs,
)
from fsas_bench.metrics.ranking import score_dtype
from fsas_bench.metrics.regions import GroundTruthRegions


class AnomalyMetrics(Metric):
    """Exact image (and, given maps and masks, pixel and region) metrics of one category.

    States are concatenated across batches and processes (``dist_reduce_fx="cat"``); ``compute`` returns the
    :class:`MetricResults` of :func:`evaluate` on everything seen. Maps are kept in float32/float64 and masks
    as bool. Run test jobs on a single device or de-duplicate samples: a padding distributed sampler repeats
    samples, which changes exact metrics (spec metrics.md §10).

    Args:
        fpr_limit: AUPRO integration limit L ∈ (0, 1].
        connectivity: region connectivity, 8 (MVTec AD) or 4 (ablation only).
        legacy_aupro: also report ``AUPRO-legacy``.
        kwargs: passed to ``torchmetrics.Metric`` (e.g. ``compute_on_cpu``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    image_scores: list[Tensor] | Tensor
    image_labels: list[Tensor] | Tensor
    anomaly_maps: list[Tensor] | Tensor
    masks: list[Tensor] | Tensor

    def __init__(
        self,
        fpr_limit: float = AUPRO_FPR_LIMIT,
        connectivity: int = REGION_CONNECTIVITY,
        legacy_aupro: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_fpr_limit(fpr_limit)
        check_connectivity(connectivity)
        self.fpr_limit, self.connectivity, self.legacy_aupro = fpr_limit, connectivity, legacy_aupro
        for name in ("image_scores", "image_labels", "anomaly_maps", "masks"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, image_scores: Any, image_labels: Any, anomaly_maps: Any = None, masks: Any = None) -> None:
        """Add a batch: (B,) scores and labels, and either both or neither of (B, H, W) maps and masks."""
        scores, labels = as_tensor(image_scores), as_tensor(image_labels)
        check_image_inputs(scores, labels)
        if (anomaly_maps is None) != (masks is None):
            raise ValueError("update() needs both anomaly_maps and masks, or neither")
        self.image_scores.append(scores.to(self.device, score_dtype(scores.dtype)))
        self.image_labels.append(labels.to(self.device, torch.bool))
        if anomaly_maps is not None:
            maps, binary = as_tensor(anomaly_maps), binarise(masks)
            check_pixel_inputs(maps, binary.shape, len(scores))
            self.anomaly_maps.append(maps.to(self.device, score_dtype(maps.dtype)))
            self.masks.append(binary.to(self.device))

    def compute(self) -> MetricResults:
        """:func:`evaluate` on all accumulated samples."""
        maps, masks = _cat(self.anomaly_maps), _cat(self.masks)
        regions = GroundTruthRegions.from_masks(masks, self.connectivity) if masks.numel() else None
        return evaluate(
            _cat(self.image_scores), _cat(self.image_labels), maps if maps.numel() else None,
            fpr_limit=self.fpr_limit, regions=regions, legacy_aupro=self.legacy_aupro,
        )  # fmt: skip


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    """A state concatenated along dim 0; empty (no update, or no data on any process) as an empty tensor."""
    return dim_zero_cat(state) if len(state) else torch.empty(0)
