"""Code and environment identity recorded in every result row."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import open_clip
import torch

import fsas_bench


@cache
def git_sha() -> str:
    """Commit of the fsas-bench source tree, ``<sha>-dirty`` when the package's files differ from it (modified,
    staged or untracked, ignored files aside), or ``unknown`` outside a git checkout."""
    package = Path(fsas_bench.__file__).parent
    try:
        sha = _git(package, "rev-parse", "HEAD")
        changes = _git(package, "status", "--porcelain", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if changes else sha


def _git(cwd: Path, *args: str) -> str:
    """Stripped stdout of ``git <args>`` run in ``cwd``."""
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    return out.stdout.strip()


def device_name(device: str) -> str:
    """``cpu`` or the GPU model."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def provenance(device: str) -> dict[str, str]:
    """The code-identity columns of a result row."""
    return {
        "git_sha": git_sha(),
        "fsas_version": fsas_bench.__version__,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "device": device_name(device),
    }
