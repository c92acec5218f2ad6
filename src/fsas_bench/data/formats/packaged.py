"""Image-level datasets shipped as optional PyPI packages (the ``data`` extra): ELPV and simulated textiles.

Both follow datasets.md §11–12: the normal images are split 75/25 exactly as scikit-learn's
``train_test_split(test_size=0.25, random_state=42)`` does, and there are no masks.
"""

from __future__ import annotations

import importlib
import math
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType

import numpy as np

from fsas_bench.data.formats.common import build_index
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError

DATA_EXTRA_INSTALL = "pip install 'fsas-bench[data]'"
ELPV_MODULE = "elpv_dataset"
TEXTILE_MODULE = "conformal_clip_data"
TEXTILE_CATEGORIES = ("textile_local", "textile_global")


def elpv_available() -> bool:
    """Whether ``elpv-dataset`` is installed (checked without importing it)."""
    return find_spec(ELPV_MODULE) is not None


def textile_available() -> bool:
    """Whether ``conformal-clip-data`` is installed (checked without importing it)."""
    return find_spec(TEXTILE_MODULE) is not None


def load_elpv(*, by_type: bool = False) -> DatasetIndex:
    """ELPV solar cells: normal = defect probability 0, anomalous = 1 (1/3 and 2/3 dropped).

    One category ``elpv`` (train 1,131 normal; test 377 normal + 715 anomalous), or with ``by_type``
    ``elpv_mono`` and ``elpv_poly`` after the same pooled split. Samples follow ``labels.csv`` order.
    """
    root = Path(str(files(_require(ELPV_MODULE, "elpv", "elpv-dataset")) / "data"))
    rows = [line.split() for line in (root / "labels.csv").read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [(path, float(p) == 1.0, kind) for path, p, kind in rows if float(p) in (0.0, 1.0)]
    normal_test = _held_out(sum(not anomalous for _, anomalous, _ in kept))
    samples, normal_position = [], 0
    for path, anomalous, kind in kept:
        if anomalous:
            split = "test"
        else:
            split = "test" if normal_position in normal_test else "train"
            normal_position += 1
        category = f"elpv_{kind}" if by_type else "elpv"
        samples.append(_sample(root, path, category, split, "defect" if anomalous else "good"))
    categories = ("elpv_mono", "elpv_poly") if by_type else ("elpv",)
    return build_index("elpv", root, categories, samples, has_masks=False)


def load_textile() -> DatasetIndex:
    """Simulated textiles: ``textile_local`` and ``textile_global`` share 750 train and 250 test normals.

    Their test anomalies are the 500 ``local/`` and the 500 ``global/`` images respectively.
    """
    root = _require(TEXTILE_MODULE, "textile", "conformal-clip-data").textile_simulated_root()
    nominal = sorted(p.name for p in (root / "nominal").iterdir() if p.suffix.lower() == ".jpg")
    normal_test = _held_out(len(nominal))
    samples = []
    for category in TEXTILE_CATEGORIES:
        for position, name in enumerate(nominal):
            split = "test" if position in normal_test else "train"
            samples.append(_sample(root, f"nominal/{name}", category, split, "good"))
        kind = category.removeprefix("textile_")
        for name in sorted(p.name for p in (root / kind).iterdir() if p.suffix.lower() == ".jpg"):
            samples.append(_sample(root, f"{kind}/{name}", category, "test", kind))
    return build_index("textile", root, TEXTILE_CATEGORIES, samples, has_masks=False)


def _require(module: str, dataset: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise UserError(
            f"dataset '{dataset}' needs the optional package '{package}': install the data extra: {DATA_EXTRA_INSTALL}"
        ) from None


def _held_out(n: int) -> frozenset[int]:
    """Positions that ``train_test_split(range(n), test_size=0.25, random_state=42)`` puts in the test split."""
    return frozenset(np.random.RandomState(42).permutation(n)[: math.ceil(0.25 * n)].tolist())


def _sample(root: Path, rel_path: str, category: str, split: str, defect_type: str) -> Sample:
    """A sample that is normal exactly when its defect type is ``good``."""
    return Sample(
        image_path=root / rel_path,
        rel_path=rel_path,
        label=0 if defect_type == "good" else 1,
        category=category,
        split=split,
        defect_type=defect_type,
    )
