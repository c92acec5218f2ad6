"""The public entry point: every exact metric of one category from image scores and, optionally, maps and masks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from fsas_bench.metrics.functional import image_metrics, pixel_metrics
from fsas_bench.metrics.inputs import AUPRO_FPR_LIMIT, as_tensor, check_image_inputs, check_pixel_inputs
from fsas_bench.metrics.legacy import LEGACY_AUPRO
from fsas_bench.metrics.regions import GroundTruthRegions


# A dataclass so that torchmetrics, which passes every compute() result through apply_to_collection,
# copies it with its reasons instead of rebuilding a bare mapping of its items.
@dataclasses.dataclass(init=False, repr=False, eq=False)
class MetricResults(dict[str, float]):
    """Metric name -> value (a plain float; NaN when undefined).

    Attributes:
        reasons: metric name -> why its value is NaN, one entry for every NaN value.
    """

    reasons: dict[str, str]

    def __init__(self, values: Mapping[str, float] = (), reasons: Mapping[str, str] | None = None) -> None:
        super().__init__(values)
        self.reasons = dict(reasons or {})

    @property
    def metric_impl(self) -> dict[str, str]:
        """Metric name -> algorithm family (spec metrics.md §1.1): ``exact``, or ``legacy_cflow`` for AUPRO-legacy."""
        return {name: "legacy_cflow" if name == LEGACY_AUPRO else "exact" for name in self}


def evaluate(
    image_scores: Any,
    image_labels: Any,
    anomaly_maps: Any = None,
    masks: Any = None,
    fpr_limit: float = AUPRO_FPR_LIMIT,
    regions: GroundTruthRegions | None = None,
    legacy_aupro: bool = False,
) -> MetricResults:
    """Exact I-/P-AUROC, AP, F1-max and AUPRO of one category (spec metrics.md §2, §6).

    Scores and maps are raw (distances, logits, …): nothing is squashed or normalised. Inputs are numpy
    arrays or torch tensors (CPU or CUDA; pixel work runs on the maps' device).

    Args:
        image_scores: (N,) image scores.
        image_labels: (N,) 0 normal / 1 anomalous.
        anomaly_maps: (N, H, W) pixel scores, float16/32/64 (float16 is ranked as float32, never downcast).
        masks: (N, H, W) ground truth of any dtype; a pixel is a defect iff its value is > 0.
        fpr_limit: AUPRO integration limit L ∈ (0, 1].
        regions: the masks' :class:`GroundTruthRegions`, labelled once per test split and used instead of
            relabelling; its shape must match the maps (and the masks, which may then be omitted).
        legacy_aupro: also report ``AUPRO-legacy`` (spec §3.1, papers' ``cal_pro_score``).

    Returns:
        ``IMAGE_METRICS``, then ``PIXEL_METRICS`` and ``REGION_METRICS`` (and ``AUPRO-legacy``) when maps are
        given; pixel keys are absent, not NaN, without maps. ``reasons`` explains every NaN: image metrics
        when the labels have one class, pixel metrics and AUPRO when the masks have no defect (or no
        defect-free) pixel, AUPRO-legacy also for constant maps.

    Raises:
        ValueError: naming the sample and the shapes, for mismatched sizes or shapes, NaN or inf in scores
            or maps, or labels not in {0, 1}.

    Memory: the exact metrics hold every pixel score of the category. With P pixels, b bytes per ranked score
    (4 for float16/float32 maps, 8 for float64) and D defect pixels, the peak above the inputs is about
    1.5·b·P (one sorted copy of the scores, plus half a copy while the CPU merges its sorted runs)
    + 30·D (ranked defect scores and PRO weights) + ~8 MB of per-chunk temporaries, plus 20·D (and a
    transient 1 B/pixel) when the masks are labelled here rather than passed as ``regions``: for float32
    maps, 6 B/pixel + 50 B/defect pixel, 1.5× the maps' own size plus the defect term. Measured on 200 float32 maps of 256×256 with 2 %
    defect pixels (``benchmarks/metrics_speed.py``): 94 MiB, 1.9× the maps. On CUDA, ``torch.sort``
    additionally allocates int64 indices and work buffers.
    """
    scores, labels = as_tensor(image_scores), as_tensor(image_labels)
    check_image_inputs(scores, labels)
    values, reasons = image_metrics(scores, labels)
    if anomaly_maps is None:
        if masks is not None or regions is not None:
            raise ValueError("masks or regions were given without anomaly_maps")
        return MetricResults(values, reasons)
    maps = as_tensor(anomaly_maps)
    if regions is None:
        if masks is None:
            raise ValueError("anomaly_maps were given without masks or regions")
        masks = masks if isinstance(masks, Tensor) else np.asarray(masks)
        check_pixel_inputs(maps, masks.shape, len(scores))
        regions = GroundTruthRegions.from_masks(masks)
    else:
        if masks is not None and tuple(masks.shape) != regions.shape:
            raise ValueError(
                f"regions were labelled from masks of shape {regions.shape}, got masks {tuple(masks.shape)}"
            )
        check_pixel_inputs(maps, regions.shape, len(scores))
    pixel_values, pixel_reasons = pixel_metrics(maps, regions.to(maps.device), fpr_limit, legacy_aupro)
    return MetricResults(values | pixel_values, reasons | pixel_reasons)
