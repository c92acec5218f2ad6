"""WinCLIP / WinCLIP+ (training-free, zero- and few-shot)."""

from fsas_bench.methods.winclip.config import WinCLIPConfig
from fsas_bench.methods.winclip.lightning_module import WinCLIP
from fsas_bench.methods.winclip.torch_model import WinCLIPModel, WindowAggregator

__all__ = ["WinCLIP", "WinCLIPConfig", "WinCLIPModel", "WindowAggregator"]
