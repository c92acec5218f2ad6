"""The contract every FSAS method implements as a LightningModule.

A method receives the support set (the k normal references of a category) once, then maps query batches
to anomaly maps and image scores. It never computes metrics; the shared layer maps its output maps back
to the evaluation frame and scores them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
from torch import Tensor

from fsas_bench.backbones import BackboneFeatures, FeatureCache
from fsas_bench.data.formats import read_image_rgb
from fsas_bench.hashing import sha256_json

FitScope = Literal["none", "per_category", "auxiliary"]


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method config; ``mode`` is ``benchmark`` (leaderboard default) or ``faithful``."""

    mode: str = "benchmark"

    def to_dict(self) -> dict[str, Any]:
        """The full config as plain JSON-able values."""
        return asdict(self)

    def sha256(self) -> str:
        """``method_cfg_hash``: SHA-256 of the canonical JSON of the config."""
        return sha256_json(self.to_dict())


@dataclass
class MethodOutput:
    """What a method returns for a query batch.

    Attributes:
        anomaly_maps: ``B × H × W`` float32 maps at the method's output size (higher = more anomalous).
        image_scores: ``B`` float image scores.
    """

    anomaly_maps: Tensor
    image_scores: Tensor


class FewShotMethod(L.LightningModule, ABC):
    """Base LightningModule of a registered FSAS method.

    Subclasses set ``name``, ``fit_scope`` and ``config_cls``, and implement :meth:`set_support` and
    :meth:`predict_step`. Features come from the shared encode-once cache.

    Args:
        config: the method's config dataclass.
        cache: the run's feature cache (wraps the frozen backbone).
    """

    name: ClassVar[str]
    fit_scope: ClassVar[FitScope] = "none"
    supports_zero_shot: ClassVar[bool] = False
    transductive: ClassVar[bool] = False
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig

    feature_names: list[str]
    """Backbone features the method reads (``block{i}``, ``embedding``, ...), set by each subclass."""

    def __init__(self, config: MethodConfig, cache: FeatureCache) -> None:
        super().__init__()
        self.config = config
        self.cache = cache

    def features(self, batch: dict[str, Any], names: Sequence[str]) -> list[BackboneFeatures]:
        """Named backbone features (``block{i}``, ``embedding``, ...) of each image of a datamodule batch
        (``path`` and ``sha`` lists); images are decoded only when their features are not cached."""
        preprocess = self.cache.backbone.preprocess
        return self.cache.features(batch["sha"], names, lambda i: preprocess(read_image_rgb(Path(batch["path"][i]))))

    @abstractmethod
    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        """Build the per-category state (memory, text prototypes, fitted prompts, ...) from the k references
        (``batches`` is empty for zero-shot)."""

    @abstractmethod
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> MethodOutput:
        """Anomaly maps and image scores of a query batch."""
