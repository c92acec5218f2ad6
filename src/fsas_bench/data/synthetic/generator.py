"""The two embedded datasets: their specs, writing them in MVTec AD layout, the cache, the digest.

Layout of a generated dataset root::

    <cat>/train/good/000.png
    <cat>/test/good/000.png
    <cat>/test/<defect>/000.png
    <cat>/ground_truth/<defect>/000_mask.png   (0/255, mode L, same size as the image)
    attributes.json                             (one record per image: caption material)
    meta.json                                   (the same index in the AnomalyCLIP/AdaCLIP convention)
    COMPLETE                                    (written last; marks a finished tree)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fsas_bench.data.synthetic.categories import CATEGORIES
from fsas_bench.data.synthetic.render import render_sample
from fsas_bench.errors import UserError

GENERATOR_VERSION = 1
MARKER = "COMPLETE"


@dataclass(frozen=True)
class DatasetSpec:
    """A synthetic dataset: its categories, per-category image counts and seed."""

    name: str
    seed: int
    categories: tuple[str, ...]
    train_good: int
    test_good: int
    per_defect: int  # test images per defect type

    @property
    def image_sizes(self) -> dict[str, tuple[int, int]]:
        """(height, width) of each category's images."""
        return {name: (CATEGORIES[name].height, CATEGORIES[name].width) for name in self.categories}

    def groups(self, category: str) -> list[tuple[str, str, int]]:
        """(split, defect folder, image count) of one category, "good" for normal images."""
        defects = [("test", defect, self.per_defect) for defect in CATEGORIES[category].defects]
        return [("train", "good", self.train_good), ("test", "good", self.test_good), *defects]


SYNTHETIC_DATASETS: dict[str, DatasetSpec] = {
    "synthetic": DatasetSpec("synthetic", 20240, ("fabric", "tile", "hex_nut", "capsule", "circuit_board"), 16, 8, 4),
    "synthetic-aux": DatasetSpec("synthetic-aux", 20241, ("wood", "wire_mesh", "bracket", "button"), 24, 8, 4),
}


def image_rng(spec: DatasetSpec, category: str, split: str, defect: str, index: int) -> np.random.Generator:
    """The generator of one image: independent of every other image and of the order of generation."""
    key = [spec.seed, zlib.crc32(category.encode()), zlib.crc32(f"{split}/{defect}".encode()), index]
    return np.random.default_rng(key)


def write_dataset(spec: DatasetSpec, root: Path) -> None:
    """Render every image of ``spec`` into ``root`` (which must exist) in MVTec AD layout."""
    records: list[dict[str, Any]] = []
    for category in spec.categories:
        for split, defect, count in spec.groups(category):
            for index in range(count):
                rng = image_rng(spec, category, split, defect, index)
                sample = render_sample(category, rng, None if defect == "good" else defect)
                rel_path = f"{category}/{split}/{defect}/{index:03d}.png"
                _write_png(root / rel_path, sample.image)
                mask_path = None
                if defect != "good":
                    mask_path = f"{category}/ground_truth/{defect}/{index:03d}_mask.png"
                    _write_png(root / mask_path, sample.mask.astype(np.uint8) * 255)
                records.append({"rel_path": rel_path, "mask_path": mask_path, "split": split,
                                "label": int(defect != "good"), **sample.attributes})
    attributes = {"dataset": spec.name, "generator_version": GENERATOR_VERSION, "seed": spec.seed, "images": records}
    (root / "attributes.json").write_text(json.dumps(attributes, indent=1) + "\n")
    (root / "meta.json").write_text(json.dumps(_meta(records), indent=4) + "\n")


def ensure_synthetic(name: str, cache_dir: Path) -> Path:
    """Return ``<cache_dir>/<name>-v<GENERATOR_VERSION>``, generating it first if it is not complete.

    The tree is written into a private temporary directory in ``cache_dir`` and renamed into place, so a
    reader never sees a partial tree and concurrent callers all end up with one complete copy.
    """
    if name not in SYNTHETIC_DATASETS:
        raise UserError(f"unknown synthetic dataset {name!r}; choose one of {', '.join(SYNTHETIC_DATASETS)}")
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{name}-v{GENERATOR_VERSION}"
    if (target / MARKER).is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    try:
        write_dataset(SYNTHETIC_DATASETS[name], staging)
        (staging / MARKER).write_text(f"{name} generator v{GENERATOR_VERSION}\n")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def tree_digest(root: Path) -> str:
    """SHA-256 over a generated tree: every file's relative path, then for PNGs the decoded mode, size and
    pixels (independent of PNG encoder settings) and for other files their bytes; `MARKER` is left out."""
    root = Path(root)
    digest = hashlib.sha256()
    files = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    for rel_path in files:
        if rel_path == MARKER:
            continue
        if rel_path.endswith(".png"):
            with Image.open(root / rel_path) as image:
                content = f"{image.mode} {image.size}".encode() + image.tobytes()
        else:
            content = (root / rel_path).read_bytes()
        for chunk in (rel_path.encode(), content):
            digest.update(len(chunk).to_bytes(8, "little"))
            digest.update(chunk)
    return digest.hexdigest()


def _publish(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``. A complete ``target`` (another caller won the race) is kept and
    ``staging`` left for the caller to delete; an incomplete one is moved aside and deleted first."""
    while True:
        try:
            os.replace(staging, target)
            return
        except OSError:
            if (target / MARKER).is_file():
                return
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale.", dir=target.parent))
        try:
            os.replace(target, aside)
        except FileNotFoundError:
            pass  # another caller moved it first
        shutil.rmtree(aside, ignore_errors=True)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=1)


def _meta(records: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    meta: dict[str, dict[str, list[dict[str, Any]]]] = {"train": {}, "test": {}}
    for record in records:
        meta[record["split"]].setdefault(record["category"], []).append({
            "img_path": record["rel_path"], "mask_path": record["mask_path"] or "", "cls_name": record["category"],
            "specie_name": record["defect"], "anomaly": record["label"],
        })
    return meta
