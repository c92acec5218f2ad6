"""DictAS: per-query inference with and without the reference K/V cache, and the training step.

Prints, for k references (default 4) of an embedded synthetic category on a backbone with random weights
(default fsas-tiny; e.g. ``--backbone ViT-L-14-336 --device cuda`` for the paper's size):
1. the per-query time of the DictAS head with the K/V cache (F_K, F_V of the references computed once per
   category and reused) and without it (recomputed for every query, as the official code does), the
   speed-up (target ≥ 5×), and the one-time cost of building the cache; queries are scored one at a time
   (the official batch 1) and their backbone features are cached beforehand, since the backbone's cost is
   the same either way;
2. the training step at batch 24 (backbone encode of queries and references, forward, backward, Adam) and
   the synthesis time of one training pair.

Usage: python benchmarks/dictas_speed.py [--backbone fsas-tiny] [--device cpu] [--k 4] [--queries 16] [--batch 24]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch.utils.data import default_collate

from fsas_bench.backbones import FeatureCache, load_backbone
from fsas_bench.data.datamodule import image_sha
from fsas_bench.data.registry import load_dataset
from fsas_bench.methods.dictas.config import DictASConfig
from fsas_bench.methods.dictas.lightning_module import DictAS
from fsas_bench.methods.dictas.torch_model import text_prototypes
from fsas_bench.methods.dictas.synthesis import texture_source
from fsas_bench.methods.dictas.training_data import SyntheticAnomalyPairs


def _batch(samples: list) -> dict[str, list[str]]:
    return {"path": [str(s.image_path) for s in samples], "sha": [image_sha(s.image_path) for s in samples]}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def inference_ms(method: DictAS, support: dict, queries: list[dict], device: str) -> tuple[float, float]:
    """(cache build ms — the first query's extra time with the cache —, mean ms per query)."""
    method.set_support([support], "tile")
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        method.predict_step(queries[0], 0)
        _sync(device)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for i, query in enumerate(queries):
            method.predict_step(query, i)
        _sync(device)
    per_query = (time.perf_counter() - start) / len(queries)
    return 1000 * (first - per_query), 1000 * per_query


def training_step_s(method: DictAS, batch: dict, steps: int, device: str) -> float:
    """Mean seconds of a training step (after one warm-up step)."""
    optimizer = torch.optim.Adam(method.head.parameters(), lr=1e-4, betas=(0.5, 0.999))
    batch = {k: v.to(device) for k, v in batch.items()}
    times = []
    for _ in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        loss = method.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="fsas-tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--k", type=int, default=4, help="references")
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--batch", type=int, default=24, help="training batch")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*self.log.*")
    backbone = load_backbone(args.backbone, None, device=args.device, allow_random=True)
    cache = FeatureCache(backbone)
    index = load_dataset("synthetic", None)
    support = _batch(index.normal_train("tile")[: args.k])
    queries = [_batch([s]) for s in index.split("tile", "test")[: args.queries]]
    print(f"[{args.backbone} on {args.device}, {backbone.depth} blocks, width {backbone.width}, grid {backbone.grid}]")
    results = {}
    for cached in (True, False):
        method = DictAS(DictASConfig(cache_reference_kv=cached), cache).eval().to(args.device)
        for query in queries:
            method.features(query, method.names)  # backbone features cached for both runs
        results[cached] = inference_ms(method, support, queries, args.device)
    build, with_cache = results[True]
    without = results[False][1]
    print(f"k={args.k}: per query {with_cache:.1f} ms with the K/V cache, {without:.1f} ms without "
          f"(recomputed per query) -> {without / with_cache:.1f}x faster (target >= 5x); cache build {build:.1f} ms")  # fmt: skip

    auxiliary = load_dataset("synthetic-aux", None)
    categories = list(auxiliary.categories)
    pairs = [(s, i) for i, c in enumerate(categories) for s in auxiliary.normal_train(c)]
    config = DictASConfig()
    data = SyntheticAnomalyPairs(
        [s for s, _ in pairs], [i for _, i in pairs], backbone.preprocess, backbone.image_size, texture_source(""),
        config.synthesis,
    )  # fmt: skip
    torch.manual_seed(0)
    start = time.perf_counter()
    batch = default_collate([data[i % len(data)] for i in range(args.batch)])
    synthesis = (time.perf_counter() - start) / args.batch
    method = DictAS(config, cache).train().to(args.device)
    method.train_text = torch.stack([text_prototypes(backbone, c) for c in categories])
    step = training_step_s(method, batch, args.steps, args.device)
    print(f"training step at batch {args.batch}: {step:.2f} s (encode + forward + backward + Adam); "
          f"pair synthesis {1000 * synthesis:.0f} ms per image at {config.work_size}/{config.paste_size} px")  # fmt: skip


if __name__ == "__main__":
    main()
