"""Reading images and masks with Pillow, and a parallel preflight check of a dataset's files.

Images come back as RGB ``uint8`` (H, W, 3): 8-bit modes (grayscale, palette, RGB(A), CMYK, YCbCr) through
Pillow's RGB conversion, 16-bit grayscale (``I;16``) scaled by 255/65535 and rounded; 32-bit integer (``I``) and
float (``F``) images, whose value range the file does not state, are refused (Pillow would clip them to white).
Masks come back as ``bool`` (H, W): single-band masks (``1``, ``L``, ``I;16``, ``I``, ``F``) binarised > 0 on
their raw values (VisA's class-index masks included); palette masks decoded through their palette (a pixel is
defect when its colour is not black), except that a palette rendering every index in one colour carries no
colours and its indices are binarised ≠ 0; colour masks are defect where any colour channel is > 0 (alpha is
ignored). Every failure is a one-line UserError naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError


EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
"""Modes Pillow converts to 8-bit RGB without clipping."""
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
"""16-bit grayscale, scaled to 8 bits."""
RAW_MASK_MODES = frozenset({"1", "L", "I", "F"}) | SIXTEEN_BIT_MODES
"""Single-band masks, binarised on their raw values."""
WIDE_MODES = {"I": "32-bit integer", "F": "floating-point"}


def read_image_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as RGB ``uint8`` of shape (H, W, 3) (see the module docstring for the modes)."""
    with _readable(path, "image"), Image.open(path) as image:
        _check_mode(image, path, "image", EIGHT_BIT_MODES | SIXTEEN_BIT_MODES)
        if image.mode in SIXTEEN_BIT_MODES:
            gray = np.asarray(image).astype(np.uint32)
            scaled = ((gray * 255 + 32767) // 65535).astype(np.uint8)  # round(v · 255 / 65535)
            return np.repeat(scaled[..., None], 3, axis=2)
        return np.asarray(image.convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    """The mask at ``path`` as ``bool`` of shape (H, W) (see the module docstring for the modes)."""
    with _readable(path, "mask"), Image.open(path) as mask:
        _check_mode(mask, path, "mask", EIGHT_BIT_MODES | RAW_MASK_MODES)
        mask.load()
        if mask.mode in RAW_MASK_MODES:
            return np.asarray(mask) > 0
        if mask.mode in ("P", "PA") and _one_colour(mask.getpalette()):
            indices = np.asarray(mask)
            return (indices[..., 0] if indices.ndim == 3 else indices) > 0
        colour = np.asarray(mask.convert("RGBA" if "A" in mask.getbands() else "RGB"))[..., :3]
        return (colour > 0).any(axis=2)


def _one_colour(palette: list[int] | None) -> bool:
    """Whether a palette (flat R, G, B, … list) renders every index in the same colour."""
    colours = np.asarray(palette or [0, 0, 0]).reshape(-1, 3)
    return bool((colours == colours[0]).all())


def _check_mode(image: Image.Image, path: Path, role: str, supported: frozenset[str]) -> None:
    """UserError when ``image``'s pixel mode cannot be read without losing its values."""
    if image.mode not in supported:
        problem = (f"has {WIDE_MODES[image.mode]} pixels (mode {image.mode}) of no stated value range"
                   if image.mode in WIDE_MODES else f"has pixel mode {image.mode}, which fsas-bench does not read")
        raise UserError(f"{role} '{path}' {problem}: save it as an 8-bit or 16-bit PNG")


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


def verify_samples(samples: Iterable[Sample], workers: int | None = None,
                   on_checked: Callable[[int], None] = lambda done: None) -> None:  # fmt: skip
    """Check that every image and mask opens, passes Pillow's ``verify`` and **decodes in full** (a truncated
    JPEG passes ``verify``), and that mask and image sizes match; in ``workers`` threads (default: the CPU
    count; Pillow decodes without the GIL). ``on_checked`` receives the number of samples checked so far.

    Raises:
        UserError: the first problem in sample order, naming the file.
    """
    samples = list(samples)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        futures = [pool.submit(_verify_sample, sample) for sample in samples]
        for done, _ in enumerate(as_completed(futures), start=1):
            on_checked(done)
        for future in futures:  # the first failure in sample order, whatever the finishing order
            future.result()


def _verify_sample(sample: Sample) -> None:
    image_size = _verified_size(sample.image_path, "image")
    if sample.mask_path is not None:
        mask_size = _verified_size(sample.mask_path, "mask")
        if mask_size != image_size:
            raise _size_mismatch(sample, image_size, mask_size)


def _verified_size(path: Path, role: str) -> tuple[int, int]:
    supported = EIGHT_BIT_MODES | (SIXTEEN_BIT_MODES if role == "image" else RAW_MASK_MODES)
    with _readable(path, role), Image.open(path) as image:
        _check_mode(image, path, role, supported)
        size = image.size
        image.verify()
    with _readable(path, role), Image.open(path) as image:
        image.load()  # every pixel decoded: truncated or corrupt data fails here, not hours into a sweep
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
