"""A dataset's sample index: every image of every category and split, with what it supports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fsas_bench.data.sample import Sample


@dataclass(frozen=True)
class DatasetIndex:
    """All samples of one dataset.

    Attributes:
        name: dataset name as used in result rows (``"mvtec"``, ``"synthetic"``, ...).
        root: dataset root directory; ``Sample.rel_path`` is relative to it.
        categories: category names in the dataset's canonical order.
        samples: every sample of every category and split.
        has_masks: whether pixel ground truth exists (pixel and region metrics are computed).
    """

    name: str
    root: Path
    categories: tuple[str, ...]
    samples: tuple[Sample, ...] = field(repr=False)
    has_masks: bool = True

    def split(self, category: str, split: str) -> list[Sample]:
        """Samples of one category and split, in index order."""
        return [s for s in self.samples if s.category == category and s.split == split]

    def normal_train(self, category: str) -> list[Sample]:
        """Normal training images of a category, sorted by relative path (the reference pool)."""
        return sorted((s for s in self.split(category, "train") if s.label == 0), key=lambda s: s.rel_path)
