"""GPU throughput of the encode path: decode alone, encode alone, end to end per method (under 8 minutes).

On one GPU, for random-weight ViT-L-14-336 and ViT-B-16-plus-240 in bf16 (``--precision bf16``, encode batch
32) on a few mvtec-scale categories written on the machine (``fsas-bench synth``, in parallel), prints:

(a) decode throughput alone: images read and resized to the backbone input by all DataLoader workers (img/s);
(b) encode throughput alone: backbone forwards at the fixed encode batch on device-resident inputs (img/s);
(c) end to end for patchknn, winclip, dictas, inctrl and promptad (k=1, seed 0): the unit's images divided by
    the sweep's wall time after its checks (encode ahead, fits, inference, metrics, result files; auxiliary
    training is timed apart and left out), the GPU memory peak, and (c) / min(a, b).

Target: patchknn end to end ≥ 0.7 × min(a, b) and ≥ 500 img/s with ViT-L-14-336 bf16.

The evaluation set is the ``visa`` folder, a link to the written ``mvtec`` tree (VisA's MVTec-style form):
dictas and inctrl then train on ``mvtec`` (their auxiliary set for VisA) with a two-step schedule (speed only).
``--smoke`` runs the same script on CPU with fsas-tiny, one category and a few images (a test keeps it working).

Usage: python benchmarks/gpu.py [--smoke] [--limit 40] [--categories 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fsas_bench.backbones import load_backbone
from fsas_bench.backbones.pipeline import decoded_batches, default_workers
from fsas_bench.data.formats import read_image_rgb
from fsas_bench.data.synthetic.scale import MVTEC_SCALE, write_scale_preset
from fsas_bench.methods import get_method
from fsas_bench.runner import tasks
from fsas_bench.runner.sweep import Sweep, SweepSpec

METHODS = ("patchknn", "winclip", "dictas", "inctrl", "promptad")
SHORT_TRAINING = {
    "dictas": {"epochs": "1", "steps_per_epoch": "2", "data_workers": "0"},
    "inctrl": {"epochs": "1", "steps_per_epoch": "2"},
    "promptad": {"epochs": "2"},
}
SMOKE_TRAINING = {**SHORT_TRAINING, "dictas": {**SHORT_TRAINING["dictas"], "batch_size": "2", "work_size": "128",
                                               "paste_size": "128"}}  # fmt: skip
TARGET_SHARE, TARGET_RATE = 0.7, 500.0


@dataclass(frozen=True)
class Setting:
    """What one invocation measures."""

    device: str
    backbones: tuple[str, ...]
    precision: str
    encode_batch: int
    categories: int  # mvtec-scale categories written (patchknn runs on all, the other methods on the first)
    limit: int  # images per split and defect type
    encode_reps: int  # forwards timed for (b)


GPU = Setting("cuda", ("ViT-L-14-336", "ViT-B-16-plus-240"), "bf16", 32, 3, 40, 20)
SMOKE = Setting("cpu", ("fsas-tiny",), "bf16", 4, 1, 1, 2)


def write_data(root: Path, setting: Setting) -> list[str]:
    """The first categories of mvtec-scale under ``root/mvtec`` (rendered by every CPU; kept when an earlier run
    wrote the same) and the ``visa`` link; the category names."""
    names = list(MVTEC_SCALE)[: setting.categories]
    write_scale_preset("mvtec-scale", root, names, setting.limit, processes=os.cpu_count() or 1)
    if not (root / "visa").is_symlink():
        (root / "visa").symlink_to(root / "mvtec", target_is_directory=True)
    return names


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def decode_rate(paths: list[Path], arch: str, batch: int) -> float:
    """(a): images per second read and transformed by the decode workers a sweep uses by default (no backbone)."""
    transform = load_backbone(arch, None, allow_random=True).transform()
    start = time.perf_counter()
    count = sum(b.shape[0] for b in decoded_batches(paths, read_image_rgb, transform, batch, default_workers()))
    return count / (time.perf_counter() - start)


def encode_rate(arch: str, setting: Setting) -> float:
    """(b): images per second through the backbone at the fixed encode batch (patchknn's features)."""
    backbone = load_backbone(arch, None, device=setting.device, allow_random=True, precision=setting.precision)
    patchknn = get_method("patchknn")
    names = patchknn.feature_names(patchknn.config_cls(), backbone.depth)
    size = backbone.image_size
    images = torch.randn(setting.encode_batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    images = images.to(setting.device)
    backbone.encode(images, names)  # warm-up (kernel selection)
    synchronize(setting.device)
    start = time.perf_counter()
    for _ in range(setting.encode_reps):
        backbone.encode(images, names)
    synchronize(setting.device)
    return setting.encode_batch * setting.encode_reps / (time.perf_counter() - start)


def release_previous_worker(device: str) -> None:
    """Free the backbone the runner's in-process worker still holds from the previous sweep (and, on a GPU,
    its cached blocks), so that the next sweep's memory peak counts only its own."""
    tasks._WORKER = None
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def end_to_end(root: Path, out: Path, arch: str, method: str, categories: list[str], setting: Setting,
               training: dict[str, dict[str, str]]) -> tuple[float, int, float, float | None]:  # fmt: skip
    """(c) for one method: img/s, images, auxiliary training seconds (left out), GPU memory peak (MiB, of this
    sweep alone: the previous sweep's worker and backbone are freed first)."""
    release_previous_worker(setting.device)
    spec = SweepSpec(out=out, methods=(method,), datasets=("visa",), categories=tuple(categories), shots=(1,),
                     seeds=(0,), data_root=root, backbone=arch, pretrained="none", device=setting.device,
                     allow_random_weights=True, precision=setting.precision, encode_batch=setting.encode_batch,
                     overrides={method: training[method]} if method in training else {},
                     save_examples=0)  # fmt: skip
    sweep = Sweep(spec)
    images = sum(len(sweep.plan.unit_samples(unit)) for unit in sweep.plan.units)
    if setting.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    synchronize(setting.device)
    start = time.perf_counter()
    outcomes = sweep.run()
    synchronize(setting.device)
    wall = time.perf_counter() - start
    train = sum(float(o.timing.get("time_train_s") or 0.0) for o in outcomes)
    peak = torch.cuda.max_memory_allocated() / 2**20 if setting.device.startswith("cuda") else None
    return images / max(wall - train, 1e-9), images, train, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, fsas-tiny, one category, a few images")
    parser.add_argument("--limit", type=int, help="images per split and defect type (default 40; smoke 1)")
    parser.add_argument("--categories", type=int, help="mvtec-scale categories written (default 3; smoke 1)")
    parser.add_argument("--out", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    setting = SMOKE if args.smoke else GPU
    if args.limit or args.categories:
        setting = Setting(**{**setting.__dict__, "limit": args.limit or setting.limit,
                             "categories": args.categories or setting.categories})  # fmt: skip
    if setting.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU is visible: run on a GPU machine, or pass --smoke for the CPU check")
    training = SMOKE_TRAINING if args.smoke else SHORT_TRAINING
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        start = time.perf_counter()
        categories = write_data(work / "data", setting)
        paths = sorted((work / "data" / "mvtec").rglob("t*/*/*.png"))
        print(f"device {setting.device} ({torch.cuda.get_device_name() if setting.device == 'cuda' else 'CPU'}), "
              f"{setting.precision}, encode batch {setting.encode_batch}, {os.cpu_count()} CPUs; mvtec-scale "
              f"{', '.join(categories)}: {len(paths)} images written in {time.perf_counter() - start:.1f} s")  # fmt: skip
        for arch in setting.backbones:
            decode = decode_rate(paths, arch, setting.encode_batch)
            encode = encode_rate(arch, setting)
            bound = min(decode, encode)
            print(f"\n{arch} {setting.precision}: (a) decode {decode:.1f} img/s, (b) encode {encode:.1f} img/s")
            for method in METHODS:
                used = categories if method == "patchknn" else categories[:1]
                out = work / "runs" / f"{arch}-{method}"
                rate, images, train, peak = end_to_end(work / "data", out, arch, method, used, setting, training)
                memory = "n/a (CPU)" if peak is None else f"{peak:.0f} MiB"
                trained = f", auxiliary training {train:.1f} s left out" if train else ""
                print(f"  (c) {method:<9} {rate:8.1f} img/s over {images:>4} images, (c)/min(a,b) {rate / bound:.2f}, "
                      f"GPU memory peak {memory}{trained}")  # fmt: skip
                if method == "patchknn" and arch == "ViT-L-14-336":
                    met = rate >= TARGET_SHARE * bound and rate >= TARGET_RATE
                    print(f"  target patchknn >= {TARGET_SHARE} x min(a,b) = {TARGET_SHARE * bound:.1f} and >= "
                          f"{TARGET_RATE:.0f} img/s: {'met' if met else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
