"""The one quiet single-device Lightning Trainer: every fit (auxiliary, per-category) and every prediction.

Lightning is imported when a trainer is built, so the CLI can use :func:`quiet_warnings` without loading torch.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning as L
    import torch

QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*has `__len__` defined.*",
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*in eval mode at the start.*",
)
"""Warnings Lightning gives on every quiet single-device run that no user can act on (single-process loaders,
an iterable dataset with a length, a deprecated pytree check, modules kept in eval mode on purpose)."""


def device_placement(device: str | torch.device) -> dict[str, Any]:
    """Lightning's ``accelerator`` and ``devices`` for one torch device: ``cuda[:N]`` → GPU N (0 when no index
    is given), anything else → one CPU."""
    kind, _, index = str(device).partition(":")
    if kind == "cuda":
        return {"accelerator": "gpu", "devices": [int(index or 0)]}
    return {"accelerator": "cpu", "devices": 1}


@contextmanager
def quiet_warnings() -> Iterator[None]:
    """Ignore :data:`QUIET_WARNINGS` inside the block (the process's filters are restored afterwards)."""
    with warnings.catch_warnings():
        for message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


def quiet_trainer(device: str | torch.device, **options: Any) -> L.Trainer:
    """A single-device Trainer on ``device`` without logger, checkpoints, progress bar or model summary;
    ``options`` (``max_epochs``, ``precision``, ``limit_train_batches``, ...) go to ``L.Trainer``. Exact
    metrics and reproducible fits need one device. Run its ``fit``/``predict`` inside :func:`quiet_warnings`."""
    import lightning as L

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return L.Trainer(
        **device_placement(device), logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **options,
    )  # fmt: skip
