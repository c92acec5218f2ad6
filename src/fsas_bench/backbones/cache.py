"""Encode-once cache: each image's frozen-backbone features are computed once and reused.

Entries are keyed by the backbone identity (architecture, weights, preprocessing variant) and the SHA-256 of
the image file, so they are shared across shots, seeds and methods of a run; features of different
preprocessing variants never mix. Images are decoded only on a miss
and always encoded one at a time, which makes features independent of how queries are batched.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from fsas_bench.backbones.clip import DEFAULT_PREPROCESS, BackboneFeatures, ClipBackbone, Preprocess
from fsas_bench.files import atomic_write


@dataclass
class CacheStats:
    """Counters of one cache: image requests served from memory/disk, missed, backbone forwards run, and the
    seconds spent in them."""

    hits: int = 0
    misses: int = 0
    forwards: int = 0
    encode_seconds: float = 0.0


class FeatureCache:
    """Memory (and optional on-disk safetensors) cache of per-image backbone features.

    Args:
        backbone: the frozen backbone that produces the features.
        disk_dir: optional directory persisting entries across runs.
    """

    def __init__(self, backbone: ClipBackbone, disk_dir: Path | None = None) -> None:
        self.backbone = backbone
        self.disk_dir = disk_dir
        self.stats = CacheStats()
        self.prefetch: set[str] = set()
        """Features encoded together with any miss: the union every method of a sweep reads, so that each
        image goes through the backbone once per run however many methods use it."""
        self._memory: dict[str, BackboneFeatures] = {}

    def features(
        self,
        image_shas: Sequence[str],
        names: Sequence[str],
        load: Callable[[int], Tensor],
        prefetch: bool = True,
        variant: Preprocess = DEFAULT_PREPROCESS,
    ) -> list[BackboneFeatures]:
        """Named features (see :meth:`ClipBackbone.encode`) of each image.

        Args:
            image_shas: SHA-256 of each image file (the cache key, with the backbone identity).
            names: the features wanted.
            load: ``i`` → image i preprocessed with ``variant`` (``3 × S × S``); called only on a miss (images
                whose features are cached are never decoded).
            prefetch: also encode the sweep's other methods' features on a miss (off for images only one
                method reads, e.g. auxiliary training images; only the default variant prefetches).
            variant: the preprocessing ``load`` applies (part of the cache key).

        Each image is encoded alone, once per missing feature set.
        """
        wanted = set(names)
        prefetch = prefetch and variant.is_default
        identity = self.backbone.variant_identity(variant)
        result = []
        for i, sha in enumerate(image_shas):
            key = self._key(identity, sha)
            entry = self._memory.get(key) or self._load(key) or {}
            if wanted - entry.keys():
                self.stats.misses += 1
                self.stats.forwards += 1
                missing = (wanted | (self.prefetch if prefetch else set())) - entry.keys()
                start = time.perf_counter()
                encoded = self.backbone.encode(load(i).unsqueeze(0), sorted(missing))
                self.stats.encode_seconds += time.perf_counter() - start
                entry = {**entry, **{n: t[0].cpu() for n, t in encoded.items()}}
                self._store(key, entry)
            else:
                self.stats.hits += 1
            self._memory[key] = entry
            result.append(entry)
        return result

    def clear_memory(self) -> None:
        """Drop in-memory entries (e.g. when a run moves to the next category); disk entries stay."""
        self._memory.clear()

    @staticmethod
    def _key(identity: str, image_sha: str) -> str:
        return hashlib.sha256(f"{identity}|{image_sha}".encode()).hexdigest()

    def _load(self, key: str) -> BackboneFeatures | None:
        """The disk entry of ``key``; None (a miss) when absent, unreadable, or stored under another key."""
        if self.disk_dir is None or not (path := self.disk_dir / f"{key}.safetensors").is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                if (handle.metadata() or {}).get("key") != key:
                    return None
                return {name: handle.get_tensor(name) for name in handle.keys()}
        except (OSError, SafetensorError, ValueError, RuntimeError):
            return None

    def _store(self, key: str, entry: BackboneFeatures) -> None:
        if self.disk_dir is None:
            return
        tensors = {name: t.contiguous() for name, t in entry.items()}
        path = self.disk_dir / f"{key}.safetensors"
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"key": key}), "feature cache entry")
