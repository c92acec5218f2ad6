"""FineGrainedAD (multi-level fine-grained prompt alignment); PromptAD (``methods/promptad``) reuses its parts."""

from fsas_bench.methods.finegrainedad.config import FineGrainedADConfig
from fsas_bench.methods.finegrainedad.lightning_module import FineGrainedAD

__all__ = ["FineGrainedAD", "FineGrainedADConfig"]
