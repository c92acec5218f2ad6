"""Merge cost: results.csv written once from N cell files (target: 20,000 cells in under 10 s).

Writes N realistic cells (7 metric rows each, as a sweep's tasks do) into a temporary ``--out``, then times
:meth:`ResultStore.merge` (read and validate every cell file, sort, write results.csv and timings.csv). Before
the plan → merge split the store rewrote results.csv after every cell; the script prints what that costs at N
(the sum of merges of 1 … N cells, estimated from the measured linear merge time) for comparison.

Usage: python benchmarks/merge_speed.py [--cells 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fsas_bench.metrics import IMAGE_METRICS, PIXEL_METRICS, REGION_METRICS
from fsas_bench.runner.results import RESULT_COLUMNS, ResultStore

METRICS = IMAGE_METRICS + PIXEL_METRICS + REGION_METRICS


def write_cells(store: ResultStore, n: int) -> None:
    """``n`` cells of 7 rows: 6 methods × categories × shots × seeds, values from a fixed formula."""
    for i in range(n):
        jid = f"{i:016x}"
        base = dict.fromkeys(RESULT_COLUMNS, "x") | {
            "job_id": jid, "method": f"m{i % 6}", "dataset": "mvtec", "category": f"c{i // 6 % 50}",
            "shot": 1 + i // 300 % 3, "seed": i // 900, "status": "ok", "reason": "",
        }  # fmt: skip
        rows = [{**base, "metric": m, "value": (i * 7 + j) % 1000 / 1000} for j, m in enumerate(METRICS)]
        store.write_cell(jid, rows, {"job_id": jid, "ms_per_image": 1.0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp))
        start = time.perf_counter()
        write_cells(store, args.cells)
        written = time.perf_counter() - start
        start = time.perf_counter()
        merged = store.merge()
        seconds = time.perf_counter() - start
        size = store.results_csv.stat().st_size / 2**20
    print(f"{args.cells} cells written by tasks in {written:.1f} s (not part of the merge)")
    print(f"merge: {merged} cells, {merged * len(METRICS)} rows, {size:.1f} MiB results.csv in {seconds:.2f} s "
          f"(target < 10 s for 20,000 cells)")  # fmt: skip
    print(f"rewriting after every cell (before): ≈ {seconds * (args.cells + 1) / 2 / 60:.0f} min at this size")


if __name__ == "__main__":
    main()
