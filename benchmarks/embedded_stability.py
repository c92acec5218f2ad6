"""How far the embedded leaderboard rows move under tiny floating-point differences (different CPU kernels).

Runs ``fsas-bench run`` (the chosen methods, the embedded synthetic set, shots 1,2,4, seeds 0,1,2) once per
emulated setting, each in a child process with its own output and feature cache:

- ``native``: the machine's defaults;
- ``isa-default``: ATen's generic CPU kernels and oneDNN limited to SSE4.1
  (``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41``);
- ``threads-1``: one intra-op thread (``OMP_NUM_THREADS=1 MKL_NUM_THREADS=1``; torch follows OMP).

The same setting twice is bit-identical, so any difference between settings is rounding amplified by the
method. Prints, per method × metric × shot, the leaderboard row (mean over seeds of the category mean) × 100 in
every setting, the largest move between settings and the seed-to-seed std (× 100, native). Target: every move
≤ 1 point. Only prints; the exit status is that of the runs.

    python benchmarks/embedded_stability.py --methods inctrl,dictas [--settings native,threads-1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from fsas_bench.runner.regress import EMULATED_ENVIRONMENTS, emulated_environment

SETTINGS = {name: EMULATED_ENVIRONMENTS[name] for name in ("native", "isa-default", "threads-1")}
METRICS = ("I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO")


def run_setting(name: str, out: Path, methods: str, shots: str, seeds: str) -> tuple[int, float]:
    """One sweep under setting ``name`` into ``out/run`` with the cache ``out/cache``: (exit status, wall s)."""
    env = {**emulated_environment(name), "FSAS_CACHE_DIR": str(out / "cache"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "fsas_bench.cli", "run", "--methods", methods, "--shots", shots,
               "--seeds", seeds, "--out", str(out / "run")]  # fmt: skip
    start = time.perf_counter()
    status = subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL).returncode
    return status, time.perf_counter() - start


def leaderboard(run: Path) -> pd.DataFrame:
    """Leaderboard rows of a run: (method, metric, shot) → mean and seed std of the category mean."""
    rows = pd.read_csv(run / "leaderboard.csv")
    return rows.set_index(["method", "metric", "shot"])[["mean", "std"]]


def stability(boards: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per row: value × 100 in each setting, the max move between settings, and the native seed std × 100."""
    table = pd.concat({name: board["mean"] * 100 for name, board in boards.items()}, axis=1)
    table["move"] = table.max(axis=1) - table.min(axis=1)
    table["seed std"] = next(iter(boards.values()))["std"] * 100
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="inctrl,dictas", help="comma-separated methods (default inctrl,dictas)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"subset of {','.join(SETTINGS)}")
    parser.add_argument("--shots", default="1,2,4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--keep", type=Path, help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    console = Console()
    boards: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory(prefix="fsas-stability-") as tmp:
        root = args.keep or Path(tmp)
        for name in args.settings.split(","):
            status, wall = run_setting(name, root / name, args.methods, args.shots, args.seeds)
            console.print(f"{name}: exit {status}, {wall:.1f} s")
            if status != 0:
                return status
            boards[name] = leaderboard(root / name / "run")
    table = stability(boards)
    for method in table.index.unique("method"):
        view = Table(title=f"{method}: leaderboard rows × 100 per setting")
        for column in ("metric", "shot", *table.columns):
            view.add_column(str(column), justify="left" if column == "metric" else "right")
        rows = table.loc[method]
        for metric in [m for m in METRICS if m in rows.index.unique("metric")]:
            for shot, row in rows.loc[metric].iterrows():
                view.add_row(metric, str(shot), *(f"{v:.3f}" for v in row))
        console.print(view)
        worst = rows["move"].max()
        console.print(f"{method}: max move {worst:.3f} points ({'≤' if worst <= 1 else '>'} 1), "
                      f"median seed std {rows['seed std'].median():.2f} points")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
