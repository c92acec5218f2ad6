"""Auxiliary training jobs: one checkpoint per (method config, auxiliary dataset, train seed[, shot]).

Checkpoints live under ``<out>/checkpoints/`` as safetensors (byte-identical for identical weights, so
``checkpoint_sha`` is reproducible) and are written atomically; an existing checkpoint is reused
(retraining is skipped), so every category, shot and manifest seed of a target dataset evaluates the same
weights, identified in result rows by ``checkpoint_sha``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from safetensors.torch import load_file, save_file

from fsas_bench.data.index import DatasetIndex
from fsas_bench.hashing import sha256_file
from fsas_bench.methods import FewShotMethod


@dataclass(frozen=True)
class TrainJob:
    """What determines a trained checkpoint."""

    method: str
    method_cfg_hash: str
    train_dataset: str
    seed: int
    shot: int | None  # only for methods trained per shot count
    target: str = ""  # only for faithful modes that select on the evaluation dataset (target leakage)

    def path(self, out: Path) -> Path:
        """``<out>/checkpoints/<method>/<train_dataset>/<cfg hash>_seed<s>[_k<k>][_for-<target>].safetensors``."""
        suffix = ("" if self.shot is None else f"_k{self.shot}") + (f"_for-{self.target}" if self.target else "")
        name = f"{self.method_cfg_hash[:16]}_seed{self.seed}{suffix}.safetensors"
        return out / "checkpoints" / self.method / self.train_dataset / name


def ensure_checkpoint(
    job: TrainJob, out: Path, make_method: Callable[[], FewShotMethod], auxiliary: DatasetIndex, target: DatasetIndex
) -> tuple[Path, str, float]:
    """Train (unless the checkpoint exists) and return its path, SHA-256 and the training seconds spent now."""
    path = job.path(out)
    if path.is_file():
        return path, sha256_file(path), 0.0
    start = time.perf_counter()
    L.seed_everything(job.seed, verbose=False)
    method = make_method()
    method.fit_auxiliary(auxiliary, target, job.shot or 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().clone() for k, v in method.state_dict().items()}, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path, sha256_file(path), time.perf_counter() - start


def load_checkpoint(method: FewShotMethod, path: Path) -> None:
    """Load a checkpoint written by :func:`ensure_checkpoint` into a fresh method instance."""
    method.load_state_dict(load_file(path))
