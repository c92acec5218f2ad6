"""MLSA region aggregation (spec §6): parameter-free DPC-KNN on text-similarity vectors of the high-resolution
tiled shots, entity-to-cluster matching on shot 0, per-entity re-weighting maps R_e."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

REGION_BOOST = 1.5
STAGE1_K, STAGE2_K = 8, 5
DENSITY_NOISE = 1e-6


def effective_k(k: int, n_clusters: int) -> int:
    """The official wrapper's cap: k > clusters → min(3, max(⌊clusters/2⌋, 1))."""
    return min(3, max(n_clusters // 2, 1)) if k > n_clusters else k


def dpc_knn(x: Tensor, n_clusters: int, k: int, generator: torch.Generator, mask: Tensor | None = None) -> Tensor:
    """Density-peaks clustering with k-NN density of ``N × C`` points; ``N`` labels (−1 outside ``mask``).

    Density = exp(−mean squared distance to the k nearest points, self included) + U(0, 1e-6) noise (seeded
    tie break); centres maximise density × distance to the nearest denser point; points join the nearest
    centre. Distances are Euclidean / √C. Masked-out points get zero density and maximal distance.
    """
    dist = torch.cdist(x, x) / math.sqrt(x.shape[1])
    if mask is not None:
        dist = torch.where(mask[None, :] & mask[:, None], dist, dist.max() + 1)
    nearest = dist.topk(effective_k(k, n_clusters), dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(-1)) + torch.rand(x.shape[0], generator=generator) * DENSITY_NOISE
    if mask is not None:
        density = density * mask
    denser = density[None, :] > density[:, None]
    delta = torch.where(denser, dist, dist.max()).amin(dim=-1)
    centres = (delta * density).topk(n_clusters).indices
    labels = dist[centres].argmin(dim=0)
    labels[centres] = torch.arange(n_clusters)
    if mask is not None:
        labels = torch.where(mask, labels, torch.full_like(labels, -1))
    return labels


def cluster_means(tokens: Tensor, labels: Tensor, n_clusters: int) -> Tensor:
    """``n_clusters × D`` mean token per cluster (zero for an empty cluster)."""
    one_hot = F.one_hot(labels.clamp(min=0), n_clusters).float() * (labels >= 0)[:, None]
    return (one_hot.T @ tokens) / one_hot.sum(0).clamp(min=1)[:, None]


def region_weights(
    hires: Tensor, entity_text: Tensor, background_text: Tensor, factor: int, generator: torch.Generator
) -> Tensor:
    """Re-weighting maps R_e of the shots.

    Args:
        hires: ``k × (f·g)² × D`` unit-norm V-V tokens of the stitched high-resolution tiles of each shot.
        entity_text: ``E × D`` unit-norm normal entity features (initial prompts).
        background_text: ``D`` unit-norm normal background feature.
        factor: tiles per side f (the map is average-pooled f × f down to the g × g training grid).
        generator: seeds the density tie-break noise.

    Returns:
        ``(E + 1) × k × g²`` maps in [1, 2.5]: entities (cluster matched on shot 0, each shot's own
        assignment), then the background (each shot's stage-1 background cluster).
    """
    n_entities = entity_text.shape[0]
    similarity = hires @ torch.cat([entity_text, background_text[None]]).T  # k × M × (E + 1)
    entity_labels, background_masks = [], []
    for shot in range(hires.shape[0]):
        split = dpc_knn(similarity[shot], 2, STAGE1_K, generator)
        means = F.normalize(cluster_means(hires[shot], split, 2), dim=-1)
        background = split == int((means @ background_text).argmax())
        entity_labels.append(dpc_knn(similarity[shot], n_entities + 1, STAGE2_K, generator, mask=~background))
        background_masks.append(background)
    means0 = F.normalize(cluster_means(hires[0], entity_labels[0], n_entities + 1), dim=-1)
    matched = (entity_text @ means0.T).argmax(dim=1)  # E
    regions = torch.stack(entity_labels)[None] == matched[:, None, None]  # E × k × M
    regions = torch.cat([regions, torch.stack(background_masks)[None]])
    side = math.isqrt(hires.shape[1])
    maps = 1.0 + REGION_BOOST * regions.float().view(-1, 1, side, side)
    pooled = F.avg_pool2d(maps, factor, stride=factor)
    return pooled.view(n_entities + 1, hires.shape[0], -1)
