"""WinCLIP / WinCLIP+ as a registered LightningModule (training-free; k = 0 is zero-shot WinCLIP)."""

from __future__ import annotations

from typing import Any

import torch

from fsas_bench.backbones import FeatureCache
from fsas_bench.methods.base import FewShotMethod, MethodOutput
from fsas_bench.methods.registry import register_method
from fsas_bench.methods.text import (
    ANOMALOUS_STATES, NORMAL_STATES, WINCLIP_TEMPLATES, class_name, sentences, text_prototypes,
)  # fmt: skip
from fsas_bench.methods.winclip.config import WinCLIPConfig
from fsas_bench.methods.winclip.torch_model import WinCLIPModel


@register_method
class WinCLIP(FewShotMethod):
    """WinCLIP+ (Jeong et al., CVPR 2023): window-level CLIP text scores fused with a reference memory."""

    name = "winclip"
    fit_scope = "none"
    supports_zero_shot = True
    config_cls = WinCLIPConfig

    def __init__(self, config: WinCLIPConfig, cache: FeatureCache) -> None:
        super().__init__(config, cache)
        backbone = cache.backbone
        self.model = WinCLIPModel(
            backbone.grid, config.scales, config.output_size or backbone.image_size,
            config.temperature, config.map_sigma, config.harmonic_eps,
        )  # fmt: skip

    @classmethod
    def feature_names(cls, config: WinCLIPConfig, depth: int) -> list[str]:
        return ["embedding", "final_tokens", *(f"window{s}" for s in config.scales)]

    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        config = self.config
        name, templates = class_name(category, config.class_names), WINCLIP_TEMPLATES[config.templates]
        normal, anomalous = (self.cache.backbone.encode_text(sentences(name, states, templates))
                             for states in (NORMAL_STATES, ANOMALOUS_STATES))  # fmt: skip
        self.model.prototypes = text_prototypes(normal, anomalous, config.text_aggregation == "mean_normalised")
        feats = self.support_features(batches, self.names)
        memory_names = ["final_tokens", *(f"window{s}" for s in config.scales)]
        self.model.set_memory({n: torch.cat([f[n] for f in feats]) for n in memory_names} if feats else {})

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> MethodOutput:
        feats = [{n: f[n].to(self.device) for n in self.names} for f in self.features(batch, self.names)]
        maps, scores = self.model(feats)
        return MethodOutput(anomaly_maps=maps.float().cpu(), image_scores=scores.float().cpu())
