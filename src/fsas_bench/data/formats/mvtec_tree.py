"""MVTec-style folder trees: MVTec AD, MPDD, DTD-Synthetic, BTAD (``ok``/``ko``) and VisA form 1 (``bad``).

Layout: ``<cat>/{train,test}/<folder>/<image>`` and ``<cat>/ground_truth/<folder>/<mask>``. Masks are paired
with images by name, never by position: the mask of ``<stem>.<ext>`` is the file in the matching
``ground_truth`` folder whose stem is ``<stem>_mask`` (MVTec, MPDD, DTD-Synthetic), ``<stem>`` (BTAD, VisA
form 1), ``<stem>_label`` (DAGM re-foldered) or ``<stem>_GT`` (KSDD2 re-foldered), in that order of preference.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fsas_bench.data.formats.common import build_index, dataset_root, is_image_file, under_root
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError

NORMAL_FOLDERS = ("good", "ok")
MASK_STEM_SUFFIXES = ("_mask", "", "_label", "_gt")


def load_mvtec_tree(root: str | Path, name: str, *, normal_folders: tuple[str, ...] = NORMAL_FOLDERS) -> DatasetIndex:
    """Index an MVTec-style tree; categories are the sub-folders holding both ``train/`` and ``test/``.

    The dataset has masks when any category has a ``ground_truth/`` folder; then every anomalous image must
    have one (UserError otherwise). Normal images get ``defect_type="good"`` whatever their folder is called.
    """
    root = dataset_root(root, name)
    categories = sorted(p.name for p in _subfolders(root) if (p / "train").is_dir() and (p / "test").is_dir())
    if not categories:
        raise UserError(
            f"no categories in '{root}' (expected <category>/train and <category>/test folders): "
            "check the dataset layout"
        )
    has_masks = any((root / c / "ground_truth").is_dir() for c in categories)
    samples = [s for c in categories for s in _category_samples(root, c, normal_folders, has_masks)]
    return build_index(name, root, categories, samples, has_masks=has_masks)


def _category_samples(root: Path, category: str, normal_folders: tuple[str, ...], has_masks: bool) -> Iterator[Sample]:
    for split in ("train", "test"):
        for folder in _subfolders(root / category / split):
            normal = folder.name in normal_folders
            needs_mask = has_masks and not normal
            masks = _masks_by_stem(root / category / "ground_truth" / folder.name) if needs_mask else {}
            for image in sorted(p for p in folder.iterdir() if is_image_file(p)):
                rel_path = image.relative_to(root).as_posix()
                yield Sample(
                    image_path=under_root(root, image, f"dataset '{root}'"),
                    rel_path=rel_path,
                    label=0 if normal else 1,
                    category=category,
                    split=split,
                    defect_type="good" if normal else folder.name,
                    mask_path=under_root(root, _paired_mask(image, masks, rel_path), f"dataset '{root}'")
                    if needs_mask
                    else None,
                )


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    """Mask files of one ``ground_truth/<defect>`` folder keyed by lower-case stem (empty if absent)."""
    if not folder.is_dir():
        return {}
    return {p.stem.lower(): p for p in sorted(folder.iterdir()) if is_image_file(p)}


def _paired_mask(image: Path, masks: dict[str, Path], rel_path: str) -> Path:
    for suffix in MASK_STEM_SUFFIXES:
        mask = masks.get(f"{image.stem}{suffix}".lower())
        if mask is not None:
            return mask
    raise UserError(
        f"mask missing for '{rel_path}' (expected ground_truth/{image.parent.name}/{image.stem}_mask.png "
        f"or {image.stem}.png): check the dataset layout"
    )
