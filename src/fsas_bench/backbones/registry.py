"""Backbone architectures: upstream open_clip models plus the configs shipped with fsas-bench."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import open_clip

TINY_ARCH = "fsas-tiny"
"""A 6-block, width-128 ViT CLIP shipped with the package; the embedded benchmark's and the tests' backbone."""

_CONFIG_DIR = Path(__file__).parent / "model_configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ShippedWeights:
    """Weights that ship inside the package: their file in `WEIGHTS_DIR` and its pinned SHA-256."""

    file: str
    sha256: str


SHIPPED_WEIGHTS: dict[tuple[str, str], ShippedWeights] = {
    # fsas-tiny-clip, trained by ``fsas-bench pretrain-tiny-clip`` (README: "fsas-tiny-clip model card")
    (TINY_ARCH, "fsas-synthetic"): ShippedWeights(
        "fsas-tiny-fsas_synthetic.safetensors", "c1cad9fbae58fb415a86048c803ed8e2b02bff6d2f8c429c79d1d5fe46fa9820"
    ),
}


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


def shipped_weights(arch: str, tag: str | None) -> tuple[Path, str] | None:
    """File and pinned SHA-256 of the packaged weights ``tag`` of ``arch``; None if no such weights ship."""
    entry = SHIPPED_WEIGHTS.get((arch, tag or ""))
    return None if entry is None else (WEIGHTS_DIR / entry.file, entry.sha256)


def shipped_tags(arch: str) -> list[str]:
    """Tags of the weights of ``arch`` that ship with fsas-bench."""
    return [tag for name, tag in SHIPPED_WEIGHTS if name == arch]


def default_pretrained(arch: str) -> str | None:
    """The weights a run of ``arch`` uses when none are named: its first shipped tag, else None."""
    return next(iter(shipped_tags(arch)), None)
