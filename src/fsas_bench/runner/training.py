"""Trained state of a sweep: auxiliary checkpoints and per-category fits, written once and reused.

- Auxiliary training: one checkpoint per (method config, auxiliary dataset, train seed[, shot]); every category,
  shot and manifest seed of a target dataset evaluates the same weights.
- Per-category fits (prompts trained on the k shots): one checkpoint per (method config, dataset, category,
  shot, manifest seed), saved after the fit so that a later run can evaluate it without training.

Checkpoints live under ``<out>/checkpoints/`` as safetensors (byte-identical for identical weights, so
``checkpoint_sha`` is reproducible), written atomically, with the training losses as metadata. A
:class:`ReferenceFits` directory (a snapshot's committed checkpoints, SHA-256 pinned in ``fits.json``) can
replace all training: the evaluation then depends on inference arithmetic only, which is what makes a
regression snapshot portable across CPUs (training amplifies rounding differences).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from fsas_bench.errors import UserError
from fsas_bench.files import atomic_write, umask
from fsas_bench.hashing import sha256_file
from fsas_bench.methods.base import FewShotMethod
from fsas_bench.names import check_name, contained, safe_relative

CHECKPOINTS = "checkpoints"
FITS_MANIFEST = "fits.json"


@dataclass(frozen=True)
class TrainJob:
    """What determines a trained auxiliary checkpoint."""

    method: str
    method_cfg_hash: str
    train_dataset: str
    seed: int
    shot: int | None  # only for methods trained per shot count
    target: str = ""  # only for faithful modes that select on the evaluation dataset (target leakage)

    def relative_path(self) -> Path:
        """``<method>/<train_dataset>/<cfg hash>_seed<s>[_k<k>][_for-<target>].safetensors``."""
        suffix = ("" if self.shot is None else f"_k{self.shot}") + (f"_for-{self.target}" if self.target else "")
        return safe_relative(self.method, self.train_dataset, f"{self.method_cfg_hash[:16]}_seed{self.seed}{suffix}.safetensors")

    def path(self, out: Path) -> Path:
        """The checkpoint under ``<out>/checkpoints/``."""
        return out / CHECKPOINTS / self.relative_path()


def fit_relative_path(method: str, cfg_hash: str, dataset: str, category: str, shot: int, seed: int | str) -> Path:
    """``<method>/<dataset>/<cfg hash>_<category>_k<k>_seed<s>.safetensors`` of a per-category fit."""
    check_name(category, "category")
    return safe_relative(method, dataset, f"{cfg_hash[:16]}_{category}_k{shot}_seed{seed}.safetensors")


def save_state(state: dict[str, Tensor], losses: list[float], path: Path) -> str:
    """Write ``state`` atomically as safetensors with the training ``losses`` as metadata; its SHA-256."""
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"losses": json.dumps(losses)}), "checkpoint")
    return sha256_file(path)


def recorded_losses(path: Path) -> list[float]:
    """The training losses stored with a checkpoint (empty when none were recorded)."""
    with safe_open(str(path), framework="pt") as handle:
        return json.loads((handle.metadata() or {}).get("losses", "[]"))


class ReferenceFits:
    """A directory of committed checkpoints (``checkpoints/…`` as a run writes them) pinned by ``fits.json``.

    Args:
        root: the directory; ``fits.json`` maps each relative checkpoint path to its SHA-256.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            self.pins: dict[str, str] = json.loads((root / FITS_MANIFEST).read_text(encoding="utf-8"))["files"]
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.pins.items()):
                raise TypeError("pins must map paths to SHA-256 strings")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise UserError(
                f"reference fits '{root}' have no readable {FITS_MANIFEST}: restore the directory or regenerate "
                "the snapshot with 'fsas-bench regress --update'"
            ) from None
        for key in self.pins:  # paths from a user's file: never read outside the fits' checkpoints folder
            contained(root / CHECKPOINTS, root / CHECKPOINTS / key, f"reference fit '{key}' of '{root}'",
                      "regenerate the snapshot with 'fsas-bench regress --update'")  # fmt: skip

        for key, pinned in self.pins.items():  # all checked up front: a resumed run reads none of them
            path = root / CHECKPOINTS / key
            if not path.is_file() or sha256_file(path) != pinned:
                raise UserError(f"reference fit '{path}' is missing or does not match its pinned SHA-256: "
                                "restore it from git")  # fmt: skip

    def path(self, relative: Path) -> tuple[Path, str]:
        """The pinned checkpoint at ``relative`` and its SHA-256 (UserError when the fits lack it)."""
        key = relative.as_posix()
        if key not in self.pins:
            raise UserError(
                f"reference fits '{self.root}' lack '{key}' (the sweep differs from the snapshot's): regenerate "
                "the snapshot with 'fsas-bench regress --update'"
            )
        return self.root / CHECKPOINTS / relative, self.pins[key]

    @staticmethod
    def export(run_out: Path, root: Path) -> int:
        """Replace ``root`` with the checkpoints of the run in ``run_out`` and their pins; the file count."""
        source = run_out / CHECKPOINTS
        files = sorted(p for p in source.rglob("*.safetensors")) if source.is_dir() else []
        staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp creates 0700; the folder gets the user's usual permissions
        try:
            pins = {}
            for path in files:
                relative = path.relative_to(source)
                (staging / CHECKPOINTS / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staging / CHECKPOINTS / relative)
                pins[relative.as_posix()] = sha256_file(path)
            manifest = {"about": "checkpoints a regression snapshot evaluates (fsas-bench regress)", "files": pins}
            (staging / FITS_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return len(files)


def load_checkpoint(method: FewShotMethod, path: Path) -> None:
    """Load an auxiliary checkpoint (written by :func:`save_state`) into a fresh method instance."""
    method.load_state_dict(load_file(path))
