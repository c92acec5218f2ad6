"""Time the whole embedded benchmark: wall time, peak RSS and a per-method breakdown.

Runs ``fsas-bench run`` (default: every registered method, the synthetic set, shots 1,2,4, seeds 0,1,2,
``fsas-tiny``) in a child process with a fresh cache and output directory, then sums ``timings.csv`` per
method. Target (issue #8): ≤ 10 min on 2 CPU cores, peak RSS ≤ 4 GiB.

    python benchmarks/embedded_benchmark.py [--out DIR] [-- extra 'fsas-bench run' options]

Extra options after ``--`` go to ``fsas-bench run`` (e.g. ``-- --methods patchknn --shots 1``).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

PHASES = {  # timings.csv column → label (encoding overlaps fit and inference: backbone forwards inside them)
    "time_train_s": "training",
    "time_fit_s": "fit (support)",
    "time_encode_s": "encoding",
    "time_infer_s": "inference",
    "time_metric_s": "metrics",
}


def run_benchmark(out: Path, extra: list[str]) -> tuple[float, float, float, int]:
    """Run the sweep into ``out`` with its own cache: (wall s, CPU s, peak RSS GiB of the child, exit status).

    CPU seconds (user + system) do not grow when other processes share the cores, unlike wall time.
    """
    env = {**os.environ, "FSAS_CACHE_DIR": str(out / "cache"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "fsas_bench.cli", "run", "--out", str(out / "run"), *extra]
    start = time.perf_counter()
    status = subprocess.run(command, env=env, check=False).returncode
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # Linux: ru_maxrss in KiB, largest child
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20, status


def breakdown(run: Path) -> pd.DataFrame:
    """Seconds per method and phase (summed over cells), with the cell count."""
    jobs = pd.read_csv(run / "results.csv", usecols=["job_id", "method"], dtype=str).drop_duplicates()
    timings = pd.read_csv(run / "timings.csv", dtype={"job_id": str})
    merged = jobs.merge(timings, on="job_id")
    table = merged.groupby("method")[list(PHASES)].sum(min_count=0).rename(columns=PHASES)
    table.insert(0, "cells", merged.groupby("method")["job_id"].nunique())
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the run here (default: a temporary directory)")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    console = Console()
    with tempfile.TemporaryDirectory(prefix="fsas-embedded-") as tmp:
        out = args.out or Path(tmp)
        wall, cpu, peak_gib, status = run_benchmark(out, extra)
        if status != 0:
            console.print(f"fsas-bench run failed with exit status {status}")
            return status
        table = breakdown(out / "run")
    view = Table(title=f"embedded benchmark per method (seconds; {os.cpu_count()} CPUs visible)")
    for column in ("method", *table.columns):
        view.add_column(column, justify="left" if column == "method" else "right")
    for method, row in table.iterrows():
        view.add_row(str(method), str(int(row["cells"])), *(f"{row[c]:.1f}" for c in PHASES.values()))
    console.print(view)
    console.print(f"wall time {wall:.1f} s ({wall / 60:.2f} min); CPU time {cpu:.1f} s; peak RSS {peak_gib:.2f} GiB; "
                  f"load average at the end {os.getloadavg()[0]:.2f} (other processes share the CPUs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
