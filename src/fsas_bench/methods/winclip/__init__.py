"""WinCLIP / WinCLIP+ (training-free, zero- and few-shot)."""

from fsas_bench.methods.winclip.lightning_module import WinCLIP, WinCLIPConfig
from fsas_bench.methods.winclip.torch_model import WinCLIPModel, WindowAggregator, harmonic_mean

__all__ = ["WinCLIP", "WinCLIPConfig", "WinCLIPModel", "WindowAggregator", "harmonic_mean"]
