"""Scale on CPU with fsas-tiny: time per image and peak RSS over 1, 4 and 15 categories of mvtec-scale; decode
throughput with one vs all decode workers.

1. Writes (once, into --data: a rerun with other --counts or --limit needs another --data) the mvtec-scale
   preset, ``--limit`` images per split and defect type of each category (``fsas-bench synth``; byte-identical
   everywhere).
2. Runs ``fsas-bench run --methods patchknn,winclip`` (k=1, seed 0) as a child process on the first 1, 4 and
   15 categories and reads its wall time and peak RSS (``wait4``): time per image (query and reference images,
   start-up included) and peak RSS, whose ratio from 4 to 15 categories must stay ≤ 1.2 (one category's
   features in memory at a time).
3. Decodes every written image (read + bicubic resize to the backbone input, as the encode pipeline does)
   with 1 and with ``os.cpu_count()`` DataLoader workers: images per second.

Usage: python benchmarks/scale.py [--limit 1] [--data /tmp/fsas-mvtec-scale] [--counts 1,4,15]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fsas_bench.backbones import load_backbone
from fsas_bench.backbones.pipeline import decoded_batches
from fsas_bench.data.formats import read_image_rgb
from fsas_bench.data.synthetic.scale import MVTEC_SCALE, write_scale_preset
from fsas_bench.errors import UserError

RSS_FLAT = 1.2


def run_categories(data: Path, categories: list[str], out: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one ``fsas-bench run`` child over ``categories``."""
    command = [sys.executable, "-m", "fsas_bench.cli", "run", "--data-root", str(data), "--datasets", "mvtec",
               "--categories", ",".join(categories), "--methods", "patchknn,winclip", "--shots", "1", "--seeds",
               "0", "--save-examples", "0", "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"fsas-bench run failed: {child.stderr.read().decode() if child.stderr else ''}")
    return wall, usage.ru_maxrss * 1024


def images_of(data: Path, categories: list[str]) -> list[Path]:
    """Every image (train and test) the preset wrote for ``categories``."""
    return sorted(p for c in categories for p in (data / "mvtec" / c).glob("t*/*/*.png"))


def decode_rate(paths: list[Path], workers: int) -> float:
    """Images per second decoded and resized to the fsas-tiny input by ``workers`` DataLoader workers."""
    transform = load_backbone("fsas-tiny", None).transform()
    start = time.perf_counter()
    count = sum(batch.shape[0] for batch in decoded_batches(paths, read_image_rgb, transform, 8, workers))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1, help="images per split and defect type (default 1)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "fsas-mvtec-scale")
    parser.add_argument("--counts", default="1,4,15", help="numbers of categories to run (default 1,4,15)")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    names = list(MVTEC_SCALE)[: max(counts)]
    start = time.perf_counter()
    try:
        written = write_scale_preset("mvtec-scale", args.data, names, args.limit)
    except UserError as err:  # e.g. --data holds another request: one line, as the CLI says it
        raise SystemExit(f"scale.py: {err}") from None
    what = f"{written} images written in {time.perf_counter() - start:.1f} s" if written else "written by an earlier run"
    print(f"mvtec-scale, --limit {args.limit}, under {args.data}: {what}")
    rss = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            images = len(images_of(args.data, names[:n]))
            wall, rss[n] = run_categories(args.data, names[:n], Path(tmp) / f"run{n}")
            print(f"{n:>2} categories: {images:>4} images, {wall:7.1f} s, {1000 * wall / images:7.0f} ms/image "
                  f"(patchknn + winclip, start-up included), peak RSS {rss[n] / 2**20:7.0f} MiB")  # fmt: skip
    if 4 in rss and 15 in rss:
        ratio = rss[15] / rss[4]
        print(f"peak RSS 15 / 4 categories: {ratio:.3f} (target <= {RSS_FLAT}: {'met' if ratio <= RSS_FLAT else 'MISSED'})")
    paths = images_of(args.data, names)
    every = os.cpu_count() or 1
    one, many = decode_rate(paths, 1), decode_rate(paths, every)
    print(f"decode + resize of {len(paths)} images: 1 worker {one:.1f} img/s, {every} workers {many:.1f} img/s "
          f"({many / one:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
