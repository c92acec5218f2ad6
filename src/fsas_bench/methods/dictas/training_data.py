"""The self-supervised training pairs of DictAS (spec dictas.md §8.2): a query with an optional synthetic
anomaly and a strongly augmented reference of the same clean normal image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from fsas_bench.data.formats import read_image_rgb
from fsas_bench.data.sample import Sample
from fsas_bench.methods.dictas.augment import strong_reference_augment
from fsas_bench.methods.dictas.synthesis import TextureSource, paste_anomaly


@dataclass(frozen=True)
class SynthesisSettings:
    """Attributes:
    work_size: side the clean image is resized to before augmentation (official 1024).
    paste_size: side of the image an anomaly is pasted on (official 512).
    anomaly_probability: probability of pasting an anomaly on the query (official 0.3).
    reference_probability: probability of strongly augmenting the reference (official 0.9).
    """

    work_size: int = 1024
    paste_size: int = 512
    anomaly_probability: float = 0.3
    reference_probability: float = 0.9


def _resize(image: np.ndarray, side: int, resample: Image.Resampling = Image.Resampling.BICUBIC) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((side, side), resample))


class SyntheticAnomalyPairs(Dataset):
    """Training pairs from normal images.

    Items: ``query`` and ``reference`` (``3 × S × S`` preprocessed), ``mask`` (``S × S`` float in [0, 1], the
    query's anomaly mask resized bilinearly), ``label`` (1 iff the mask is non-empty), ``category`` (index into
    the category list). Randomness comes from a seed drawn from torch's global generator per item, so runs are
    reproducible under ``seed_everything``.

    Args:
        samples: the normal training images.
        categories: category of each sample, as an index.
        preprocess: RGB uint8 ``H × W × 3`` → backbone input ``3 × S × S``.
        image_size: S.
        textures: the anomaly texture source.
        settings: synthesis probabilities and working sizes.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        categories: Sequence[int],
        preprocess: Callable[[np.ndarray], Tensor],
        image_size: int,
        textures: TextureSource,
        settings: SynthesisSettings,
    ) -> None:
        self.samples = list(samples)
        self.categories = list(categories)
        self.preprocess = preprocess
        self.image_size = image_size
        self.textures = textures
        self.settings = settings

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Tensor | int]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        s = self.settings
        clean = _resize(read_image_rgb(self.samples[i].image_path), s.work_size)
        reference = clean
        if rng.random() < s.reference_probability:
            augmented = strong_reference_augment(torch.from_numpy(clean.copy()).permute(2, 0, 1), rng)
            reference = augmented.permute(1, 2, 0).numpy()
        query, mask = clean, np.zeros(clean.shape[:2], dtype=bool)
        if rng.random() < s.anomaly_probability:
            query, mask = paste_anomaly(_resize(clean, s.paste_size), self.textures(rng, s.paste_size), rng)
        mask_s = _resize(mask.astype(np.uint8) * 255, self.image_size, Image.Resampling.BILINEAR)
        return {
            "query": self.preprocess(query),
            "reference": self.preprocess(np.ascontiguousarray(reference)),
            "mask": torch.from_numpy(mask_s.astype(np.float32) / 255.0),
            "label": int(mask.any()),
            "category": self.categories[i],
        }
