"""Time what ``--save-examples`` adds to each cell: ``save_pictures`` on a real synthetic category's test split.

Uses the category's real masks and image scores/maps of the same shape as a method's (seeded noise plus the
defects), then times the curves of every cell and the example maps of a seed-0 cell (median of repeats, wall
and process CPU seconds; the category's examples.npz, written once per run, only in the first repeat). Multiply by the embedded benchmark's cells (270, of which 90 seed 0) for its total.

    python benchmarks/pictures_overhead.py [--category capsule] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fsas_bench.data.registry import load_dataset
from fsas_bench.metrics import GroundTruthRegions
from fsas_bench.metrics.frame import EvalFrame
from fsas_bench.runner.grid import Cell
from fsas_bench.runner.pictures import DEFAULT_EXAMPLES, save_pictures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default="capsule")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    query = load_dataset("synthetic", None).split(args.category, "test")
    masks = EvalFrame().masks(query)
    regions = GroundTruthRegions.from_masks(masks)
    rng = np.random.default_rng(0)
    maps = torch.from_numpy((rng.normal(size=masks.shape) + masks).astype(np.float32))
    labels = np.array([s.label for s in query])
    scores = torch.from_numpy(rng.normal(size=len(query)) + labels)
    for seed in (1, 0):  # seed 1: curves only; seed 0: curves and the example maps
        walls, cpus = [], []
        with tempfile.TemporaryDirectory() as out:  # the category's examples are written once, as in a run
            for repeat in range(args.repeats):
                cell = Cell("m", "synthetic", args.category, 1, seed)
                wall, cpu = time.perf_counter(), time.process_time()
                save_pictures(Path(out), DEFAULT_EXAMPLES, cell, f"job{repeat}", query, scores, labels, maps, masks,
                              regions)  # fmt: skip
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
        print(f"seed {seed} cell ({len(query)} images of {tuple(masks.shape[1:])}): "
              f"{1000 * statistics.median(walls):.1f} ms wall, {1000 * statistics.median(cpus):.1f} ms CPU")  # fmt: skip


if __name__ == "__main__":
    main()
