"""Which sweep owns an output directory.

``<out>/sweep.json`` records the **protocol** of the sweep that created the directory: the backbone identity
(architecture, weights, preprocessing, precision when not fp32), the evaluation frame and the AUPRO limit. A
later run into the same ``--out`` must have the same protocol; it may extend the grid (more methods, datasets,
categories, shots, seeds) or add ablations (``--set``, ``--mode``: rows carry their config hash and flags),
which merge. A different protocol would mix incomparable rows in one leaderboard, so it is refused before
anything is written.

Every run also leaves ``<out>/runs/<run_id>.json`` (its grid, device, precision and encode settings); tasks on
other machines check that they see it (``--out`` must be on a filesystem every node shares).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fsas_bench.errors import UserError
from fsas_bench.files import atomic_write_text
from fsas_bench.hashing import canonical_json
from fsas_bench.names import child_path

IDENTITY_FILE = "sweep.json"
RUNS = "runs"


def check_protocol(out: Path, protocol: dict[str, Any]) -> None:
    """UserError when ``out`` belongs to a sweep of another protocol (nothing is written)."""
    path = out / IDENTITY_FILE
    if not path.is_file():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))["protocol"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise UserError(f"'{path}' is unreadable: use another --out, or delete that file if the folder is "
                        "yours") from None  # fmt: skip
    if recorded != json.loads(canonical_json(protocol)):
        differs = sorted(k for k in set(recorded) | set(protocol) if recorded.get(k) != protocol.get(k))
        raise UserError(
            f"--out '{out}' holds results of another sweep ({', '.join(differs)} differ): use another --out "
            "(only more methods, datasets, categories, shots, seeds or --set ablations merge into one)"
        )


def record_run(out: Path, protocol: dict[str, Any], run_id: str, grid: dict[str, Any]) -> None:
    """Write the protocol (first run only) and this run's marker with its grid."""
    if not (out / IDENTITY_FILE).is_file():
        atomic_write_text(out / IDENTITY_FILE, canonical_json({"protocol": protocol}) + "\n")
    atomic_write_text(run_marker(out, run_id), canonical_json(grid) + "\n")


def run_marker(out: Path, run_id: str) -> Path:
    """``<out>/runs/<run_id>.json``."""
    return child_path(out, RUNS, f"{run_id}.json")
