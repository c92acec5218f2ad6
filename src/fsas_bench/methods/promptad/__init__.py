"""PromptAD (prompt learning with one-class semantic concatenation and explicit anomaly margin, CVPR 2024)."""

from fsas_bench.methods.promptad.config import PromptADConfig
from fsas_bench.methods.promptad.lightning_module import PromptAD

__all__ = ["PromptAD", "PromptADConfig"]
