"""What the HTML report draws, kept by the runner cheaply: example maps and downsampled curves (never metrics).

Layout under ``--out`` (every file written atomically; cells skipped on resume write nothing)::

    pictures/<dataset>/<category>/examples.npz     the category's example test images, chosen once
    pictures/<dataset>/<category>/maps/<job_id>.npz    seed-0 cells: each method's maps of those examples
    pictures/<dataset>/<category>/curves/<job_id>.npz  every cell: ROC (and PRO) curves, ≤ 300 points each

``examples.npz``: ``rel_path`` (E,) str, ``label`` (E,) int, ``defect_type`` (E,) str, ``image`` (E, h, w, 3)
uint8 and ``mask`` (E, h, w) bool, in the evaluation frame downsampled to at most 256 px a side.
``maps/<job_id>.npz``: ``rel_path`` (E,) str, ``map`` (E, h, w) float16 in [0, 1] with the raw score
``lo + (hi - lo) * map``, where ``lo``/``hi`` are the minimum and maximum of the method's maps over the whole
test split of the category; ``image_score`` (E,) float64 raw. ``curves/<job_id>.npz``: for each curve name
``C`` of :func:`fsas_bench.metrics.curves.curves` (``I-ROC``, ``P-ROC``, ``PRO``) present, ``C/x`` and ``C/y``
float64. Result rows link a ``job_id`` to its method, shot and seed.

The examples are chosen from the test split alone (never from any method's output): defect types (``good``
last) take turns, each contributing its images in a fixed seeded order, until ``N`` are chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from fsas_bench.data.formats.images import read_image_rgb
from fsas_bench.data.sample import Sample
from fsas_bench.files import atomic_write
from fsas_bench.metrics import GroundTruthRegions
from fsas_bench.metrics.curves import curves
from fsas_bench.names import child_path
from fsas_bench.runner.grid import Cell, numeric_seed

DEFAULT_EXAMPLES = 4
"""Example test images kept per category by default (``--save-examples``)."""
MAX_SIDE = 256
"""Longest side of a kept image, mask or map."""
PICTURES = "pictures"
SELECTION_SEED = 0


def select_examples(query: Sequence[Sample], n: int, seed: int = SELECTION_SEED) -> list[int]:
    """Indices of ``n`` (or all, if fewer) test images, stratified by defect type.

    Strata are the defect types (the label when a dataset has none), anomalous ones in name order and the
    normal one last; each is shuffled once with ``seed``; then the strata take turns giving their next image.
    """
    strata: dict[str, list[int]] = {}
    for i, sample in enumerate(query):
        name = sample.defect_type or ("good" if sample.label == 0 else "anomalous")
        strata.setdefault(name, []).append(i)
    rng = np.random.default_rng(seed)
    order = sorted(strata, key=lambda name: (query[strata[name][0]].label == 0, name))
    queues = [list(rng.permutation(strata[name])) for name in order]
    chosen: list[int] = []
    while len(chosen) < min(n, len(query)):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(int(queue.pop(0)))
    return chosen


def thumbnail_size(height: int, width: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(h, w) of an H × W frame scaled down (never up) so that its longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def category_dir(out: Path, dataset: str, category: str) -> Path:
    """``<out>/pictures/<dataset>/<category>``."""
    return child_path(out, PICTURES, dataset, category)


def save_pictures(
    out: Path,
    n_examples: int,
    cell: Cell,
    job_id: str,
    query: Sequence[Sample],
    scores: Tensor,
    labels: np.ndarray,
    maps: Tensor,
    masks: np.ndarray,
    regions: GroundTruthRegions | None,
) -> None:
    """Keep what the report draws of one evaluated cell (nothing when ``n_examples`` is 0).

    Args:
        out: the run's output directory.
        n_examples: example images per category (``--save-examples``).
        cell, job_id: the cell and its job id.
        query: the category's test split, in evaluation order.
        scores: (N,) image scores; labels: (N,) 0/1.
        maps: (N, H, W) maps in the evaluation frame; masks: (N, H, W) bool in the same frame.
        regions: the masks' regions, or ``None`` for a dataset without masks (no pixel curves).
    """
    if n_examples == 0:
        return
    folder = category_dir(out, cell.dataset, cell.category)
    found = curves(scores, labels, maps if regions is not None else None, regions)
    arrays = {f"{name}/{axis}": v for name, xy in found.items() for axis, v in zip("xy", xy)}
    _save_npz(child_path(folder, "curves", f"{job_id}.npz"), arrays, compress=False)
    if numeric_seed(cell.seed) != 0:
        return
    chosen = select_examples(query, n_examples)
    size = thumbnail_size(*maps.shape[1:])
    rel_paths = np.array([query[i].rel_path for i in chosen])
    examples = folder / "examples.npz"
    if not examples.is_file():
        _save_npz(examples, compress=True, arrays={
            "rel_path": rel_paths,
            "label": np.array([query[i].label for i in chosen]),
            "defect_type": np.array([query[i].defect_type for i in chosen]),
            "image": np.stack([_resized_image(query[i], size) for i in chosen]),
            "mask": np.stack([_resized_mask(masks[i], size) for i in chosen]),
        })  # fmt: skip
    lo, hi = (v.item() for v in torch.aminmax(maps.float()))
    picked = maps[torch.tensor(chosen, device=maps.device)].float()
    small = F.interpolate(picked.unsqueeze(1), size=size, mode="area").squeeze(1).cpu()
    normalised = ((small - lo) / (hi - lo) if hi > lo else torch.zeros_like(small)).clamp(0, 1)
    _save_npz(child_path(folder, "maps", f"{job_id}.npz"), arrays={
        "rel_path": rel_paths, "map": normalised.numpy().astype(np.float16), "lo": np.float64(lo),
        "hi": np.float64(hi), "image_score": scores[chosen].double().cpu().numpy(),
    }, compress=False)  # fmt: skip


def _resized_image(sample: Sample, size: tuple[int, int]) -> np.ndarray:
    """The sample's RGB image resized to ``size`` = (h, w) (the frame's aspect, as the maps)."""
    image = Image.fromarray(read_image_rgb(sample.image_path))
    return np.asarray(image.resize(size[::-1], Image.Resampling.LANCZOS))


def _resized_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A frame mask scaled to ``size`` = (h, w), a pixel a defect when any of its area is (small defects stay
    visible)."""
    area = F.interpolate(torch.from_numpy(mask).float()[None, None], size=size, mode="area")[0, 0]
    return (area > 0).numpy()


def _save_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool) -> None:
    """``arrays`` as an ``.npz`` at ``path``, written atomically; compressed only where it pays (images: maps and
    curves in float barely shrink and would cost more time than the rest of the cell's pictures)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            (np.savez_compressed if compress else np.savez)(handle, **arrays)

    atomic_write(path, write, "pictures")
