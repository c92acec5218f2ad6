"""Tidy result rows and their atomic, resumable storage.

Each finished cell is written to ``<out>/cells/<job_id>.csv`` (temp file + rename) by whichever process
evaluated it, and nothing else: :meth:`ResultStore.merge` then writes ``<out>/results.csv`` once from all valid
cell files in canonical order (O(cells)), at the end of every run, resumed ones included. A crash loses at
most the cell in progress and never leaves a torn or duplicated row; a cell file that does not validate
(columns, row count, its own job id, numbers) is recomputed, never trusted. Volatile measurements (timestamps,
timings, memory, cache counters) go to ``<out>/timings.csv`` so that ``results.csv`` is byte-identical between
identical runs.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsas_bench.files import atomic_write_text
from fsas_bench.names import child_path
from fsas_bench.numbers import strict_int

if TYPE_CHECKING:
    import pandas as pd

RESULT_COLUMNS = (
    "run_id", "job_id", "git_sha", "fsas_version", "torch", "open_clip", "device",
    "method", "mode", "method_cfg_hash", "flags", "backbone", "pretrained", "image_size", "precision",
    "fit_scope", "train_dataset", "train_seed", "checkpoint_sha", "transductive",
    "dataset", "category", "shot", "seed", "shot_manifest", "shot_manifest_sha",
    "level", "metric", "value", "metric_impl", "fpr_limit", "eval_size", "mask_resize", "connectivity",
    "n_test", "n_anomalous", "status", "reason",
)  # fmt: skip
LEGACY_DEFAULTS = {"precision": "fp32"}
"""Columns added after results were first written, with the value rows written before them meant."""
LEGACY_RESULT_COLUMNS = tuple(c for c in RESULT_COLUMNS if c not in LEGACY_DEFAULTS)
TIMING_COLUMNS = (
    "job_id", "created_at", "time_train_s", "time_fit_s", "time_encode_s", "time_infer_s", "time_metric_s", "ms_per_image",
    "peak_gpu_mem_mb", "cache_hits", "cache_misses", "backbone_forwards",
)  # fmt: skip
_SORT_KEYS = ("method", "dataset", "category", "shot", "seed", "mode", "method_cfg_hash")


def format_value(value: Any) -> str:
    """CSV text of a cell: floats at full precision (shortest round-trip repr), NaN as ``NaN``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value)
    return "" if value is None else str(value)


def _csv_text(columns: tuple[str, ...], rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: format_value(row.get(c)) for c in columns})
    return buf.getvalue()


def with_legacy_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (text columns) with every :data:`LEGACY_DEFAULTS` column it lacks added (results written
    before the column existed: e.g. every row without ``precision`` was computed in fp32)."""
    for column, value in LEGACY_DEFAULTS.items():
        if column not in frame.columns:
            frame[column] = value
    return frame


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


STATUSES = ("ok", "undefined", "skipped", "failed")


class ResultStore:
    """The result files of one output directory.

    Args:
        out: the run's output directory.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.cells_dir = out / "cells"
        self.results_csv = out / "results.csv"
        self.timings_csv = out / "timings.csv"

    def read_cell(self, job_id: str, metrics: Collection[str] | None = None) -> list[dict[str, str]] | None:
        """The rows of a finished cell; None when absent or invalid (then it is recomputed). ``metrics``: the
        metrics the cell must hold, one row each (a cell cut short at a row boundary is invalid)."""
        return _valid_cell(child_path(self.cells_dir, f"{job_id}.csv"), job_id, metrics)

    def written_since(self, job_id: str, since: float) -> bool:
        """Whether the cell's file was (re)written at or after ``since`` (a ``time.time()`` value)."""
        try:
            return child_path(self.cells_dir, f"{job_id}.csv").stat().st_mtime >= since
        except FileNotFoundError:
            return False

    def is_done(self, job_id: str, metrics: Collection[str] | None = None) -> bool:
        """Whether the cell finished before with a valid cell file (see :meth:`read_cell`; failed cells are
        retried)."""
        rows = self.read_cell(job_id, metrics)
        return rows is not None and all(row["status"] != "failed" for row in rows)

    def write_cell(self, job_id: str, rows: list[dict[str, Any]], timing: dict[str, Any]) -> None:
        """Persist one finished cell (its rows and timing), atomically; ``results.csv`` is left to :meth:`merge`."""
        atomic_write_text(child_path(self.cells_dir, f"{job_id}.timing.csv"), _csv_text(TIMING_COLUMNS, [timing]))
        atomic_write_text(child_path(self.cells_dir, f"{job_id}.csv"), _csv_text(RESULT_COLUMNS, rows))

    def merge(self) -> int:
        """Write ``results.csv`` and ``timings.csv`` from every valid cell file, in canonical row order; the
        number of cells merged."""
        cells, timings = [], []
        paths = sorted(p for p in self.cells_dir.glob("*.csv") if not p.name.endswith(".timing.csv"))
        for path in paths:
            job_id = path.name.removesuffix(".csv")
            if (rows := _valid_cell(path, job_id)) is None:
                continue
            cells.append(rows)
            timing = self.cells_dir / f"{job_id}.timing.csv"
            timings += _read_csv(timing) if timing.is_file() else [{"job_id": job_id}]
        cells.sort(key=lambda rows: tuple(_sort_key(rows[0][k]) for k in _SORT_KEYS))
        atomic_write_text(self.results_csv, _csv_text(RESULT_COLUMNS, (r for rows in cells for r in rows)))
        atomic_write_text(self.timings_csv, _csv_text(TIMING_COLUMNS, sorted(timings, key=lambda t: t["job_id"])))
        return len(cells)


def _valid_cell(path: Path, job_id: str, metrics: Collection[str] | None = None) -> list[dict[str, str]] | None:
    """The rows of cell file ``path`` when it is complete: the result columns, one row per metric (exactly
    ``metrics`` when given), each of the cell's job id, a known status and a number as value; else None."""
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = tuple(next(reader, ()))
            if header not in (RESULT_COLUMNS, LEGACY_RESULT_COLUMNS):
                return None
            rows = [LEGACY_DEFAULTS | dict(zip(header, line, strict=True)) for line in reader]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError):
        return None
    if any(r["job_id"] != job_id or r["status"] not in STATUSES or not _is_number(r["value"]) for r in rows):
        return None
    found = [r["metric"] for r in rows]
    complete = set(found) == set(metrics) if metrics is not None else bool(found)
    return rows if complete and len(set(found)) == len(found) else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sort_key(value: str) -> tuple[int, int | str]:
    """Numbers sort numerically, before text (so seed 10 follows seed 2)."""
    number = strict_int(value)
    return (1, value) if number is None else (0, number)
