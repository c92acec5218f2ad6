"""Small helpers shared by the format loaders."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def dataset_root(root: str | Path, name: str) -> Path:
    """The absolute dataset root; UserError when it is not a directory."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"data for dataset '{name}' not found: '{path}' is not a directory; check --data-root")
    return path


def is_image_file(path: Path) -> bool:
    """A visible regular file with an image suffix (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def build_index(
    name: str, root: Path, categories: Iterable[str], samples: Iterable[Sample], *, has_masks: bool
) -> DatasetIndex:
    """A `DatasetIndex`, with ``has_normal_test`` read off the samples."""
    samples = tuple(samples)
    return DatasetIndex(
        name=name,
        root=root,
        categories=tuple(categories),
        samples=samples,
        has_masks=has_masks,
        has_normal_test=any(s.split == "test" and s.label == 0 for s in samples),
    )
