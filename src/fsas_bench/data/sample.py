"""The record every dataset adapter produces: one image of one split of one category."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One image of a dataset split.

    Attributes:
        image_path: absolute path of the image file.
        rel_path: path relative to the dataset root (what manifests and result rows store).
        label: 0 normal, 1 anomalous.
        category: the dataset category, e.g. ``"bottle"``.
        split: ``"train"`` or ``"test"``.
        defect_type: defect folder name (``"good"`` for normal images, ``""`` when the index has none).
        mask_path: absolute path of the ground-truth mask, or ``None`` (normal image, or a dataset
            without masks).
    """

    image_path: Path
    rel_path: str
    label: int
    category: str
    split: str
    defect_type: str = ""
    mask_path: Path | None = None
