"""MLSA region aggregation (spec §6): parameter-free DPC-KNN on text-similarity vectors of the high-resolution
tiled shots, entity-to-cluster matching on shot 0, per-entity re-weighting maps R_e.

Two computations (config ``mlsa_regions``):

* ``corrected`` (benchmark): each shot's own background decision from normalised cluster means, background
  tokens excluded from stage 2, the background map is the stage-1 background, true f × f average pooling.
* ``released`` (faithful): the released code's, quirks included —
  (a) every shot's background decision is taken on shot 0's stage-1 partition; a shot keeps its own partition
  when cluster 0 is judged background, and takes shot 0's (cluster 0 as foreground) when cluster 1 is;
  (b) the decision compares the *unnormalised* mean tokens with the background text feature;
  (c) stage 2 only hides background tokens from the densities: the tokens that are background in shot 0 take,
  in every shot, the stage-2 label of token 0, and the other background tokens the nearest centre's label;
  (d) the background map is the stage-2 cluster matched to the background text (entities and background are
  matched alike);
  (e) the f × f "average pooling" reshapes the unfolded windows wrongly: each output cell averages f² consecutive
  entries of the (kernel offset, window) layout, not one window.

Both share the DPC-KNN below. With stage 1's k = 1 the density is exp(−self-distance²) + noise, i.e. the noise
rounded to float32 near 1: a few distinct values, so hundreds of tokens tie for the top score and the two centres
are the first ``topk`` returns among them (released: CUDA ``topk``; here CPU ``topk``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

MLSA_REGIONS = ("corrected", "released")
REGION_BOOST = 1.5
STAGE1_K, STAGE2_K = 8, 5
DENSITY_NOISE = 1e-6


def effective_k(k: int, n_clusters: int) -> int:
    """The official wrapper's cap: k > clusters → min(3, max(⌊clusters/2⌋, 1))."""
    return min(3, max(n_clusters // 2, 1)) if k > n_clusters else k


def dpc_knn(
    x: Tensor,
    n_clusters: int,
    k: int,
    generator: torch.Generator,
    mask: Tensor | None = None,
    released: bool = False,
) -> Tensor:
    """Density-peaks clustering with k-NN density of ``N × C`` (or ``B × N × C``, rows clustered apart) points;
    ``N`` (``B × N``) labels.

    Density = exp(−mean squared distance to the k nearest points, self included) + U(0, 1e-6) noise (one
    ``B × N`` draw, seeded tie break); centres maximise density × distance to the nearest denser point; points
    join the nearest centre. Distances are Euclidean / √C. Masked-out points get zero density, and distances to
    them become the largest distance of the whole batch + 1. Corrected: distances from them too, and they are
    labelled −1. ``released``: they keep their real distances to the others and a label (the first centre, as
    every centre is equally far from them).
    """
    batched = x.dim() == 3
    if not batched:
        x, mask = x[None], None if mask is None else mask[None]
    dist = torch.cdist(x, x) / math.sqrt(x.shape[-1])
    if mask is not None:
        keep = mask[:, None, :] if released else mask[:, None, :] & mask[:, :, None]
        dist = torch.where(keep, dist, dist.max() + 1)
    nearest = dist.topk(effective_k(k, n_clusters), dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(-1)) + torch.rand(x.shape[:2], generator=generator) * DENSITY_NOISE
    if mask is not None:
        density = density * mask
    denser = density[:, None, :] > density[:, :, None]
    delta = torch.where(denser, dist, dist.amax(dim=(1, 2), keepdim=True)).amin(dim=-1)
    centres = (delta * density).topk(n_clusters, dim=-1).indices  # B × n_clusters
    labels = dist.gather(1, centres[:, :, None].expand(-1, -1, dist.shape[-1])).argmin(dim=1)
    labels.scatter_(1, centres, torch.arange(n_clusters).expand_as(centres))
    if mask is not None and not released:
        labels = labels.masked_fill(~mask, -1)
    return labels if batched else labels[0]


def cluster_means(tokens: Tensor, labels: Tensor, n_clusters: int) -> Tensor:
    """``n_clusters × D`` mean token per cluster (zero for an empty cluster)."""
    one_hot = F.one_hot(labels.clamp(min=0), n_clusters).float() * (labels >= 0)[:, None]
    return (one_hot.T @ tokens) / one_hot.sum(0).clamp(min=1)[:, None]


@dataclass(frozen=True)
class MlsaPartition:
    """The clusterings behind the maps, on the ``M = (f·g)²`` high-resolution tokens of the k shots.

    Attributes:
        stage1: ``k × M`` stage-1 labels (0/1).
        background: ``k × M`` tokens hidden from stage 2 (the background).
        stage2: ``k × M`` stage-2 labels (corrected: −1 on the background).
        regions: ``(E + 1) × k × M`` boosted tokens of each map, entities then the background.
    """

    stage1: Tensor
    background: Tensor
    stage2: Tensor
    regions: Tensor


def corrected_partition(
    hires: Tensor, entity_text: Tensor, background_text: Tensor, generator: torch.Generator
) -> MlsaPartition:
    """Per shot: stage 1, its background cluster (normalised mean closer to the background text), stage 2 on
    its foreground; entities matched to shot 0's stage-2 clusters; the background map is the stage-1
    background. Noise is drawn shot by shot (stage 1, then stage 2)."""
    n_entities = entity_text.shape[0]
    similarity = hires @ torch.cat([entity_text, background_text[None]]).T  # k × M × (E + 1)
    splits, entity_labels, background_masks = [], [], []
    for shot in range(hires.shape[0]):
        split = dpc_knn(similarity[shot], 2, STAGE1_K, generator)
        means = F.normalize(cluster_means(hires[shot], split, 2), dim=-1)
        background = split == int((means @ background_text).argmax())
        entity_labels.append(dpc_knn(similarity[shot], n_entities + 1, STAGE2_K, generator, mask=~background))
        splits.append(split)
        background_masks.append(background)
    stage2, background = torch.stack(entity_labels), torch.stack(background_masks)
    means0 = F.normalize(cluster_means(hires[0], stage2[0], n_entities + 1), dim=-1)
    matched = (entity_text @ means0.T).argmax(dim=1)  # E
    regions = torch.cat([stage2[None] == matched[:, None, None], background[None]])
    return MlsaPartition(torch.stack(splits), background, stage2, regions)


def released_partition(
    hires: Tensor, entity_text: Tensor, background_text: Tensor, generator: torch.Generator
) -> MlsaPartition:
    """The released computation, quirks (a)–(d) of the module docstring: stage 1 and stage 2 each cluster all
    shots at once (one ``k × M`` noise draw each, stage 1 first); cluster means are plain means of the unit
    tokens (an empty stage-2 cluster has a NaN mean, which wins every match, as released)."""
    n_entities = entity_text.shape[0]
    texts = torch.cat([entity_text, background_text[None]])
    similarity = hires @ texts.T  # k × M × (E + 1)
    stage1 = dpc_knn(similarity, 2, STAGE1_K, generator, released=True)
    shot0 = stage1[0]
    means = torch.stack([hires[:, shot0 == c].mean(dim=1) for c in (0, 1)], dim=1)  # k × 2 × D, unnormalised
    closer = means @ background_text  # k × 2
    swapped = closer[:, 0] < closer[:, 1]
    foreground = torch.where(swapped[:, None], shot0 == 0, stage1 == 1)
    raw = dpc_knn(similarity, n_entities + 1, STAGE2_K, generator, mask=foreground, released=True)
    stage2 = torch.where(foreground[0], raw, raw[:, :1])
    means0 = torch.stack([hires[0, stage2[0] == c].mean(dim=0) for c in range(n_entities + 1)])
    matched = (F.normalize(texts, dim=-1) @ F.normalize(means0, dim=-1).T).argmax(dim=1)  # E + 1
    return MlsaPartition(stage1, ~foreground, stage2, stage2[None] == matched[:, None, None])


def released_pool(maps: Tensor, factor: int) -> Tensor:
    """``R × k × S × S`` → ``R × k × (S/f)²``: the released pooling, quirk (e) (f² consecutive entries of the
    ``(k·f²) × (S/f)²`` unfolded windows, read row-major, per output cell)."""
    windows = F.unfold(maps, factor, stride=factor)  # R × (k·f²) × (S/f)²
    return windows.view(maps.shape[0], maps.shape[1], -1, factor * factor).mean(-1)


def region_weights(
    hires: Tensor,
    entity_text: Tensor,
    background_text: Tensor,
    factor: int,
    generator: torch.Generator,
    mode: str = "corrected",
) -> Tensor:
    """Re-weighting maps R_e of the shots.

    Args:
        hires: ``k × (f·g)² × D`` unit-norm V-V tokens of the stitched high-resolution tiles of each shot.
        entity_text: ``E × D`` unit-norm normal entity features (initial prompts).
        background_text: ``D`` unit-norm normal background feature.
        factor: tiles per side f (the map is pooled f × f down to the g × g training grid).
        generator: seeds the density tie-break noise.
        mode: ``corrected`` or ``released`` (module docstring).

    Returns:
        ``(E + 1) × k × g²`` maps in [1, 2.5]: 1 plus 1.5 on the boosted tokens, pooled; entities (cluster
        matched on shot 0, each shot's own assignment), then the background.
    """
    partition = (released_partition if mode == "released" else corrected_partition)(
        hires, entity_text, background_text, generator
    )
    side = math.isqrt(hires.shape[1])
    maps = 1.0 + REGION_BOOST * partition.regions.float().view(-1, hires.shape[0], side, side)
    if mode == "released":
        return released_pool(maps, factor)
    pooled = F.avg_pool2d(maps.flatten(0, 1)[:, None], factor, stride=factor)
    return pooled.view(maps.shape[0], hires.shape[0], -1)
