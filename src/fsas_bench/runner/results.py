"""Tidy result rows and their atomic, resumable storage.

Each finished cell is written to ``<out>/cells/<job_id>.csv`` (temp file + rename), then
``<out>/results.csv`` is rebuilt from all cell files in canonical order and atomically replaced, so a
crash loses at most the cell in progress and never leaves a torn or duplicated row. Volatile
measurements (timestamps, timings, memory, cache counters) go to ``<out>/timings.csv`` so that
``results.csv`` is byte-identical between identical runs.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fsas_bench.files import atomic_write
from fsas_bench.names import child_path
from fsas_bench.numbers import strict_int

RESULT_COLUMNS = (
    "run_id", "job_id", "git_sha", "fsas_version", "torch", "open_clip", "device",
    "method", "mode", "method_cfg_hash", "flags", "backbone", "pretrained", "image_size",
    "fit_scope", "train_dataset", "train_seed", "checkpoint_sha", "transductive",
    "dataset", "category", "shot", "seed", "shot_manifest", "shot_manifest_sha",
    "level", "metric", "value", "metric_impl", "fpr_limit", "eval_size", "mask_resize", "connectivity",
    "n_test", "n_anomalous", "status", "reason",
)  # fmt: skip
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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`fsas_bench.files.atomic_write`)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    atomic_write(path, write, "output file")


def _csv_text(columns: tuple[str, ...], rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: format_value(row.get(c)) for c in columns})
    return buf.getvalue()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


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
        self._rows: dict[str, list[dict[str, str]]] | None = None  # job id → rows, read from disk once
        self._timings: dict[str, list[dict[str, str]]] = {}

    def _cells(self) -> dict[str, list[dict[str, str]]]:
        if self._rows is None:
            self._rows, self._timings = {}, {}
            for path in sorted(self.cells_dir.glob("*.csv")):
                name = path.name.removesuffix(".csv")
                if name.endswith(".timing"):
                    self._timings[name.removesuffix(".timing")] = _read_csv(path)
                elif rows := _read_csv(path):
                    self._rows[name] = rows
        return self._rows

    def is_done(self, job_id: str) -> bool:
        """Whether the cell finished before (failed cells are retried)."""
        rows = self._cells().get(job_id)
        return rows is not None and all(row["status"] != "failed" for row in rows)

    def write_cell(self, job_id: str, rows: list[dict[str, Any]], timing: dict[str, Any]) -> None:
        """Persist one finished cell, then rebuild ``results.csv`` and ``timings.csv``."""
        cells = self._cells()
        timing_text, rows_text = _csv_text(TIMING_COLUMNS, [timing]), _csv_text(RESULT_COLUMNS, rows)
        atomic_write_text(child_path(self.cells_dir, f"{job_id}.timing.csv"), timing_text)
        atomic_write_text(child_path(self.cells_dir, f"{job_id}.csv"), rows_text)
        self._timings[job_id] = list(csv.DictReader(io.StringIO(timing_text)))
        cells[job_id] = list(csv.DictReader(io.StringIO(rows_text)))
        self._write_merged()

    def _write_merged(self) -> None:
        """Regenerate the merged files from all cells, in canonical row order."""
        cells = sorted(self._cells().values(), key=lambda rows: tuple(_sort_key(rows[0][k]) for k in _SORT_KEYS))
        atomic_write_text(self.results_csv, _csv_text(RESULT_COLUMNS, (r for rows in cells for r in rows)))
        timings = [row for job in sorted(self._timings) for row in self._timings[job]]
        atomic_write_text(self.timings_csv, _csv_text(TIMING_COLUMNS, timings))


def _sort_key(value: str) -> tuple[int, int | str]:
    """Numbers sort numerically, before text (so seed 10 follows seed 2)."""
    number = strict_int(value)
    return (1, value) if number is None else (0, number)
