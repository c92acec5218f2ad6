"""Small helpers shared by the format loaders."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError
from fsas_bench.names import check_name, contained

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def dataset_root(root: str | Path, name: str) -> Path:
    """The absolute dataset root; UserError when it is not a directory."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"data for dataset '{name}' not found: '{path}' is not a directory; check --data-root")
    return path


def under_root(root: Path, path: str | Path, where: str) -> Path:
    """``root / path`` (``path`` relative, or absolute below ``root``) when it resolves inside the resolved
    dataset ``root``, symlinks followed: a ``..`` or a symlink leading out of the dataset is a UserError naming
    ``where`` the path came from."""
    return contained(root, root / path, f"path in {where}", "keep every image and mask inside the dataset folder")


def is_image_file(path: Path) -> bool:
    """A visible regular file with an image suffix (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def build_index(
    name: str, root: Path, categories: Iterable[str], samples: Iterable[Sample], *, has_masks: bool
) -> DatasetIndex:
    """A `DatasetIndex`; UserError when the dataset or a category name cannot name a file (results, manifests
    and checkpoints are stored under these names)."""
    samples = tuple(samples)
    categories = tuple(check_name(c, f"category of dataset '{name}'") for c in categories)
    return DatasetIndex(
        name=check_name(name, "dataset name"),
        root=root,
        categories=categories,
        samples=samples,
        has_masks=has_masks,
    )
