"""Captioned, lightly augmented views of the rendered pairs, and the epoch-aware twin sampler.

The sampler yields ``epoch · N + i`` so that every view (flip, jitter, caption wording) is a pure function
of the seed, the epoch and the image: a run resumed from an epoch checkpoint sees exactly what an
uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from fsas_bench.pretrain.captions import caption
from fsas_bench.pretrain.pairs import PairSet

JITTER = 0.1  # brightness and contrast factors are drawn in [1 − JITTER, 1 + JITTER]; hue is left alone


class TwinSampler(Sampler[int]):
    """Seeded per-epoch shuffle of twin groups; both images of a twin stay adjacent (same batch when the
    batch size is even), so every batch holds normal/defective versions of the same items.

    Args:
        n_images: size of the pair set (even).
        seed: shuffle seed.
    """

    def __init__(self, n_images: int, seed: int) -> None:
        self.n_images = n_images
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_images // 2)
        base = self.epoch * self.n_images
        for twin in order.tolist():
            yield base + 2 * twin
            yield base + 2 * twin + 1

    def __len__(self) -> int:
        return self.n_images


class CaptionedPairs(Dataset):
    """Item ``epoch · N + i`` → (normalised ``3 × S × S`` image i, ``L`` caption tokens), augmented and
    captioned with a generator keyed by (seed, epoch, i).

    Args:
        pairs: the rendered images and attributes.
        seed: augmentation/caption seed.
        mean, std: per-channel normalisation of the backbone.
        tokenizer: open_clip tokenizer (list of texts → ``T × L`` long tensor).
        augment: apply flips and jitter (off for evaluation).
    """

    def __init__(
        self,
        pairs: PairSet,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
        tokenizer: Callable[[list[str]], Tensor],
        augment: bool = True,
    ) -> None:
        self.pairs = pairs
        self.seed = seed
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.tokenizer = tokenizer
        self.augment = augment

    def __len__(self) -> int:
        return len(self.pairs.images)

    def view(self, key: int) -> tuple[Tensor, str]:
        """The unnormalised ``3 × S × S`` image in [0, 1] and the caption of item ``key``."""
        epoch, index = divmod(key, len(self))
        rng = np.random.default_rng([self.seed, epoch, index])
        image = torch.from_numpy(self.pairs.images[index]).permute(2, 0, 1).float() / 255.0
        mirrored = self.augment and bool(rng.random() < 0.5)
        if mirrored:
            image = image.flip(-1)
        if self.augment:
            brightness, contrast = rng.uniform(1.0 - JITTER, 1.0 + JITTER, 2)
            level = image.mean()
            image = (((image - level) * contrast + level) * brightness).clamp(0.0, 1.0)
        return image, caption(self.pairs.attributes[index], rng, mirrored)

    def __getitem__(self, key: int) -> tuple[Tensor, Tensor]:
        image, text = self.view(key)
        return (image - self.mean) / self.std, self.tokenizer([text])[0]
