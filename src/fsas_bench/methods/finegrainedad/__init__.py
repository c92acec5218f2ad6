"""FineGrainedAD (multi-level fine-grained prompt alignment) and PromptAD (its ``mfsc_levels=none`` case)."""

from fsas_bench.methods.finegrainedad.config import FineGrainedADConfig, PromptADConfig
from fsas_bench.methods.finegrainedad.lightning_module import FineGrainedAD, PromptAD

__all__ = ["FineGrainedAD", "FineGrainedADConfig", "PromptAD", "PromptADConfig"]
