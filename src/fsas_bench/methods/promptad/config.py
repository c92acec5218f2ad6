"""PromptAD settings: FineGrainedAD's with ``mfsc_levels=none``, its released triplet margin and faithful preset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fsas_bench.methods.finegrainedad.config import RELEASED_PIPELINE, FineGrainedADConfig


@dataclass(frozen=True)
class PromptADConfig(FineGrainedADConfig):
    """PromptAD = FineGrainedAD with ``mfsc_levels=none`` (spec §11): the caption is the class name (the
    caption record's foreground noun, fsas-bench's class-name mapping). Its released triplet margin is 0."""

    mfsc_levels: str = "none"
    triplet_margin: float = 0.0
    faithful_changes: ClassVar[dict[str, object]] = {
        "seed": 111, "precision": "16-mixed", **RELEASED_PIPELINE, "image_score": "cls_prompts",
    }  # fmt: skip
    """PromptAD's released settings: seed 111, fp16 (GPU only), the released taps and input pipeline, and image
    scores from the separately trained CLS prompts (``train_cls.py`` / ``test_cls.py``); its prompts carry no
    attributes (no top-k)."""
