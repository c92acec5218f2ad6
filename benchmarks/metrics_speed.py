"""Speed and memory of ``fsas_bench.metrics.evaluate`` against a straightforward exact AUPRO (issue #2).

The case of spec metrics.md §9: 200 float32 maps of 256×256 (13.1 M pixels), ~60 % of the images with
1–3 ellipse or rectangle defects, maps = smoothed noise + smoothed mask × strength.

The reference computes AUPRO alone the plain way: label each mask, give every pixel its FPR weight (1/N₀)
and PRO weight (1/(R·|r|)), argsort all scores, take cumulative sums, keep the last index of each run of
equal scores, integrate to the limit. ``evaluate`` computes all seven metrics, labelling included.

Usage: python benchmarks/metrics_speed.py [--images 200] [--size 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import ctypes
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from fsas_bench.metrics import GroundTruthRegions, evaluate

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def synthetic_category(n_images: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) image scores, (N, size, size) float32 maps and uint8 0/255 masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n_images, size, size), dtype=np.uint8)
    maps = np.empty((n_images, size, size), dtype=np.float32)
    for i in range(n_images):
        if rng.random() < 0.6:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(0.1, 0.9, 2) * size
                ry, rx = rng.uniform(0.02, 0.12, 2) * size
                if rng.random() < 0.5:
                    shape = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
                else:
                    shape = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
                masks[i][shape] = 255
        noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), 4)
        signal = ndimage.gaussian_filter(masks[i] / 255.0, 3) * rng.uniform(0.05, 0.4)
        maps[i] = noise + signal
    scores = maps.reshape(n_images, -1).max(axis=1)
    return scores, maps, masks


def reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """AUPRO the straightforward way: per-pixel weights, one argsort, cumulative sums, trapezoid to the limit."""
    labels = np.zeros(masks.shape, dtype=np.int64)
    sizes = []
    for i, mask in enumerate(masks):
        image_labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3)))
        labels[i] = np.where(image_labels > 0, image_labels + len(sizes), 0)
        sizes += [int((image_labels == r).sum()) for r in range(1, n + 1)]
    fp_weight = (labels == 0) / np.count_nonzero(labels == 0)
    pro_weight = np.concatenate([[0.0], 1.0 / (len(sizes) * np.array(sizes))])[labels]
    order = np.argsort(maps, axis=None)[::-1]
    sorted_scores = maps.ravel()[order]
    last = np.append(np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1)
    fpr = np.concatenate([[0.0], np.cumsum(fp_weight.ravel()[order])[last]])
    pro = np.concatenate([[0.0], np.cumsum(pro_weight.ravel()[order])[last]])
    inside = fpr <= fpr_limit
    area = np.trapezoid(pro[inside], fpr[inside])
    k = np.count_nonzero(inside)
    if k < fpr.size and fpr[k - 1] < fpr_limit:
        pro_limit = pro[k - 1] + (pro[k] - pro[k - 1]) * (fpr_limit - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
        area += (fpr_limit - fpr[k - 1]) * (pro[k - 1] + pro_limit) / 2
    return area / fpr_limit


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of ``repeats`` runs, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def peak_extra_memory(fn: Callable[[], Any]) -> int:
    """Bytes by which the resident set's high-water mark rises above its current size while ``fn`` runs.

    Linux/glibc: buffers of 64 KiB or more are mmap'd and unmapped when freed, so memory that earlier runs
    freed is not silently reused and every buffer ``fn`` holds shows up in the resident set.
    """

    def status(field: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

    libc = ctypes.CDLL(None)
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 16)
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = status("VmRSS:")
    fn()
    return status("VmHWM:") - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    scores, maps, masks = synthetic_category(args.images, args.size)
    labels = (masks.reshape(len(masks), -1) > 0).any(axis=1)
    regions = GroundTruthRegions.from_masks(masks)
    print(
        f"case: {args.images} maps of {args.size}x{args.size} float32 ({maps.size / 1e6:.1f} M pixels, "
        f"{maps.nbytes / 2**20:.0f} MiB), {labels.mean():.0%} defective, {regions.num_regions} regions, "
        f"{regions.num_defect_pixels / maps.size:.1%} defect pixels"
    )
    evaluate(scores, labels, maps, masks)  # warm-up
    t_eval, result = best_time(lambda: evaluate(scores, labels, maps, masks), args.repeats)
    t_cached, _ = best_time(lambda: evaluate(scores, labels, maps, masks, regions=regions), args.repeats)
    t_ref, ref = best_time(lambda: reference_aupro(maps, masks), args.repeats)
    peak = peak_extra_memory(lambda: evaluate(scores, labels, maps, masks))
    peak_cached = peak_extra_memory(lambda: evaluate(scores, labels, maps, masks, regions=regions))

    print("metrics: " + ", ".join(f"{k} {v:.6f}" for k, v in result.items()))
    print(f"AUPRO evaluate - reference: {result['AUPRO'] - ref:+.2e}")
    print(f"times: best of {args.repeats} runs, {torch.get_num_threads()} threads")
    print(f"evaluate, all seven metrics (masks labelled):  {t_eval:.3f} s")
    print(f"evaluate, all seven metrics (cached regions):  {t_cached:.3f} s")
    print(f"straightforward exact AUPRO alone (reference): {t_ref:.3f} s")
    print(f"speed-up: {t_ref / t_eval:.1f}x (cached regions: {t_ref / t_cached:.1f}x)")
    for name, extra in (("masks labelled", peak), ("cached regions", peak_cached)):
        print(
            f"peak memory above inputs ({name}): {extra / 2**20:.0f} MiB = {extra / maps.nbytes:.2f}x the maps "
            f"({extra / maps.size:.1f} B/pixel)"
        )


if __name__ == "__main__":
    main()
