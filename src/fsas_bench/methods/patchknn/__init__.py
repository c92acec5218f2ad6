"""Patch-kNN baseline (CLIP flavour)."""

from fsas_bench.methods.patchknn.lightning_module import PatchKNN, PatchKNNConfig
from fsas_bench.methods.patchknn.torch_model import PatchKNNModel

__all__ = ["PatchKNN", "PatchKNNConfig", "PatchKNNModel"]
