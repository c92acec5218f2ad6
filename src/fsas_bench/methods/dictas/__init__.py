"""DictAS: class-generalizable few-shot anomaly segmentation by dictionary lookup (ICCV 2025)."""

from fsas_bench.methods.dictas.config import DictASConfig
from fsas_bench.methods.dictas.lightning_module import DictAS
from fsas_bench.methods.dictas.torch_model import AttnBlock, DictASHead, ReferenceDictionary

__all__ = ["AttnBlock", "DictAS", "DictASConfig", "DictASHead", "ReferenceDictionary"]
