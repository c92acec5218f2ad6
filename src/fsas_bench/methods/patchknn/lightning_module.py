"""Patch-kNN as a registered LightningModule (training-free, ``fit_scope = none``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from fsas_bench.backbones import FeatureCache
from fsas_bench.errors import UserError
from fsas_bench.methods.base import (
    NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, FewShotMethod, Limit, MethodConfig, MethodOutput,
)  # fmt: skip
from fsas_bench.methods.patchknn.torch_model import PatchKNNModel
from fsas_bench.methods.registry import register_method

@dataclass(frozen=True)
class PatchKNNConfig(MethodConfig):
    """Patch-kNN settings (recorded in ``method_cfg_hash``).

    Attributes:
        blocks: 0-based block taps; empty = blocks at 1/4 and 2/3 of the depth ((2, 7) for a 12-block ViT,
            PromptAD's memory taps).
        output_size: side of the output map in pixels.
        sigma: Gaussian σ at the output size.
        image_score: ``map_max`` or ``grid_max``.
    """

    blocks: tuple[int, ...] = ()
    output_size: int = 400
    sigma: float = 4.0
    image_score: str = "map_max"
    limits: ClassVar[dict[str, Limit]] = {
        "blocks": NON_NEGATIVE_INT.each(), "output_size": POSITIVE_INT, "sigma": NON_NEGATIVE,
    }  # fmt: skip


@register_method
class PatchKNN(FewShotMethod):
    """CLIP patch-kNN: the visual-memory branch of PromptAD/FineGrainedAD as a standalone baseline."""

    name = "patchknn"
    fit_scope = "none"
    config_cls = PatchKNNConfig

    def __init__(self, config: PatchKNNConfig, cache: FeatureCache) -> None:
        super().__init__(config, cache)
        self.require_choice("image_score", ("map_max", "grid_max"))
        blocks = config.blocks or _proportional_blocks(cache.backbone.depth)
        self.model = PatchKNNModel(tuple(blocks), config.output_size, config.sigma, config.image_score)
        self.feature_names = [f"block{b}" for b in self.model.blocks]

    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        feats = [f for batch in batches for f in self.features(batch, self.feature_names)]
        if not feats:
            raise UserError("patchknn needs at least one reference image: use --shots 1 or more")
        self.model.set_memory({b: torch.cat([f[f"block{b}"] for f in feats]) for b in self.model.blocks})

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> MethodOutput:
        feats = self.features(batch, self.feature_names)
        maps, scores = self.model([{b: f[f"block{b}"].to(self.device) for b in self.model.blocks} for f in feats])
        return MethodOutput(anomaly_maps=maps.float().cpu(), image_scores=scores.float().cpu())


def _proportional_blocks(depth: int) -> tuple[int, int]:
    """Taps at 1/4 and 2/3 of the depth, the proportions of PromptAD's (2, 7) in a 12-block ViT."""
    return (max(round(depth / 4) - 1, 0), max(round(depth * 2 / 3) - 1, 0))
