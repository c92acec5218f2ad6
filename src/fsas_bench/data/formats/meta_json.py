"""The ``meta.json`` index of APRIL-GAN / AnomalyCLIP / AdaCLIP (datasets.md §13.2).

Shape: ``{"train": {cls: [record, ...]}, "test": {...}}`` with records ``img_path``, ``mask_path`` (may be
empty), ``cls_name``, ``specie_name``, ``anomaly``. Users' files load unchanged: split keys are matched
case-insensitively (AnomalyCLIP's DAGM uses ``Train``/``Test``), a missing ``train`` means no training images,
absolute paths are made relative to the dataset root, and a ``mask_path`` without a file suffix (AnomalyCLIP's
directory placeholder for classification sets) counts as no mask.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from fsas_bench.data.formats.common import build_index, dataset_root, under_root
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError

META_FILE = "meta.json"


def load_meta_json(root: str | Path, name: str) -> DatasetIndex:
    """Index the dataset described by ``<root>/meta.json``; categories are the sorted class keys.

    The dataset has masks when any record has a ``mask_path``; then every anomalous record must have one.
    """
    root = dataset_root(root, name)
    meta_path = root / META_FILE
    splits = _splits(_read_json(meta_path), meta_path)
    records = [
        (split, category, position, record)
        for split, by_class in splits.items()
        for category, class_records in by_class.items()
        for position, record in enumerate(class_records)
    ]
    for split, category, position, record in records:
        _check_record(record, _where(split, category, position, meta_path))
    has_masks = any(_mask_field(r) for *_, r in records)
    samples = [_sample(root, meta_path, has_masks, *item) for item in records]
    categories = sorted({category for by_class in splits.values() for category in by_class})
    return build_index(name, root, categories, samples, has_masks=has_masks)


def _read_json(meta_path: Path) -> Any:
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"'{meta_path}' not found: put the dataset's meta.json in its folder") from None
    except (OSError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise UserError(f"cannot read '{meta_path}' ({reason}): fix or regenerate the meta.json") from None


def _splits(meta: Any, meta_path: Path) -> dict[str, dict[str, list[Any]]]:
    """``{"train": ..., "test": ...}`` from top-level keys matched case-insensitively."""
    if not isinstance(meta, dict):
        raise UserError(f"'{meta_path}' is not a JSON object: expected 'train' and 'test' keys")
    splits: dict[str, dict[str, list[Any]]] = {}
    for key, value in meta.items():
        split = key.lower()
        if split not in ("train", "test"):
            continue
        if split in splits:
            raise UserError(f"'{meta_path}' has the '{split}' key twice (in different cases): keep one")
        if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
            raise UserError(f"'{key}' in '{meta_path}' must map class names to lists of records: fix the meta.json")
        splits[split] = value
    if "test" not in splits:
        raise UserError(f"'{meta_path}' has no 'test' key: regenerate the meta.json")
    return splits


def _where(split: str, category: str, position: int, meta_path: Path) -> str:
    return f"record {position} of {split}/{category} in '{meta_path}'"


def _check_record(record: Any, where: str) -> None:
    """UserError unless ``record`` is an object with a non-empty string ``img_path``, ``anomaly`` 0 or 1, and
    ``mask_path``/``specie_name`` strings when given."""
    if not isinstance(record, dict) or not record.get("img_path") or record.get("anomaly") not in (0, 1):
        raise UserError(f"{where} needs 'img_path' and 'anomaly' (0 or 1): fix the meta.json")
    for key in ("img_path", "mask_path", "specie_name"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise UserError(f"'{key}' of {where} is {type(record[key]).__name__}, not a string: fix the meta.json")


def _mask_field(record: dict[str, Any]) -> str:
    """The record's mask path, or '' for none (empty, absent, or a suffix-less directory placeholder)."""
    mask = record.get("mask_path") or ""
    return mask if PurePosixPath(mask).suffix else ""


def _sample(
    root: Path, meta_path: Path, has_masks: bool, split: str, category: str, position: int, record: dict[str, Any]
) -> Sample:
    where = _where(split, category, position, meta_path)
    label = int(record["anomaly"])
    rel_path = _relative(record["img_path"], root, where)
    mask = _mask_field(record) if label else ""
    if label and has_masks and not mask:
        raise UserError(f"mask missing for '{rel_path}' ({where} has no mask_path): add its mask_path")
    return Sample(
        image_path=under_root(root, rel_path, where),
        rel_path=rel_path,
        label=label,
        category=category,
        split=split,
        defect_type=record.get("specie_name") or ("" if label else "good"),
        mask_path=under_root(root, _relative(mask, root, where), where) if mask else None,
    )


def _relative(path: str, root: Path, where: str) -> str:
    """``path`` relative to ``root``: an absolute path is cut at ``root``, else at its longest tail found below it."""
    candidate = Path(path)
    if not candidate.is_absolute():
        return candidate.as_posix()
    if candidate.is_relative_to(root):
        return candidate.relative_to(root).as_posix()
    parts = candidate.parts
    for start in range(1, len(parts)):
        tail = Path(*parts[start:])
        if (root / tail).is_file():
            return tail.as_posix()
    raise UserError(f"'{path}' ({where}) is not under the dataset root '{root}': make the path relative to it")
