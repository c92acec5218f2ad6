"""Measure the environment band of a regression snapshot: how far each method's values move on other CPUs.

The snapshot's inference sweep (every trained part loaded from its reference fits) reruns once per emulated
environment — different ATen/oneDNN CPU kernels and thread counts, each in a fresh process with its own cache —
and every value is compared with the snapshot. Per method and metric the largest move over all settings,
times a safety factor, is the band inside which ``fsas-bench regress`` reports a move as "environment" rather
than a code change. Prints the per-setting maxima; ``--write`` stores the band in the snapshot's sidecar.

    python benchmarks/regress_tolerance.py                      # measure and print
    python benchmarks/regress_tolerance.py --write              # ... and add it to baselines/regression/embedded.json

``--write`` keeps what earlier machines measured: per method and metric the band is the largest move seen on any
machine listed in the sidecar (a band only grows), so running it on each new kind of CPU makes the snapshot
portable to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from fsas_bench.files import atomic_write_text
from fsas_bench.runner.regress import (
    EMULATED_ENVIRONMENTS, KEY, Selection, SnapshotConfig, emulated_environment, fits_dir, merged_environment,
    read_tidy, sidecar_path, sweep_spec, this_machine,
)  # fmt: skip
from fsas_bench.runner.sweep import Sweep

SNAPSHOT = Path(__file__).resolve().parents[1] / "baselines" / "regression" / "embedded.csv"


def worker(snapshot: Path, out: Path) -> None:
    """Run the snapshot's inference sweep into ``out`` (in the environment this process was started with)."""
    config = SnapshotConfig.load(sidecar_path(snapshot))
    spec = dataclasses.replace(sweep_spec(config, Selection(), "cpu", fits_dir(snapshot, config)), out=out)
    Sweep(spec).run()


def largest_moves(snapshot: pd.DataFrame, results: pd.DataFrame) -> pd.Series:
    """Per (method, metric): the largest |now − snapshot| over every key (NaN = NaN counts as no move)."""
    merged = snapshot.merge(results, on=list(KEY), suffixes=("_snap", "_now"))
    if len(merged) != len(snapshot):
        raise SystemExit(f"the rerun has {len(merged)} of the snapshot's {len(snapshot)} rows: regenerate it first")
    delta = (merged["value_now"] - merged["value_snap"]).abs()
    delta[merged["value_now"].isna() & merged["value_snap"].isna()] = 0.0
    return delta.groupby([merged["method"], merged["metric"]]).max()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", type=Path, default=SNAPSHOT, help="snapshot CSV (its sidecar is beside it)")
    parser.add_argument("--factor", type=float, default=10.0, help="safety factor on the largest move (10)")
    parser.add_argument("--write", action="store_true", help="store the band in the sidecar")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.against, args.worker)
        return
    console = Console()
    snapshot = read_tidy(args.against, "snapshot", (*KEY, "value"))
    moves: dict[str, pd.Series] = {}
    with tempfile.TemporaryDirectory(prefix="fsas-tolerance-") as tmp:
        native = torch.backends.cpu.get_cpu_capability().lower()
        for name, variables in EMULATED_ENVIRONMENTS.items():
            if variables and variables == {"ATEN_CPU_CAPABILITY": native}:  # the machine's own kernels: native
                moves[name] = moves["native"]
                console.print(f"{name:12s} = native on this CPU ({native} kernels)")
                continue
            env = {**emulated_environment(name), "FSAS_CACHE_DIR": str(Path(tmp, name, "cache"))}
            start = time.perf_counter()
            out = Path(tmp, name, "run")
            command = [sys.executable, __file__, "--against", str(args.against), "--worker", str(out)]
            subprocess.run(command, env=env, check=True)
            moves[name] = largest_moves(snapshot, read_tidy(out, "results", (*KEY, "value")))
            console.print(f"{name:12s} {' '.join(f'{k}={v}' for k, v in variables.items()) or '(as is)'}: "
                          f"{time.perf_counter() - start:.0f} s, largest move {moves[name].max():.3g}")  # fmt: skip
    table = pd.DataFrame(moves)
    table["band"] = args.factor * table.max(axis=1)
    show = Table(title=f"largest |move| per method and metric under each setting; band = {args.factor:g} × max")
    for column in ("method", "metric", *table.columns):
        show.add_column(column)
    for (method, metric), row in table.iterrows():
        show.add_row(method, metric, *(f"{v:.2g}" for v in row))
    console.print(show)
    per_method = table.drop(columns="band").groupby(level="method").max()
    console.print("largest move per method and setting:\n" + per_method.to_string(float_format="{:.2g}".format))
    if args.write:
        path = sidecar_path(args.against)
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["environment"] = merged_environment(doc.get("environment", {}), table.drop(columns="band").max(axis=1),
                                                args.factor, this_machine())
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
        console.print(f"wrote the environment band into {path}")


if __name__ == "__main__":
    main()
