"""The encode pipeline: images decoded by DataLoader workers, encoded in fixed-size batches.

Images are read and preprocessed (:class:`~fsas_bench.backbones.clip.InputTransform`) in ``workers`` processes,
pinned when the backbone is on a GPU, moved with ``non_blocking`` and encoded ``encode_batch`` at a time in
the order given; the last batch is padded (its last image repeated) to the same shape, so every forward has
one shape. Features do not depend on the batch: on CPU each image's features are bitwise those of the image
encoded alone (see :meth:`~fsas_bench.backbones.clip.ClipBackbone.encode`). A :class:`UserError` of a worker
(an unreadable image) comes back to the calling process as the same one-line UserError, not wrapped by torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from fsas_bench.backbones.clip import BackboneFeatures, ClipBackbone, InputTransform
from fsas_bench.errors import UserError

ImageReader = Callable[[Path], np.ndarray]
"""Path → RGB uint8 ``H × W × 3`` (a module-level function: workers receive it pickled)."""

MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Decode workers when ``--workers`` is not given: the CPUs this process may use (its affinity, as a cluster
    scheduler sets it) but one (the encoder's), at most 8."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_DEFAULT_WORKERS, max(0, usable - 1))


def default_encode_batch(device: str) -> int:
    """Encode batch when ``--encode-batch`` is not given: 1 on CPU (nothing to gain), 32 on a GPU."""
    return 32 if device.startswith("cuda") else 1


@dataclass(frozen=True)
class EncodeSettings:
    """How images go through the backbone (none of it changes a feature).

    Attributes:
        encode_batch: images per backbone forward (the last batch padded to it).
        workers: DataLoader decode processes (0: decode in the calling process).
    """

    encode_batch: int = 1
    workers: int = 0

    def __post_init__(self) -> None:
        if self.encode_batch < 1:
            raise UserError(f"--encode-batch {self.encode_batch} is invalid: use a positive integer such as 1 or 32")
        if self.workers < 0:
            raise UserError(f"--workers {self.workers} is invalid: use 0 (decode in the main process) or more")


@dataclass(frozen=True)
class _Failed:
    """What a worker hands back instead of an image or batch whose decoding raised a UserError: its message
    (torch would re-raise the error itself wrapped in a worker traceback)."""

    message: str


class _Decoded(Dataset[Tensor | _Failed]):
    """Image i of ``paths`` read by ``reader`` and transformed: ``3 × S × S`` float32 (or :class:`_Failed`)."""

    def __init__(self, paths: Sequence[Path], reader: ImageReader, transform: InputTransform) -> None:
        self.paths, self.reader, self.transform = list(paths), reader, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor | _Failed:
        try:
            return self.transform(self.reader(self.paths[i]))
        except UserError as err:
            return _Failed(str(err))


def _collate(items: list[Tensor | _Failed]) -> Tensor | _Failed:
    """The batch of ``items``, or the first failure among them."""
    return next((item for item in items if isinstance(item, _Failed)), None) or default_collate(items)


def decoded_batches(paths: Sequence[Path], reader: ImageReader, transform: InputTransform, batch: int,
                    workers: int, pin: bool = False) -> Iterator[Tensor]:  # fmt: skip
    """``B × 3 × S × S`` batches of the images in order (the last one may be smaller), decoded by ``workers``.

    Raises:
        UserError: the reader's, for the first image it cannot read (as raised in the calling process).
    """
    # A generator of its own: iterating the loader never draws from the global RNG (training's seeded state).
    loader = DataLoader(_Decoded(paths, reader, transform), batch_size=batch, shuffle=False, num_workers=workers,
                        pin_memory=pin, collate_fn=_collate, generator=torch.Generator())  # fmt: skip
    for images in loader:
        if isinstance(images, _Failed):
            raise UserError(images.message)
        yield images


def pad_batch(images: Tensor, size: int) -> Tensor:
    """``images`` (``n × ...``, n ≤ size) padded to ``size`` rows by repeating the last image."""
    missing = size - images.shape[0]
    return images if missing == 0 else torch.cat([images, images[-1:].expand(missing, *images.shape[1:])])


def encode_images(
    backbone: ClipBackbone,
    paths: Sequence[Path],
    names: Sequence[str],
    reader: ImageReader,
    transform: InputTransform,
    settings: EncodeSettings,
) -> Iterator[tuple[int, BackboneFeatures]]:
    """``(i, features of image i)`` for every image, in order, encoded ``settings.encode_batch`` at a time.

    Features come back on the CPU as float32 (one ``... `` tensor per name, without the batch dimension).
    """
    device = backbone.mean.device
    pin = device.type == "cuda"
    start = 0
    batches = decoded_batches(paths, reader, transform, settings.encode_batch, settings.workers, pin)
    for images in batches:
        count = images.shape[0]
        inputs = pad_batch(images, settings.encode_batch).to(device, non_blocking=True)
        encoded = {name: t[:count].cpu() for name, t in backbone.encode(inputs, sorted(names)).items()}
        for j in range(count):
            yield start + j, {name: t[j].clone() for name, t in encoded.items()}
        start += count
