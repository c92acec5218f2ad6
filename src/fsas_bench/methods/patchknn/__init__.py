"""Patch-kNN baseline (CLIP flavour)."""

from fsas_bench.methods.patchknn.config import PatchKNNConfig
from fsas_bench.methods.patchknn.lightning_module import PatchKNN
from fsas_bench.methods.patchknn.torch_model import PatchKNNModel

__all__ = ["PatchKNN", "PatchKNNConfig", "PatchKNNModel"]
