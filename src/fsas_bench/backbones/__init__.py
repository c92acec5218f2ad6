"""Frozen open_clip backbones, the shipped tiny config, and the encode-once feature cache."""

from fsas_bench.backbones.cache import CacheStats, FeatureCache, default_memory_budget
from fsas_bench.backbones.clip import DEFAULT_PREPROCESS, BackboneFeatures, ClipBackbone, Preprocess, load_backbone
from fsas_bench.backbones.registry import TINY_ARCH, list_backbones

__all__ = [
    "DEFAULT_PREPROCESS",
    "TINY_ARCH",
    "BackboneFeatures",
    "CacheStats",
    "ClipBackbone",
    "FeatureCache",
    "Preprocess",
    "default_memory_budget",
    "list_backbones",
    "load_backbone",
]
