"""How long the progress display of a sweep stands still: the longest gap between two display updates.

Runs a sweep through the same callbacks the CLI's progress display uses (cells finished, training phase
updates) and prints the longest gaps and what ran in them. Target (hardening issue): on the embedded benchmark
the display never stands still for more than ~10 s.

    python benchmarks/progress_gaps.py                      # the whole embedded benchmark (~4 min on 2 cores)
    python benchmarks/progress_gaps.py --methods inctrl,dictas --shots 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fsas_bench.progress import PhaseUpdate
from fsas_bench.runner.sweep import Sweep, SweepSpec
from fsas_bench.runner.tasks import CellOutcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="", help="comma-separated (default: all)")
    parser.add_argument("--shots", default="1,2,4")
    parser.add_argument("--top", type=int, default=5, help="how many of the longest gaps to print")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        spec = SweepSpec(out=Path(out), methods=tuple(m for m in args.methods.split(",") if m),
                         shots=tuple(int(k) for k in args.shots.split(",")))  # fmt: skip
        sweep = Sweep(spec)
        events: list[tuple[float, str]] = [(time.perf_counter(), "start")]

        def on_cell(outcome: CellOutcome) -> None:
            c = outcome.cell
            events.append((time.perf_counter(), f"cell {c.method} {c.category} k={c.shot} seed={c.seed}"))

        def on_phase(update: PhaseUpdate | None) -> None:
            events.append((time.perf_counter(), "phase over" if update is None else update.description))

        sweep.run(on_cell, on_phase)
    gaps = sorted(((b[0] - a[0], a[1], b[1]) for a, b in zip(events, events[1:])), reverse=True)
    total = events[-1][0] - events[0][0]
    print(f"{len(sweep.cells)} cells, {len(events)} display updates in {total:.1f} s")
    for gap, before, after in gaps[: args.top]:
        print(f"  {gap:6.2f} s between '{before}' and '{after}'")
    print(f"longest gap: {gaps[0][0]:.2f} s (target ≤ ~10 s)")


if __name__ == "__main__":
    main()
