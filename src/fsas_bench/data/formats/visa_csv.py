"""VisA: the original tree read through ``split_csv/1cls.csv``, or the reorganised MVTec-style form 1."""

from __future__ import annotations

import csv
from pathlib import Path

from fsas_bench.data.formats.common import build_index, dataset_root, under_root
from fsas_bench.data.formats.mvtec_tree import load_mvtec_tree
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError

SPLIT_CSV = Path("split_csv") / "1cls.csv"
CSV_COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}


def load_visa(root: str | Path, name: str = "visa") -> DatasetIndex:
    """VisA in whichever supported form ``root`` holds: the original tree, or form 1 (in ``1cls/`` or at root)."""
    root = dataset_root(root, name)
    if (root / SPLIT_CSV).is_file():
        return load_visa_csv(root, name)
    return load_mvtec_tree(root / "1cls" if (root / "1cls").is_dir() else root, name)


def load_visa_csv(root: str | Path, name: str = "visa") -> DatasetIndex:
    """Index the original VisA tree from ``split_csv/1cls.csv`` (paths in the CSV are relative to ``root``).

    Masks are recorded, not read: their values are defect-class indices, binarised (≠ 0) by the mask reader.
    Anomalous images have an empty ``defect_type`` (VisA names no defect folders).
    """
    root = dataset_root(root, name)
    csv_path = root / SPLIT_CSV
    if not csv_path.is_file():
        raise UserError(f"'{csv_path}' not found: point dataset '{name}' at the original VisA tree")
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise UserError(f"'{csv_path}' lacks column(s) {', '.join(missing)}: use VisA's own split_csv/1cls.csv")
        samples = [_row_sample(root, csv_path, line, row) for line, row in enumerate(reader, start=2)]
    categories = sorted({s.category for s in samples})
    return build_index(name, root, categories, samples, has_masks=True)


def _row_sample(root: Path, csv_path: Path, line: int, row: dict[str, str]) -> Sample:
    category, split, label, image, mask = ((row[c] or "").strip() for c in CSV_COLUMNS)  # None: a short line
    if split not in ("train", "test") or label not in LABELS or not image or not category:
        raise UserError(
            f"line {line} of '{csv_path}' is malformed (split '{split}', label '{label}', image '{image}'): "
            "use VisA's own split_csv/1cls.csv"
        )
    anomalous = LABELS[label] == 1
    if anomalous and not mask:
        raise UserError(f"mask missing for '{image}' (line {line} of '{csv_path}'): fill in its mask column")
    where = f"line {line} of '{csv_path}'"
    return Sample(
        image_path=under_root(root, image, where),
        rel_path=image,
        label=LABELS[label],
        category=category,
        split=split,
        defect_type="" if anomalous else "good",
        mask_path=under_root(root, mask, where) if anomalous else None,
    )
