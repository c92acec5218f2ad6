"""Shared fixtures: a hermetic cache directory and the seeded tiny backbone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def hermetic_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point fsas-bench's cache (synthetic datasets, features) at a fresh session directory."""
    path = tmp_path_factory.mktemp("fsas-cache")
    os.environ["FSAS_CACHE_DIR"] = str(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    return path


@pytest.fixture(scope="session")
def tiny_backbone():
    """The shipped tiny CLIP with seeded random weights."""
    from fsas_bench.backbones import load_backbone

    return load_backbone("fsas-tiny", None)


@pytest.fixture
def image_files(tmp_path: Path):
    """Factory: ``n`` seeded random RGB PNGs → a datamodule-style batch dict (``path``, ``sha`` lists)."""
    import numpy as np
    from PIL import Image

    from fsas_bench.data.datamodule import image_sha

    def make(n: int, seed: int = 0, prefix: str = "img") -> dict:
        rng = np.random.default_rng(seed)
        paths = []
        for i in range(n):
            path = tmp_path / f"{prefix}{seed}_{i}.png"
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(path)
            paths.append(path)
        return {"path": [str(p) for p in paths], "sha": [image_sha(p) for p in paths]}

    return make



@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of tiny models: threads gain nothing there and contend on 2 cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
