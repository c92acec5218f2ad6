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
