"""Small helpers shared by tests."""

from __future__ import annotations


def split_batch(batch: dict, indices: list[int]) -> dict:
    """The sub-batch of ``batch`` at ``indices``."""
    return {key: [values[i] for i in indices] for key, values in batch.items()}
