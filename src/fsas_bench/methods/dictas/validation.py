"""The official g_V freeze trigger's validation (``vgen_freeze=val_trigger``, spec dictas.md §8.6).

It reads the **target dataset's test split**: target-domain leakage, available in faithful mode only and
flagged by the config's ``target_leakage``. The maps are scored by the :data:`~fsas_bench.methods.base.MapScorer`
the runner hands over; the method computes no metric itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fsas_bench.data.datamodule import image_sha
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.manifests import draw_manifest, support_samples
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError
from fsas_bench.methods.base import MapScorer
from fsas_bench.methods.dictas.torch_model import ReferenceDictionary, anomaly_grids, render_maps

if TYPE_CHECKING:
    from fsas_bench.methods.dictas.lightning_module import DictAS

VALIDATION_CATEGORIES = {
    "mvtec": ("bottle", "hazelnut", "cable", "metal_nut", "leather", "pill"),
    "visa": ("chewinggum", "cashew", "pipe_fryum", "capsules", "candle"),
}
"""The official validation subsets (of MVTec AD when training on VisA, of VisA when training on MVTec AD);
other targets use all their categories."""
QUERY_CHUNK = 8


def _batch(samples: list[Sample]) -> dict[str, list[str]]:
    return {"path": [str(s.image_path) for s in samples], "sha": [image_sha(s.image_path) for s in samples]}


@torch.no_grad()
def target_validation_ap(method: DictAS, target: DatasetIndex, score: MapScorer) -> float:
    """Mean per-category pixel AP on ``target``'s test split: 1-shot references (seeded draw, seed 0), the
    training layers and scales, unsmoothed maps at the output size, masks resized bilinearly then > 0.5
    (``score`` computes the AP)."""
    if not target.has_masks:
        raise UserError(f"dictas vgen_freeze=val_trigger needs pixel masks, and '{target.name}' has none")
    manifest = draw_manifest(target, 1, 0)
    names = [f"block{b}" for b in method.blocks]
    size = method.output_size
    aps = []
    for category in VALIDATION_CATEGORIES.get(target.name, target.categories):
        refs = method.features(_batch(support_samples(manifest, target, category)), names)
        references = {b: torch.stack([f[f"block{b}"] for f in refs]) for b in method.blocks}
        dictionary = ReferenceDictionary(method.head, references)
        query = target.split(category, "test")
        maps = []
        for start in range(0, len(query), QUERY_CHUNK):
            feats = method.features(_batch(query[start : start + QUERY_CHUNK]), names)
            tokens = {b: torch.stack([f[f"block{b}"] for f in feats]).to(method.device) for b in method.blocks}
            grids = anomaly_grids(method.head, tokens, dictionary, method.config.scales)
            maps.append(render_maps(grids, size, 0.0).cpu())  # unsmoothed
        aps.append(score(query, torch.cat(maps), "bilinear>0.5")["P-AP"])
    return float(sum(aps) / len(aps))
