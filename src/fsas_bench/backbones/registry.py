"""Backbone architectures: upstream open_clip models plus the configs shipped with fsas-bench."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import open_clip

TINY_ARCH = "fsas-tiny"
"""A 6-block, width-128 ViT CLIP shipped with the package; the embedded benchmark's and the tests' backbone."""

_CONFIG_DIR = Path(__file__).parent / "model_configs"


@cache
def register_shipped_configs() -> None:
    """Make the configs in ``model_configs/`` known to open_clip (idempotent)."""
    open_clip.add_model_config(_CONFIG_DIR)


def list_backbones() -> list[str]:
    """Every architecture name ``--backbone`` accepts (open_clip's and the shipped ones)."""
    register_shipped_configs()
    return open_clip.list_models()


def shipped_arches() -> set[str]:
    """Architectures whose config ships with fsas-bench (random weights are allowed for these)."""
    return {p.stem for p in _CONFIG_DIR.glob("*.json")}
