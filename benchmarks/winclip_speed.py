"""WinCLIP speed on the embedded benchmark: per-image time at k=0 and k=4, and image-tower passes per query.

Every image is encoded once per run (full image + all 2×2 and 3×3 windows in one batched pass through the
image tower); queries are then scored from the cache at every shot and seed. Prints the encoding cost per
image, the scoring cost per query at k=0 and k=4, and the backbone calls per query image.

Usage: python benchmarks/winclip_speed.py [--categories capsule,tile]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from fsas_bench.backbones.clip import sliding_windows
from fsas_bench.runner.sweep import Sweep, SweepSpec
from fsas_bench.runner.tasks import cache_totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", default="", help="comma-separated synthetic categories (default: all)")
    args = parser.parse_args()
    categories = tuple(c for c in args.categories.split(",") if c)
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Sweep(SweepSpec(out=Path(tmp), methods=("winclip",), categories=categories, shots=(0, 4), seeds=(0,)))
        backbone = sweep.backbone
        n_windows = sum(sliding_windows(backbone.grid, s).shape[0] for s in (2, 3))
        image = torch.zeros(1, 3, backbone.image_size, backbone.image_size)
        names = ["embedding", "final_tokens", "window2", "window3"]
        backbone.encode(image, names)  # warm-up
        start = time.perf_counter()
        for _ in range(5):
            backbone.encode(image, names)
        encode_ms = (time.perf_counter() - start) / 5 * 1000
        passes = []
        hook = backbone.model.visual.transformer.register_forward_hook(lambda *_: passes.append(1))
        hits, _, forwards = cache_totals(sweep.run())
        hook.remove()
        timings = pd.read_csv(Path(tmp) / "timings.csv")
        rows = pd.read_csv(Path(tmp) / "results.csv")
        shots = rows.drop_duplicates("job_id").set_index("job_id")["shot"]
        timings["shot"] = timings["job_id"].map(shots)
        queries = int(rows.drop_duplicates("job_id")["n_test"].sum())
        unique_queries = int(rows.drop_duplicates("category")["n_test"].sum())
        print(f"backbone {backbone.arch} ({backbone.pretrained}), grid {backbone.grid}, {n_windows} windows per image")
        print(f"encoding one image (full forward + {n_windows} window sequences): {encode_ms:.1f} ms")
        for shot in (0, 4):
            ms = timings.loc[timings["shot"] == shot, "ms_per_image"].mean()
            print(f"k={shot}: {ms:.1f} ms per query image (first cell of a category includes encoding)")
        print(f"image-tower passes: {len(passes)} for {forwards} encoded images "
              f"({len(passes) / forwards:.1f} per image: full forward + one batched window pass); "
              f"{unique_queries} query images scored {queries} times ({hits} cache hits)")  # fmt: skip


if __name__ == "__main__":
    main()
