"""Conversion and validation of metric inputs: clear ``ValueError`` naming the offending sample and shapes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

AUPRO_FPR_LIMIT = 0.3
"""The AUPRO integration limit L of the MVTec AD definition: the PRO curve is integrated over FPR ∈ [0, 0.3]."""

REGION_CONNECTIVITY = 8
"""Pixel connectivity of ground-truth defect regions in the MVTec AD definition (4 is an ablation only)."""


def as_tensor(x: Any) -> Tensor:
    """A tensor view of a numpy array or sequence (no copy when possible); tensors pass through."""
    return x if isinstance(x, Tensor) else torch.as_tensor(np.ascontiguousarray(x))


def binarise(masks: Any) -> Tensor:
    """``masks > 0`` as a bool tensor; numpy masks are compared by numpy, which handles every dtype (uint16 …)."""
    return masks > 0 if isinstance(masks, Tensor) else torch.from_numpy(np.asarray(masks) > 0)


def check_connectivity(connectivity: int) -> None:
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 8 or 4, got {connectivity!r}")


def check_fpr_limit(fpr_limit: float) -> None:
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")


def check_image_inputs(scores: Tensor, labels: Tensor) -> None:
    """(N,) finite scores and (N,) labels in {0, 1}, N ≥ 1."""
    if scores.ndim != 1 or labels.ndim != 1 or len(scores) != len(labels) or len(scores) == 0:
        raise ValueError(
            f"image_scores and image_labels must be non-empty 1-D of equal length, "
            f"got shapes {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    _check_finite(scores, "image_scores")
    bad = ((labels != 0) & (labels != 1)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"image_labels[{i}] = {labels[i].item()} is not 0 or 1 (image_labels shape {tuple(labels.shape)})"
        )


def check_pixel_inputs(maps: Tensor, masks_shape: tuple[int, ...], n_images: int) -> None:
    """(N, H, W) finite maps with a mask of the same shape for each of the N images."""
    shape, masks_shape = tuple(maps.shape), tuple(masks_shape)
    if maps.ndim != 3 or len(masks_shape) != 3:
        raise ValueError(f"anomaly_maps and masks must be N×H×W, got shapes {shape} and {masks_shape}")
    if shape[0] != masks_shape[0]:
        i = min(shape[0], masks_shape[0])
        raise ValueError(
            f"sample {i} has {'no mask' if i == masks_shape[0] else 'no anomaly map'}: "
            f"anomaly_maps shape {shape}, masks shape {masks_shape}"
        )
    if shape != masks_shape:
        raise ValueError(
            f"sample 0: anomaly map shape {shape[1:]} != mask shape {masks_shape[1:]} "
            f"(anomaly_maps shape {shape}, masks shape {masks_shape})"
        )
    if shape[0] != n_images:
        i = min(shape[0], n_images)
        raise ValueError(
            f"sample {i} has {'no image score' if i == n_images else 'no anomaly map'}: "
            f"image_scores has {n_images} entries, anomaly_maps shape {shape}"
        )
    _check_finite(maps, "anomaly_maps")


def _check_finite(x: Tensor, name: str) -> None:
    """Raise naming the first sample (along dim 0) holding NaN or ±inf; the fast check needs no extra memory."""
    low, high = torch.aminmax(x)
    if torch.isfinite(low) and torch.isfinite(high):
        return
    i = int((~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)).nonzero()[0])
    raise ValueError(f"{name}[{i}] contains NaN or inf ({name} shape {tuple(x.shape)})")
