"""fsas-bench: a reproducible benchmark suite for few-shot anomaly segmentation."""

__version__ = "0.1.0"
