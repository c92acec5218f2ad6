"""The ``mvtec-scale`` preset: the embedded generator at MVTec AD's dimensions, for measuring scale without it.

15 categories named like MVTec AD's, each with MVTec AD's train/test counts and image side (700 to 1024 px,
square PNGs; 5,354 images in all), written as an MVTec tree under ``<out>/mvtec/`` so that
``--data-root <out> --datasets mvtec`` reads it. Each category is drawn by one embedded renderer (below) at its
native size, then upscaled (bicubic; masks nearest) and given a seeded ±3-level grain, so that PNGs decode like
photographs rather than flat renderings. Every image has its own generator (``image_rng``), so any subset is
byte-identical to the same images of the full tree, on every machine.

The tree is written into a temporary sibling of ``<out>/mvtec`` and renamed into place once complete, with a
marker file (:data:`MARKER`, written last) recording the request: ``<out>/mvtec`` is absent or complete, a
rerun of the same request is a no-op, and a folder holding anything else is never written into.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from fsas_bench.data.synthetic.categories import CATEGORIES
from fsas_bench.data.synthetic.generator import DatasetSpec, image_rng
from fsas_bench.data.synthetic.render import render_sample
from fsas_bench.errors import UserError
from fsas_bench.files import atomic_write_text, check_writable_dir, umask, write_error

SCALE_SEED = 20250
GRAIN = 3
"""Largest grain added to every channel value (uniform integers in [-GRAIN, GRAIN])."""
MARKER = ".fsas-synth.json"
"""The file written last into a complete ``<out>/mvtec``: the request it answers (preset, categories, limit)."""


@dataclass(frozen=True)
class ScaleCategory:
    """One category of the preset: MVTec AD's counts and side, and the embedded renderer that draws it."""

    train_good: int
    test_good: int
    test_anomalous: int
    side: int
    renderer: str

    def groups(self) -> list[tuple[str, str, int]]:
        """(split, defect folder, count): the anomalous images spread over the renderer's defects in turn."""
        defects = CATEGORIES[self.renderer].defects
        share, extra = divmod(self.test_anomalous, len(defects))
        anomalous = [("test", d, share + (i < extra)) for i, d in enumerate(defects)]
        return [("train", "good", self.train_good), ("test", "good", self.test_good), *anomalous]


MVTEC_SCALE: dict[str, ScaleCategory] = {
    "bottle": ScaleCategory(209, 20, 63, 900, "washer"),
    "cable": ScaleCategory(224, 58, 92, 1024, "circuit_board"),
    "capsule": ScaleCategory(219, 23, 109, 1000, "capsule"),
    "carpet": ScaleCategory(280, 28, 89, 1024, "carpet"),
    "grid": ScaleCategory(264, 21, 57, 1024, "wire_mesh"),
    "hazelnut": ScaleCategory(391, 40, 70, 1024, "button"),
    "leather": ScaleCategory(245, 32, 92, 1024, "fabric"),
    "metal_nut": ScaleCategory(220, 22, 93, 700, "hex_nut"),
    "pill": ScaleCategory(267, 26, 141, 800, "capsule"),
    "screw": ScaleCategory(320, 41, 119, 1024, "bracket"),
    "tile": ScaleCategory(230, 33, 84, 840, "tile"),
    "toothbrush": ScaleCategory(60, 12, 30, 1024, "bracket"),
    "transistor": ScaleCategory(213, 60, 40, 1024, "circuit_board"),
    "wood": ScaleCategory(247, 19, 60, 1024, "wood"),
    "zipper": ScaleCategory(240, 32, 119, 1024, "fabric"),
}
"""MVTec AD's categories: (train good, test good, test anomalous, image side) as in the real dataset."""
PRESETS = {"mvtec-scale": MVTEC_SCALE}
_SPEC = DatasetSpec("mvtec-scale", SCALE_SEED, tuple(MVTEC_SCALE), 0, 0, 0)  # only its seed keys the generators


def render_scaled(category: str, split: str, defect: str, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Image ``index`` of a group: RGB or gray uint8 ``side × side`` and its 0/255 mask (None when normal)."""
    spec = MVTEC_SCALE[category]
    rng = image_rng(_SPEC, category, split, defect, index)
    sample = render_sample(spec.renderer, rng, None if defect == "good" else defect)
    size = (spec.side, spec.side)
    image = np.asarray(Image.fromarray(sample.image).resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    grained = np.clip(image + rng.integers(-GRAIN, GRAIN + 1, image.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    if defect == "good":
        return grained, None
    mask = Image.fromarray(sample.mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
    return grained, np.asarray(mask)


Job = tuple[str, str, str, int]
"""(category, split, defect folder, index) of one image."""


def write_scale_preset(
    preset: str,
    out: Path,
    categories: Sequence[str] = (),
    limit: int | None = None,
    on_image: Callable[[int, int], None] = lambda *progress: None,
    processes: int = 1,
) -> int:
    """Write ``preset`` as an MVTec tree ``out/mvtec/<category>/...`` (atomically, see the module docstring);
    the number of images written, 0 when ``out/mvtec`` already holds exactly this request, complete.

    Args:
        preset: a key of :data:`PRESETS`.
        out: the folder to pass as ``--data-root``.
        categories: the categories to write (default: all; order and repeats do not matter).
        limit: at most this many images per (split, defect) group (default: the full counts).
        on_image: progress, (done, total).
        processes: rendering processes (1: this one); the images do not depend on it.

    Raises:
        UserError: unknown preset or category, invalid limit, ``out`` not writable, or an ``out/mvtec`` that
            holds anything but this request (checked before anything is written).
    """
    if preset not in PRESETS:
        raise UserError(f"synth preset '{preset}' is unknown: use {', '.join(PRESETS)}")
    table = PRESETS[preset]
    unknown = [c for c in categories if c not in table]
    if unknown:
        raise UserError(f"category '{unknown[0]}' is not in {preset}: use some of {', '.join(table)}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit} is invalid: use a positive number of images per group")
    check_writable_dir(out, "--out")
    names = [c for c in table if c in categories] if categories else list(table)
    request = {"preset": preset, "categories": names, "limit": limit}
    root = out / "mvtec"
    if _already_written(root, request):
        return 0
    jobs = [(c, split, defect, i)
            for c in names
            for split, defect, count in table[c].groups()
            for i in range(count if limit is None else min(count, limit))]  # fmt: skip
    staging = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".mvtec-", suffix=".partial", dir=out))
        for done, _ in enumerate(_write_images(staging, jobs, processes)):
            on_image(done + 1, len(jobs))
        atomic_write_text(staging / MARKER, json.dumps(request, sort_keys=True) + "\n", "synth marker")
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp's folder is private; the tree gets the usual permissions
        os.replace(staging, root)
    except OSError as exc:
        raise UserError(write_error(root, exc, "synthetic dataset")) from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)  # nothing left once renamed into place
    return len(jobs)


def _already_written(root: Path, request: dict[str, object]) -> bool:
    """Whether ``root`` holds exactly ``request``, complete (False when it is absent or an empty folder).

    Raises:
        UserError: ``root`` holds anything else.
    """
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return False
    try:
        recorded = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    if recorded == request:
        return True
    what = "another synth request" if isinstance(recorded, dict) else "files that fsas-bench synth did not write"
    raise UserError(f"'{root}' already holds {what}: pass a new or empty --out folder, or delete '{root}' first")


def _write_images(root: Path, jobs: Sequence[Job], processes: int) -> Iterator[None]:
    """Render and save every job's image (and mask) under ``root``, in ``processes`` processes; one item per
    image written."""
    if processes <= 1:
        for job in jobs:
            yield _write_image(root, job)
        return
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        yield from pool.imap_unordered(partial(_write_image, root), jobs)


def _write_image(root: Path, job: Job) -> None:
    """Image ``job`` (and its mask) as PNGs under ``root``."""
    category, split, defect, index = job
    image, mask = render_scaled(category, split, defect, index)
    _save_png(root / category / split / defect / f"{index:03d}.png", image)
    if mask is not None:
        _save_png(root / category / "ground_truth" / defect / f"{index:03d}_mask.png", mask)


def _save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=1)
