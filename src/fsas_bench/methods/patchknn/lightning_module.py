"""Patch-kNN as a registered LightningModule (training-free, ``fit_scope = none``)."""

from __future__ import annotations

from typing import Any

import torch

from fsas_bench.backbones import FeatureCache
from fsas_bench.methods.base import FewShotMethod, MethodOutput
from fsas_bench.methods.patchknn.config import PatchKNNConfig
from fsas_bench.methods.patchknn.torch_model import PatchKNNModel
from fsas_bench.methods.registry import register_method


@register_method
class PatchKNN(FewShotMethod):
    """CLIP patch-kNN: the visual-memory branch of PromptAD/FineGrainedAD as a standalone baseline."""

    name = "patchknn"
    fit_scope = "none"
    config_cls = PatchKNNConfig

    def __init__(self, config: PatchKNNConfig, cache: FeatureCache) -> None:
        super().__init__(config, cache)
        self.model = PatchKNNModel(config.taps(cache.backbone.depth), config.output_size, config.sigma, config.image_score)

    @classmethod
    def feature_names(cls, config: PatchKNNConfig, depth: int) -> list[str]:
        return [f"block{b}" for b in config.taps(depth)]

    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        feats = self.support_features(batches, self.names)
        self.model.set_memory({b: torch.cat([f[f"block{b}"] for f in feats]) for b in self.model.blocks})

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> MethodOutput:
        feats = self.features(batch, self.names)
        maps, scores = self.model([{b: f[f"block{b}"].to(self.device) for b in self.model.blocks} for f in feats])
        return MethodOutput(anomaly_maps=maps.float().cpu(), image_scores=scores.float().cpu())
