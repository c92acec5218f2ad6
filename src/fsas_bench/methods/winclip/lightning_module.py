"""WinCLIP / WinCLIP+ as a registered LightningModule (training-free; k = 0 is zero-shot WinCLIP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from fsas_bench.backbones import FeatureCache
from fsas_bench.methods.base import (
    NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, FewShotMethod, Limit, MethodConfig, MethodOutput,
)  # fmt: skip
from fsas_bench.methods.registry import register_method
from fsas_bench.methods.winclip.prompts import TEMPLATES, prompt_ensemble
from fsas_bench.methods.winclip.torch_model import WinCLIPModel

TEXT_AGGREGATIONS = ("mean_raw", "mean_normalised")


@dataclass(frozen=True)
class WinCLIPConfig(MethodConfig):
    """WinCLIP+ settings (recorded in ``method_cfg_hash``).

    Attributes:
        scales: window sides in patches (2×2 and 3×3 as published).
        templates: ``winclip22`` (published) or ``anomalib21`` (anomalib parity).
        text_aggregation: ``mean_raw`` (average raw sentence embeddings, anomalib) or ``mean_normalised``.
        temperature: class-score softmax temperature (CLIP's 0.07).
        output_size: output map side; 0 = the backbone's input size.
        map_sigma: Gaussian smoothing of the output map (0 = none, as anomalib).
        harmonic_eps: added before inverting scores in harmonic means (0 = exact; zeros give 0).
        class_names: ``(category, display name)`` overrides; default: underscores become spaces.
    """

    scales: tuple[int, ...] = (2, 3)
    templates: str = "winclip22"
    text_aggregation: str = "mean_raw"
    temperature: float = 0.07
    output_size: int = 0
    map_sigma: float = 0.0
    harmonic_eps: float = 0.0
    class_names: tuple[tuple[str, str], ...] = ()
    limits: ClassVar[dict[str, Limit]] = {
        "scales": POSITIVE_INT.each(), "temperature": POSITIVE, "output_size": NON_NEGATIVE_INT,
        "map_sigma": NON_NEGATIVE, "harmonic_eps": NON_NEGATIVE,
    }  # fmt: skip


@register_method
class WinCLIP(FewShotMethod):
    """WinCLIP+ (Jeong et al., CVPR 2023): window-level CLIP text scores fused with a reference memory."""

    name = "winclip"
    fit_scope = "none"
    supports_zero_shot = True
    config_cls = WinCLIPConfig

    def __init__(self, config: WinCLIPConfig, cache: FeatureCache) -> None:
        super().__init__(config, cache)
        self.require_choice("templates", tuple(TEMPLATES))
        self.require_choice("text_aggregation", TEXT_AGGREGATIONS)
        backbone = cache.backbone
        self.model = WinCLIPModel(
            backbone.grid, config.scales, config.output_size or backbone.image_size,
            config.temperature, config.map_sigma, config.harmonic_eps,
        )  # fmt: skip
        self.feature_names = ["embedding", "final_tokens", *(f"window{s}" for s in config.scales)]

    def class_name(self, category: str) -> str:
        """The object name used in prompts."""
        return dict(self.config.class_names).get(category, category.replace("_", " "))

    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        normal, anomalous = prompt_ensemble(self.class_name(category), self.config.templates)
        self.model.set_prototypes(*(self._prototype(self.cache.backbone.encode_text(p)) for p in (normal, anomalous)))
        feats = [f for batch in batches for f in self.features(batch, self.feature_names)]
        memory_names = ["final_tokens", *(f"window{s}" for s in self.config.scales)]
        self.model.set_memory({n: torch.cat([f[n] for f in feats]) for n in memory_names} if feats else {})

    def _prototype(self, sentences: torch.Tensor) -> torch.Tensor:
        if self.config.text_aggregation == "mean_raw":
            return sentences.mean(0)
        return F.normalize(F.normalize(sentences, dim=-1).mean(0), dim=-1)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> MethodOutput:
        feats = [{n: f[n].to(self.device) for n in self.feature_names} for f in self.features(batch, self.feature_names)]
        maps, scores = self.model(feats)
        return MethodOutput(anomaly_maps=maps.float().cpu(), image_scores=scores.float().cpu())
