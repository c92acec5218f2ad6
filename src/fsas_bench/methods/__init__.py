"""FSAS methods: one sub-package per method (pure torch model + LightningModule), one registry."""

from fsas_bench.methods import dictas, finegrainedad, inctrl, patchknn, winclip  # noqa: F401  (registers the methods)
from fsas_bench.methods.base import FewShotMethod, MethodConfig, MethodOutput
from fsas_bench.methods.registry import get_method, list_methods, register_method

__all__ = ["FewShotMethod", "MethodConfig", "MethodOutput", "get_method", "list_methods", "register_method"]
