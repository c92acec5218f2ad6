"""Encode-once cache: backbone forwards vs unique images, and sweep time vs a single cell.

Prints, for the embedded benchmark with patch-kNN:
1. the backbone forwards of a 3-shot × 3-seed sweep on the tiny backbone, against the number of unique images
   the sweep touches (queries + every reference of every manifest);
2. with a real-size architecture whose encoding dominates (ViT-B-16, random weights, 224 px), the wall time
   of the 3-shot × 3-seed sweep divided by that of the single (shot 1, seed 0) cell run alone — each timed
   as a whole run (building the backbone, indexing, evaluating, writing leaderboards), as a user runs
   them — and the ratio a sweep without the cache would have (every cell re-encoding its images).

Usage: python benchmarks/feature_cache.py [--categories hex_nut,tile]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fsas_bench.data.manifests import support_samples
from fsas_bench.runner.leaderboard import write_leaderboards
from fsas_bench.runner.sweep import Sweep, SweepSpec
from fsas_bench.runner.tasks import cache_totals


def _sweep(out: Path, shots: tuple[int, ...], seeds: tuple[int, ...], categories: tuple[str, ...], **kw) -> Sweep:
    return Sweep(SweepSpec(out=out, methods=("patchknn",), shots=shots, seeds=seeds, categories=categories, **kw))


def unique_images(sweep: Sweep) -> int:
    """Distinct image files the sweep's cells read (queries and references)."""
    paths = set()
    for cell in sweep.cells:
        index = sweep.indexes[cell.dataset]
        paths |= {s.image_path for s in index.split(cell.category, "test")}
        manifest = sweep.manifests[(cell.dataset, cell.shot, cell.seed)]
        paths |= {s.image_path for s in support_samples(manifest, index, cell.category)}
    return len(paths)


def timed_run(out: Path, shots: tuple[int, ...], seeds: tuple[int, ...], categories: tuple[str, ...]) -> tuple[float, Sweep, int]:
    """Wall time of a whole ViT-B-16 run (what ``fsas-bench run`` does), its sweep and its backbone forwards."""
    start = time.perf_counter()
    sweep = _sweep(out, shots, seeds, categories, backbone="ViT-B-16", allow_random_weights=True)
    forwards = cache_totals(sweep.run())[2]
    write_leaderboards(out)
    return time.perf_counter() - start, sweep, forwards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", default="", help="comma-separated synthetic categories (default: all)")
    args = parser.parse_args()
    categories = tuple(c for c in args.categories.split(",") if c)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sweep = _sweep(tmp / "tiny", (1, 2, 4), (0, 1, 2), categories)
        hits, _, forwards = cache_totals(sweep.run())
        print(f"[tiny] cells {len(sweep.cells)}, unique images {unique_images(sweep)}, "
              f"backbone forwards {forwards}, cache hits {hits}")  # fmt: skip

        t_single, single, single_forwards = timed_run(tmp / "single", (1,), (0,), categories)
        t_full, full, full_forwards = timed_run(tmp / "full", (1, 2, 4), (0, 1, 2), categories)
        uncached = t_single * len(full.cells) / len(single.cells)
        print(f"[ViT-B-16] single (shot 1, seed 0) run: {t_single:.1f} s, {len(single.cells)} cells, "
              f"{single_forwards} forwards")  # fmt: skip
        print(f"[ViT-B-16] 3-shot × 3-seed sweep: {t_full:.1f} s, {full_forwards} forwards for "
              f"{unique_images(full)} unique images")  # fmt: skip
        print(f"sweep / single time ratio: {t_full / t_single:.2f} (target ≤ 1.5; without the cache ≈ "
              f"{uncached / t_single:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
