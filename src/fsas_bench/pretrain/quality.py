"""Zero-shot category classification of dataset images by a backbone (a quality gate of the weights)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fsas_bench.backbones import ClipBackbone
from fsas_bench.data.formats.images import read_image_rgb
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.sample import Sample
from fsas_bench.data.synthetic import CATEGORIES


def image_embeddings(backbone: ClipBackbone, samples: Sequence[Sample], batch_size: int = 16) -> Tensor:
    """``N × D`` global image embeddings of the samples (backbone preprocessing, unnormalised)."""
    chunks = []
    for start in range(0, len(samples), batch_size):
        batch = [backbone.preprocess(read_image_rgb(s.image_path)) for s in samples[start : start + batch_size]]
        chunks.append(backbone.encode(torch.stack(batch), ["embedding"])["embedding"].cpu())
    return torch.cat(chunks)


def classify(backbone: ClipBackbone, embeddings: Tensor, nouns: Sequence[str]) -> Tensor:
    """Index into ``nouns`` of the best-matching prompt "a photo of a {noun}" for each of ``N × D`` embeddings."""
    prompts = F.normalize(backbone.encode_text([f"a photo of a {noun}" for noun in nouns]).cpu(), dim=-1)
    return (F.normalize(embeddings, dim=-1) @ prompts.T).argmax(dim=1)


def category_top1(backbone: ClipBackbone, index: DatasetIndex) -> float:
    """Zero-shot top-1 accuracy of category classification of a dataset's test images among its categories
    (prompts "a photo of a {noun}")."""
    nouns = [CATEGORIES[category].noun for category in index.categories]
    correct, total = 0, 0
    for label, category in enumerate(index.categories):
        samples = index.split(category, "test")
        correct += int((classify(backbone, image_embeddings(backbone, samples), nouns) == label).sum())
        total += len(samples)
    return correct / total
