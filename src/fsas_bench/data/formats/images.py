"""Reading images and masks with Pillow, and a fast preflight check of a dataset's files.

Images come back as RGB ``uint8`` (H, W, 3), grayscale converted; masks as ``bool`` (H, W), binarised > 0 on the
raw pixel values (VisA's class-index masks included). Every failure is a one-line UserError naming the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError


def read_image_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as RGB ``uint8`` of shape (H, W, 3)."""
    with _readable(path, "image"), Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    """The mask at ``path`` as ``bool`` of shape (H, W): any non-alpha channel > 0."""
    with _readable(path, "mask"), Image.open(path) as mask:
        mask.load()
        values = np.asarray(mask)
        bands = mask.getbands()
    if values.ndim == 3:
        colour = values[..., :-1] if bands[-1] == "A" else values
        return (colour > 0).any(axis=2)
    return values > 0


def read_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """A sample's RGB image and its (H, W) mask; all-false when the sample has no mask file."""
    image = read_image_rgb(sample.image_path)
    height, width = image.shape[:2]
    if sample.mask_path is None:
        return image, np.zeros((height, width), dtype=bool)
    mask = read_mask(sample.mask_path)
    if mask.shape != (height, width):
        raise _size_mismatch(sample, (width, height), (mask.shape[1], mask.shape[0]))
    return image, mask


def verify_samples(samples: Iterable[Sample]) -> None:
    """Check that every image and mask opens and passes Pillow's ``verify``, and that mask and image sizes match.

    Reads headers (and, for PNG, chunk checksums) only; raises the first problem as UserError.
    """
    for sample in samples:
        image_size = _verified_size(sample.image_path, "image")
        if sample.mask_path is not None:
            mask_size = _verified_size(sample.mask_path, "mask")
            if mask_size != image_size:
                raise _size_mismatch(sample, image_size, mask_size)


def _verified_size(path: Path, role: str) -> tuple[int, int]:
    with _readable(path, role), Image.open(path) as image:
        size = image.size
        image.verify()
    return size


@contextmanager
def _readable(path: Path, role: str) -> Iterator[None]:
    """Turn Pillow's and the file system's errors about ``path`` into one-line UserErrors."""
    try:
        yield
    except FileNotFoundError as exc:
        raise UserError(f"{role} file missing: '{path}': check the dataset layout") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = "unrecognised image format" if isinstance(exc, UnidentifiedImageError) else _first_line(exc)
        raise UserError(
            f"unreadable {role} '{path}' ({reason}): replace the file or remove it from the dataset"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _size_mismatch(sample: Sample, image_size: tuple[int, int], mask_size: tuple[int, int]) -> UserError:
    return UserError(
        f"mask/image size mismatch: mask '{sample.mask_path}' is {mask_size[0]}x{mask_size[1]} but image "
        f"'{sample.rel_path}' is {image_size[0]}x{image_size[1]} (width x height): fix or regenerate the mask"
    )
