"""The shared evaluation frame: maps back to the original image frame (or a fixed N), masks loaded once.

Methods return maps at their own output size. This layer resizes them (bilinear, align_corners=False)
to the benchmark-wide evaluation frame — ``native`` (each image's original H × W, masks untouched) or a
fixed N × N (masks resized with the recorded ``mask_resize`` rule) — and never otherwise alters them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from fsas_bench.data.formats import read_mask
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError
from fsas_bench.metrics.inputs import REGION_CONNECTIVITY
from fsas_bench.options import parse_eval_size


@dataclass(frozen=True)
class EvalFrame:
    """Where metrics are computed.

    Attributes:
        size: ``None`` for native resolution, else the side N of the square evaluation frame.
        mask_resize: rule for resizing masks to N (``none`` at native resolution).
        connectivity: pixel connectivity of ground-truth regions for AUPRO.
    """

    size: int | None = None
    mask_resize: str = "none"
    connectivity: int = REGION_CONNECTIVITY

    @property
    def label(self) -> str:
        """``eval_size`` column value: ``native`` or N."""
        return "native" if self.size is None else str(self.size)

    @classmethod
    def parse(cls, eval_size: str, mask_resize: str = "area>0.5") -> EvalFrame:
        """From the CLI: ``native`` or a positive integer N (then ``mask_resize`` applies)."""
        size, rule = parse_eval_size(eval_size, mask_resize)
        return cls(size=size, mask_resize=rule)

    def frame_shape(self, samples: Sequence[Sample]) -> tuple[int, int]:
        """The common ``(H, W)`` of the category's evaluation frame."""
        if self.size is not None:
            return (self.size, self.size)
        shapes = {_image_shape(s) for s in samples}
        if len(shapes) > 1:
            raise UserError(
                f"images of category '{samples[0].category}' have different sizes {sorted(shapes)[:3]}: "
                "native evaluation needs one size per category; pass --eval-size N"
            )
        return shapes.pop()

    def masks(self, samples: Sequence[Sample]) -> np.ndarray:
        """Binary ground truth ``N × H × W`` (bool) in the evaluation frame; zeros for normal images."""
        height, width = self.frame_shape(samples)
        out = np.zeros((len(samples), height, width), dtype=bool)
        for i, sample in enumerate(samples):
            if sample.mask_path is not None:
                out[i] = self._resize_mask(read_mask(sample.mask_path))
        return out

    def maps(self, maps: Tensor, height: int, width: int) -> Tensor:
        """Method maps ``B × h × w`` → ``B × H × W`` float32 in the frame (bilinear, align_corners=False)."""
        size = (height, width) if self.size is None else (self.size, self.size)
        if tuple(maps.shape[-2:]) == size:
            return maps.float()
        return F.interpolate(maps.float().unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)

    def _resize_mask(self, mask: np.ndarray) -> np.ndarray:
        if self.size is None:
            return mask
        n = self.size
        if self.mask_resize == "nearest":
            return np.asarray(Image.fromarray(mask).resize((n, n), Image.Resampling.NEAREST))
        if self.mask_resize == "bilinear>0.5":
            img = Image.fromarray(mask.astype(np.uint8) * 255).resize((n, n), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.float64) / 255.0 > 0.5
        area = F.interpolate(torch.from_numpy(mask).double()[None, None], size=(n, n), mode="area")[0, 0].numpy()
        return area > (0.5 if self.mask_resize == "area>0.5" else 0.0)


def _image_shape(sample: Sample) -> tuple[int, int]:
    with Image.open(sample.image_path) as img:
        return (img.height, img.width)
