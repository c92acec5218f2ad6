"""Executor overhead and the parallelism a cluster can use.

1. The same sweep (default: the whole embedded benchmark) with ``--executor local`` and ``--executor ray``
   (a local Ray instance started by the run, as many workers as CPUs): both wall times — Ray's includes starting
   the instance and its workers, each loading the backbone — their ratio (target ≤ 1.3× on 2 cores), and
   whether the two results.csv are byte-identical (they must be).
2. The task graph of the real comparison (every method × MVTec AD + VisA + BTAD + MPDD × shots 1, 2, 4 × seeds
   0, 1, 2), from the plan of a stand-in data root with the datasets' official category names and layouts
   (a few tiny images per category: the real data is not needed for the graph's shape): trainings, units,
   width (tasks that can run at once) and critical path (longest chain of dependent tasks).

Usage: python benchmarks/executor_overhead.py [--methods all] [--shots 1,2,4] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fsas_bench.backbones.registry import default_pretrained
from fsas_bench.runner.sweep import Sweep, SweepSpec

REAL_CATEGORIES = {
    "mvtec": ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
              "tile", "toothbrush", "transistor", "wood", "zipper"),
    "visa": ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3",
             "pcb4", "pipe_fryum"),
    "btad": ("01", "02", "03"),
    "mpdd": ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"),
}  # fmt: skip


def timed(spec: SweepSpec) -> float:
    """Wall time of preparing and running ``spec`` (what ``fsas-bench run`` does before the leaderboards)."""
    start = time.perf_counter()
    Sweep(spec).run()
    return time.perf_counter() - start


def stand_in_root(root: Path) -> Path:
    """MVTec-style trees of the four datasets with their category names: 4 normal training images, one normal
    and one anomalous test image (with its mask) per category, 16 × 16 px."""
    rng = np.random.default_rng(0)
    for dataset, categories in REAL_CATEGORIES.items():
        for category in categories:
            folder = root / dataset / category
            for rel in [f"train/good/{i}.png" for i in range(4)] + ["test/good/0.png", "test/defect/0.png"]:
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / rel)
            mask = np.zeros((16, 16), dtype=np.uint8)
            mask[4:8, 4:8] = 255
            (folder / "ground_truth/defect").mkdir(parents=True)
            Image.fromarray(mask).save(folder / "ground_truth/defect/0_mask.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="", help="comma-separated (default: all)")
    parser.add_argument("--shots", default="1,2,4")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    grid = {"methods": tuple(m for m in args.methods.split(",") if m), "pretrained": default_pretrained("fsas-tiny"),
            "shots": tuple(int(k) for k in args.shots.split(",")), "seeds": tuple(int(s) for s in args.seeds.split(","))}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        local = timed(SweepSpec(out=tmp / "local", **grid))
        ray = timed(SweepSpec(out=tmp / "ray", executor="ray", **grid))
        same = (tmp / "local/results.csv").read_bytes() == (tmp / "ray/results.csv").read_bytes()
        cells = len(Sweep(SweepSpec(out=tmp / "local", **grid)).cells)
        real = {"shots": (1, 2, 4), "seeds": (0, 1, 2), "datasets": tuple(REAL_CATEGORIES)}
        graph = Sweep(SweepSpec(out=tmp / "real", data_root=stand_in_root(tmp / "data"), **real)).plan.graph()
    print(f"embedded sweep: {cells} cells (methods {args.methods or 'all'}; shots {args.shots}; seeds {args.seeds})")
    print(f"local executor: {local:.1f} s; ray executor (local instance started by the run): {ray:.1f} s; "
          f"ratio {ray / local:.2f} (target ≤ 1.3)")  # fmt: skip
    print(f"results.csv byte-identical: {same}")
    kinds = [t["kind"] for t in graph["tasks"]]
    print(f"real comparison (all methods × {', '.join(REAL_CATEGORIES)} × shots 1,2,4 × seeds 0,1,2): "
          f"{graph['cells']} cells in {len(kinds)} tasks ({kinds.count('train')} trainings, {kinds.count('unit')} "
          f"units); width {graph['width']}, critical path {graph['depth']} tasks")  # fmt: skip


if __name__ == "__main__":
    main()
