"""Ground-truth defect regions for AUPRO: connected components of the masks, labelled once per test split."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from fsas_bench.metrics.inputs import REGION_CONNECTIVITY, binarise, check_connectivity

_STRUCTURES = {8: np.ones((3, 3), dtype=bool), 4: ndimage.generate_binary_structure(2, 1)}


@dataclass(frozen=True)
class GroundTruthRegions:
    """The connected defect regions of a category's (N, H, W) masks (spec metrics.md §2.6, §7).

    They depend only on the masks, never on a method's output: build them once per test split with
    :meth:`from_masks` and pass them to every ``evaluate`` call of that split. Only the D defect pixels are
    stored (12 bytes each); every other pixel is defect-free.

    Attributes:
        shape: (N, H, W) of the masks.
        defect_index: (D,) int64 flat indices of the defect pixels into the (N·H·W,) flattened masks, ascending.
        defect_region: (D,) int32 region of each defect pixel, 0..R−1, numbering the regions of all images.
        sizes: (R,) int64 pixel count of each region.
        connectivity: 8 (MVTec AD definition, the default) or 4 (ablation only).
    """

    shape: tuple[int, int, int]
    defect_index: Tensor
    defect_region: Tensor
    sizes: Tensor
    connectivity: int = REGION_CONNECTIVITY

    @classmethod
    def from_masks(cls, masks: Any, connectivity: int = REGION_CONNECTIVITY) -> GroundTruthRegions:
        """Label the regions of (N, H, W) masks, numpy or torch of any dtype; a defect is a value > 0."""
        check_connectivity(connectivity)
        binary = binarise(masks).cpu().numpy()
        if binary.ndim != 3:
            raise ValueError(f"masks must be N×H×W, got shape {binary.shape}")
        indices, regions = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int32)]
        num_regions = 0
        for i in np.flatnonzero(binary.any(axis=(1, 2))):
            labels, found = ndimage.label(binary[i], structure=_STRUCTURES[connectivity])
            flat = np.flatnonzero(labels)
            indices.append(flat + i * labels.size)
            regions.append(labels.ravel()[flat] + np.int32(num_regions - 1))
            num_regions += found
        defect_region = torch.from_numpy(np.concatenate(regions))
        sizes = torch.bincount(defect_region, minlength=num_regions)
        return cls(binary.shape, torch.from_numpy(np.concatenate(indices)), defect_region, sizes, connectivity)

    @property
    def num_regions(self) -> int:
        """R, the number of regions over all images."""
        return self.sizes.numel()

    @property
    def num_defect_pixels(self) -> int:
        return self.defect_index.numel()

    @property
    def num_normal_pixels(self) -> int:
        """N₀, the defect-free pixels of all images (normal images included)."""
        return math.prod(self.shape) - self.num_defect_pixels

    def pro_weights(self) -> Tensor:
        """(D,) float64 PRO weight 1 / (R·|r|) of each defect pixel, r its region."""
        return 1.0 / (self.num_regions * self.sizes.double())[self.defect_region]

    def to(self, device: torch.device | str) -> GroundTruthRegions:
        """The same regions with their tensors on ``device``."""
        return GroundTruthRegions(
            self.shape, self.defect_index.to(device), self.defect_region.to(device), self.sizes.to(device),
            self.connectivity,
        )  # fmt: skip
