"""The LightningDataModule serving a cell's support set (k references), query set and auxiliary data."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from fsas_bench.data.sample import Sample
from fsas_bench.hashing import sha256_file


@lru_cache(maxsize=None)
def _file_sha(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def image_sha(path: Path) -> str:
    """SHA-256 of an image file, hashed once per (path, size, mtime) in a process."""
    stat = path.stat()
    return _file_sha(str(path), stat.st_size, stat.st_mtime_ns)


class SampleDataset(Dataset):
    """References to the images of a list of samples.

    Items are dicts: ``path`` (image file), ``sha`` (its SHA-256, the feature-cache key), ``label`` and
    ``index`` (position in the list). Pixels are decoded by the feature cache, and only for images whose
    features are not cached yet.
    """

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.samples[i]
        return {"path": str(sample.image_path), "sha": image_sha(sample.image_path), "label": sample.label, "index": i}


class FSASDataModule(L.LightningDataModule):
    """Support and query loaders for one evaluation cell.

    Args:
        query: the test split of the category (evaluation order = this order).
        support: the k normal references from the shot manifest (may be empty for zero-shot methods).
        batch_size: query batch size; it never changes any number.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        query: Sequence[Sample],
        support: Sequence[Sample],
        batch_size: int = 8,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.query = list(query)
        self.support = list(support)
        self.batch_size = batch_size
        self.num_workers = num_workers

    def _loader(self, samples: Sequence[Sample]) -> DataLoader:
        return DataLoader(SampleDataset(samples), batch_size=self.batch_size, num_workers=self.num_workers)

    def support_dataloader(self) -> DataLoader:
        """The k references, in manifest order."""
        return self._loader(self.support)

    def predict_dataloader(self) -> DataLoader:
        """The query (test) images, in index order."""
        return self._loader(self.query)
