"""Encode-once cache: each image's frozen-backbone features are computed once and reused.

Entries are keyed by the backbone identity (architecture, weights, preprocessing variant) and the SHA-256 of
the image file, so they are shared across shots, seeds and methods of a run; features of different
preprocessing variants never mix. A unit of work fills the cache ahead (:meth:`FeatureCache.encode_ahead`:
decode workers, fixed-size encode batches, see :mod:`fsas_bench.backbones.pipeline`); what it did not foresee
is decoded on a miss and encoded alone. Either way features are independent of how images are batched.

The in-memory entries are a least-recently-used set of at most ``memory_budget`` bytes (the runner's default:
a quarter of the machine's memory): entries pushed out live on disk (the ``--feature-cache`` folder, where every
entry is written anyway, else a spill folder of the cache's own written only on eviction and emptied with the
memory) and
are read back when asked for again, so auxiliary training streams its features from disk instead of holding
them all.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from fsas_bench.backbones.clip import DEFAULT_PREPROCESS, BackboneFeatures, ClipBackbone, Preprocess
from fsas_bench.backbones.pipeline import EncodeSettings, ImageReader, encode_images
from fsas_bench.files import atomic_write

_T = TypeVar("_T")
CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
"""cgroup v2 and v1 memory limits of this process's group."""


@dataclass
class CacheStats:
    """Counters of one cache: image requests served from memory/disk, missed, images encoded by the backbone,
    the seconds spent encoding, entries pushed out of memory by the budget, and the most bytes held in memory."""

    hits: int = 0
    misses: int = 0
    forwards: int = 0
    encode_seconds: float = 0.0
    evictions: int = 0
    peak_memory_bytes: int = 0


class FeatureCache:
    """Memory (and optional on-disk safetensors) cache of per-image backbone features.

    Args:
        backbone: the frozen backbone that produces the features.
        disk_dir: optional directory persisting entries across runs.
        memory_budget: most bytes of features held in memory (None: no bound); the least recently used entries
            beyond it are dropped from memory (they are in ``disk_dir``) or, without one, spilled to a folder of
            the cache's own.
        settings: how :meth:`encode_ahead` decodes and batches images (never changes a feature).
        spill_root: where that spill folder is made (a unique name, at the first eviction; emptied by
            :meth:`clear_memory`, removed with the cache); None: the system's temporary folder.
    """

    def __init__(self, backbone: ClipBackbone, disk_dir: Path | None = None, memory_budget: int | None = None,
                 settings: EncodeSettings = EncodeSettings(), spill_root: Path | None = None) -> None:  # fmt: skip
        self.backbone = backbone
        self.settings = settings
        self.disk_dir = disk_dir
        self.spill_root = spill_root
        self.companions: list[FeatureCache] = []
        """Caches over backbones derived from this one (DictAS's activation swap), emptied with it."""
        self._spilled: Path | None = None  # the spill folder once made
        self.memory_budget = memory_budget
        self.stats = CacheStats()
        self.prefetch: set[str] = set()
        """Features encoded together with any miss of the default variant: the union every method of a sweep
        reads in it, so that each image goes through the backbone once per run however many methods use it."""
        self._memory: OrderedDict[str, BackboneFeatures] = OrderedDict()
        self._memory_bytes = 0

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
            self._remember(key, entry)
            result.append(entry)
        return result

    def encode_ahead(
        self,
        image_shas: Sequence[str],
        paths: Sequence[Path],
        reader: ImageReader,
        names: Sequence[str] | None = None,
        variant: Preprocess = DEFAULT_PREPROCESS,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> int:
        """Encode ``names`` of every listed image not cached yet through the pipeline (:attr:`settings`: decode
        workers, fixed-size batches), so that a unit's later :meth:`features` calls all hit.

        Args:
            image_shas / paths: SHA-256 and file of each image (duplicates by SHA are encoded once).
            reader: path → RGB uint8 array.
            names: the features to encode (None: the :attr:`prefetch` set).
            variant: the preprocessing of the features.
            on_progress: called with (images encoded, images to encode) after each image.

        Returns:
            how many images were encoded.
        """
        names = sorted(self.prefetch if names is None else names)
        identity = self.backbone.variant_identity(variant)
        todo: dict[str, tuple[Path, BackboneFeatures]] = {}
        for sha, path in zip(image_shas, paths, strict=True):
            key = self._key(identity, sha)
            if key in todo or not set(names) - self._held_names(key):
                continue
            todo[key] = (path, self._memory.get(key) or self._load(key) or {})  # a partial entry is completed
        if not names or not todo:
            return 0
        keys = list(todo)
        start = time.perf_counter()
        transform = self.backbone.transform(variant)
        paths = [todo[k][0] for k in keys]
        for i, encoded in encode_images(self.backbone, paths, names, reader, transform, self.settings):
            entry = {**encoded, **todo[keys[i]][1]}
            self._store(keys[i], entry)
            self._remember(keys[i], entry)
            on_progress(i + 1, len(keys))
        self.stats.encode_seconds += time.perf_counter() - start
        self.stats.misses += len(keys)
        self.stats.forwards += len(keys)
        return len(keys)

    def clear_memory(self) -> None:
        """Drop in-memory and spilled entries (e.g. when a run moves to the next category); disk entries stay."""
        self._memory.clear()
        self._memory_bytes = 0
        if self._spilled is not None:
            for path in self._spilled.glob("*.safetensors"):
                path.unlink(missing_ok=True)
        for companion in self.companions:
            companion.clear_memory()

    def _remember(self, key: str, entry: BackboneFeatures) -> None:
        """Keep ``entry`` in memory as the most recently used; push the least recently used ones out (they are
        on disk) while the budget is exceeded."""
        if (old := self._memory.pop(key, None)) is not None:
            self._memory_bytes -= _nbytes(old)
        self._memory[key] = entry
        self._memory_bytes += _nbytes(entry)
        budget = self.memory_budget
        while budget is not None and self._memory_bytes > budget and len(self._memory) > 1:
            evicted_key, evicted = self._memory.popitem(last=False)
            self._memory_bytes -= _nbytes(evicted)
            self.stats.evictions += 1
            if self.disk_dir is None and self._held_on_disk(evicted_key) != set(evicted):  # absent, or fewer names
                _write_entry(self._spill_folder(), evicted_key, evicted)
        self.stats.peak_memory_bytes = max(self.stats.peak_memory_bytes, self._memory_bytes)

    @staticmethod
    def _key(identity: str, image_sha: str) -> str:
        return hashlib.sha256(f"{identity}|{image_sha}".encode()).hexdigest()

    def _held_names(self, key: str) -> set[str]:
        """The feature names cached under ``key`` in memory or on disk (a disk entry's header only is read)."""
        if (entry := self._memory.get(key)) is not None:
            return set(entry)
        return self._held_on_disk(key)

    def _held_on_disk(self, key: str) -> set[str]:
        """The feature names of ``key``'s disk (or spilled) file, from its header; empty when there is none."""
        return self._read_disk(key, lambda handle: set(handle.keys())) or set()

    def _spill_folder(self) -> Path:
        """The cache's own folder of evicted entries (made on first use, removed with the cache)."""
        if self._spilled is None:
            if self.spill_root is not None:
                self.spill_root.mkdir(parents=True, exist_ok=True)
            self._spilled = Path(tempfile.mkdtemp(prefix="fsas-feature-spill-", dir=self.spill_root))
            weakref.finalize(self, shutil.rmtree, self._spilled, True)
        return self._spilled

    def _load(self, key: str) -> BackboneFeatures | None:
        """The disk (or spilled) entry of ``key``; None (a miss) when absent, unreadable, or stored under another
        key."""
        return self._read_disk(key, lambda handle: {name: handle.get_tensor(name) for name in handle.keys()})

    def _read_disk(self, key: str, read: Callable[[Any], _T]) -> _T | None:
        """``read(safetensors handle)`` of the disk (or spilled) file of ``key``; None when it is absent,
        unreadable, or stored under another key."""
        folder = self.disk_dir or self._spilled
        if folder is None or not (path := folder / f"{key}.safetensors").is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                return read(handle) if (handle.metadata() or {}).get("key") == key else None
        except (OSError, SafetensorError, ValueError, RuntimeError):
            return None

    def _store(self, key: str, entry: BackboneFeatures) -> None:
        """Write ``entry`` to disk (when the cache has a disk folder)."""
        if self.disk_dir is not None:
            _write_entry(self.disk_dir, key, entry)


def default_memory_budget(tasks_at_once: int = 1) -> int:
    """Feature bytes one cache holds in memory when ``--cache-memory`` is not given: a quarter of this machine's
    memory (or of its cgroup limit, as a batch scheduler sets it, when lower), shared by the ``tasks_at_once``
    tasks the machine runs at once."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in CGROUP_MEMORY_LIMITS:
        try:
            memory = min(memory, int(Path(limit_file).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max" (no limit)
            continue
    return memory // 4 // max(1, tasks_at_once)


def _write_entry(folder: Path, key: str, entry: BackboneFeatures) -> None:
    """``entry`` as ``folder/<key>.safetensors`` (written atomically, the key in its metadata)."""
    tensors = {name: t.contiguous() for name, t in entry.items()}
    path = folder / f"{key}.safetensors"
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"key": key}), "feature cache entry")


def _nbytes(entry: BackboneFeatures) -> int:
    return sum(t.numel() * t.element_size() for t in entry.values())
