"""Encode-once cache: each image's frozen-backbone features are computed once and reused.

Entries are keyed by the backbone identity (architecture, weights, preprocessing) and the SHA-256 of the
image file, so they are shared across shots, seeds and methods of a run. Images are always encoded one
at a time, which makes features independent of how queries are batched.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor

from fsas_bench.backbones.clip import BackboneFeatures, ClipBackbone


@dataclass
class CacheStats:
    """Counters of one cache: image requests served from memory/disk, missed, and backbone forwards run."""

    hits: int = 0
    misses: int = 0
    forwards: int = 0


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
        self._memory: dict[str, BackboneFeatures] = {}

    def features(self, images: Tensor, image_shas: Sequence[str], blocks: Sequence[int]) -> list[BackboneFeatures]:
        """Features of each image of the batch ``images`` ``B × 3 × S × S``, identified by file SHA-256."""
        wanted = set(blocks)
        result = []
        for image, sha in zip(images, image_shas, strict=True):
            key = self._key(sha)
            entry = self._memory.get(key) or self._load(key)
            if entry is not None and wanted <= entry.tokens.keys():
                self.stats.hits += 1
            else:
                self.stats.misses += 1
                entry = self._encode(image, wanted, entry)
                self._store(key, entry)
            self._memory[key] = entry
            result.append(entry)
        return result

    def clear_memory(self) -> None:
        """Drop in-memory entries (e.g. when a run moves to the next category); disk entries stay."""
        self._memory.clear()

    def _key(self, image_sha: str) -> str:
        return hashlib.sha256(f"{self.backbone.identity}|{image_sha}".encode()).hexdigest()

    def _encode(self, image: Tensor, blocks: set[int], previous: BackboneFeatures | None) -> BackboneFeatures:
        self.stats.forwards += 1
        tokens, embedding = self.backbone.encode_images(image.unsqueeze(0), sorted(blocks))
        merged = dict(previous.tokens) if previous else {}
        merged.update({b: t[0].cpu() for b, t in tokens.items()})
        return BackboneFeatures(tokens=merged, embedding=embedding[0].cpu())

    def _load(self, key: str) -> BackboneFeatures | None:
        if self.disk_dir is None or not (path := self.disk_dir / f"{key}.safetensors").is_file():
            return None
        tensors = load_file(path)
        embedding = tensors.pop("embedding")
        return BackboneFeatures(tokens={int(k.removeprefix("block_")): v for k, v in tensors.items()}, embedding=embedding)

    def _store(self, key: str, entry: BackboneFeatures) -> None:
        if self.disk_dir is None:
            return
        self.disk_dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"block_{b}": t.contiguous() for b, t in entry.tokens.items()}
        tensors["embedding"] = entry.embedding.contiguous()
        fd, tmp = tempfile.mkstemp(dir=self.disk_dir, suffix=".tmp")
        os.close(fd)
        save_file(tensors, tmp)
        os.replace(tmp, self.disk_dir / f"{key}.safetensors")
