"""InCTRL (Zhu & Pang, CVPR 2024) on precomputed frozen CLIP features (specs/inctrl.md §3, §4, §8).

Only the adapter ψ and the two heads η, φ are trainable. Module and attribute names follow the released
state dict (``adapter.fc.*``, ``diff_head_ref.*``, ``diff_head.*``), so official weights load with the same
meaning. Every per-sample quantity is computed per sample: the official forward mixes queries and prompts
across the batch (spec §7); here results never depend on the batch composition (BatchNorm in train mode is
the only cross-sample interaction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsas_bench.methods.ops import min_cosine_distance, upsample_and_blur
from fsas_bench.methods.text import CLIP_LOGIT_SCALE, anomaly_probability

LOSSES = ("official", "bce_prob")
PIXEL_MAPS = ("Mx", "holistic")
HEAD_DTYPES = {"float64": torch.float64, "float32": torch.float32}
"""Dtypes of the trainable part (ψ, η, φ and their inputs); M, s_p and the text prior stay in the features' dtype."""


class Adapter(nn.Module):
    """ψ: Linear(D, D/4, no bias) → ReLU → Linear(D/4, D, no bias) → ReLU; ``... × D`` → ``... × D``."""

    def __init__(self, dim: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = dim // reduction
        self.fc = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False), nn.ReLU()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class ResidualHead(nn.Module):
    """η / φ: Linear(d, 128) → ReLU → BN → Linear(128, 64) → ReLU → BN → Linear(64, 1) → sigmoid.

    ``bn1`` (BatchNorm over the input) is defined but never applied, as released (state-dict compatibility).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.projection1 = nn.Linear(dim, 128)
        self.projection2 = nn.Linear(128, 64)
        self.projection3 = nn.Linear(64, 1)
        self.bn1 = nn.BatchNorm1d(dim)
        self.bn2 = nn.BatchNorm1d(128)
        self.bn3 = nn.BatchNorm1d(64)

    def forward(self, x: Tensor) -> Tensor:
        """``B × d`` → ``B`` probabilities."""
        x = self.bn2(F.relu(self.projection1(x)))
        x = self.bn3(F.relu(self.projection2(x)))
        return torch.sigmoid(self.projection3(x)).squeeze(-1)


@dataclass
class InCTRLInputs:
    """Frozen features of B queries and their prompts. Prompt tensors lead with B (each query its own
    prompts, training) or 1 (one prompt set shared by every query, evaluation; broadcast, never copied).

    Attributes:
        query_tokens: ``B × L × N × C`` patch tokens of the L tapped blocks.
        prompt_tokens: ``B|1 × L × (K·N) × C`` patch tokens of the K prompts, pooled per block.
        query_embedding: ``B × D`` CLIP image embeddings f(x) (unnormalised).
        prompt_embeddings: ``B|1 × K × D`` prompt embeddings f(x'_k).
        text_prototypes: ``B|1 × 2 × D`` unit text prototypes (t_n, t_a) of the query's category.
    """

    query_tokens: Tensor
    prompt_tokens: Tensor
    query_embedding: Tensor
    prompt_embeddings: Tensor
    text_prototypes: Tensor


@dataclass
class InCTRLOutput:
    """Per-query results (all ``B``, maps ``B × N``)."""

    score: Tensor  # s = (s_h + s_p) / 2
    image_residual: Tensor  # s_i = η(I_P − I_x)
    holistic: Tensor  # s_h = φ(M⁺)
    patch_score: Tensor  # s_p = max M
    text_score: Tensor  # s_a
    residual_map: Tensor  # M
    holistic_map: Tensor  # M⁺ = M + s_i + s_a


def patch_residual(query: Tensor, prompts: Tensor) -> Tensor:
    """M: ``B × L × N × C`` query tokens and ``B|1 × L × (K·N) × C`` prompt tokens → ``B × N``, the mean over
    blocks of each patch's minimum 0.5·(1 − cos) to all prompt patches of that block.

    One batched :func:`~fsas_bench.methods.ops.min_cosine_distance` over (query, block) pairs: each query meets
    only its own prompts (no batch mixing).
    """
    return min_cosine_distance(query, prompts).mean(dim=1)


def text_score(embedding: Tensor, prototypes: Tensor) -> Tensor:
    """s_a = softmax(100 · cos(f, [t_n, t_a]))[anomalous] for ``B × D`` embeddings and ``B|1 × 2 × D`` unit
    prototypes."""
    cos = (prototypes @ F.normalize(embedding, dim=-1)[:, :, None]).squeeze(-1)  # B × 2
    return anomaly_probability(cos, CLIP_LOGIT_SCALE)


class InCTRLModel(nn.Module):
    """Adapter ψ, image-residual head η and holistic head φ, plus InCTRL's fixed scoring and the pixel map.

    Args:
        embed_dim: CLIP joint-embedding size D (640 for ViT-B-16-plus-240).
        grid: the backbone's patch grid; φ's input size is its patch count (225 for a 15×15 grid).
        output_size: side of the output map (the backbone's input frame).
        sigma: Gaussian smoothing σ of the map in output pixels (0 = none).
        pixel_map: ``Mx`` (M upsampled) or ``holistic`` (M⁺ upsampled; an extension).
    """

    def __init__(self, embed_dim: int, grid: tuple[int, int], output_size: int, sigma: float, pixel_map: str) -> None:
        super().__init__()
        if pixel_map not in PIXEL_MAPS:
            raise ValueError(f"pixel_map must be one of {PIXEL_MAPS}, not '{pixel_map}'")
        self.adapter = Adapter(embed_dim)
        self.diff_head_ref = ResidualHead(embed_dim)
        self.diff_head = ResidualHead(grid[0] * grid[1])
        self.grid = grid
        self.output_size = output_size
        self.sigma = sigma
        self.pixel_map = pixel_map

    def forward(self, x: InCTRLInputs) -> InCTRLOutput:
        """Scores in the dtype of the trainable parameters (the frozen-feature quantities M, s_p, s_a are
        computed in the features' dtype and then cast)."""
        dtype = self.diff_head.projection1.weight.dtype
        residual_map = patch_residual(x.query_tokens, x.prompt_tokens)
        patch_score = residual_map.amax(dim=1).to(dtype)
        prototype = self.adapter(x.prompt_embeddings.to(dtype)).mean(dim=1)  # I_P; K = 1 gives the single prompt
        image_residual = self.diff_head_ref(prototype - self.adapter(x.query_embedding.to(dtype)))  # I_P − I_x
        prior = text_score(x.query_embedding, x.text_prototypes).to(dtype)
        holistic_map = residual_map.to(dtype) + image_residual[:, None] + prior[:, None]
        holistic = self.diff_head(holistic_map)
        return InCTRLOutput(
            score=(holistic + patch_score) / 2, image_residual=image_residual, holistic=holistic,
            patch_score=patch_score, text_score=prior, residual_map=residual_map, holistic_map=holistic_map,
        )  # fmt: skip

    def anomaly_maps(self, out: InCTRLOutput) -> Tensor:
        """``B × S × S`` maps: M (or M⁺) on the patch grid, upsampled bilinearly to the input frame and smoothed;
        no per-image normalisation."""
        grids = out.residual_map if self.pixel_map == "Mx" else out.holistic_map
        return upsample_and_blur(grids.view(-1, *self.grid), self.output_size, self.sigma)


def focal_on_probabilities(probabilities: Tensor, labels: Tensor, gamma: float = 2.0) -> Tensor:
    """The released BinaryFocalLoss(alpha=1, gamma=2, logits=True) applied to probabilities, as trained:
    mean of (1 − e^{−b})^γ · b with b = BCE-with-logits(p, y)."""
    bce = F.binary_cross_entropy_with_logits(probabilities, labels, reduction="none")
    return ((1 - torch.exp(-bce)) ** gamma * bce).mean()


def inctrl_loss(out: InCTRLOutput, labels: Tensor, kind: str = "official") -> Tensor:
    """L = ℓ(s, y) + ℓ(s_i, y): ``official`` = focal-with-logits on probabilities; ``bce_prob`` = BCE on
    probabilities (an ablation). ``labels`` are cast to the scores' dtype."""
    labels = labels.to(out.score.dtype)
    if kind == "official":
        return focal_on_probabilities(out.score, labels) + focal_on_probabilities(out.image_residual, labels)
    if kind == "bce_prob":
        return F.binary_cross_entropy(out.score, labels) + F.binary_cross_entropy(out.image_residual, labels)
    raise ValueError(f"loss must be one of {LOSSES}, not '{kind}'")
