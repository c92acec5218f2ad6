"""PromptAD as a registered LightningModule: FineGrainedAD's module run with PromptAD's config (class-name
prompts; ``image_score=cls_prompts`` trains its separate image-score prompts, as released)."""

from __future__ import annotations

from fsas_bench.methods.finegrainedad.lightning_module import FineGrainedAD
from fsas_bench.methods.promptad.config import PromptADConfig
from fsas_bench.methods.registry import register_method


@register_method
class PromptAD(FineGrainedAD):
    """PromptAD (Li et al., CVPR 2024): the FineGrainedAD module with ``mfsc_levels=none`` (class-name prompts)."""

    name = "promptad"
    config_cls = PromptADConfig
