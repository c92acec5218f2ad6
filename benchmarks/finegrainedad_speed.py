"""PromptAD / FineGrainedAD: per-category training time at k = 1, 2, 4 and per-query inference time.

For each method and k, the k references of an embedded synthetic category are fitted with the released
schedule (default 100 epochs; ``--epochs`` to change it). Backbone features of the shots (memory taps, V-V
tokens) and, for FineGrainedAD, the high-resolution tiles are encoded once beforehand and reported
separately, since the sweep's encode-once cache serves them across cells. Training then reuses those frozen
tokens and precomputed prompt token embeddings; each epoch is one vectorised step over all prompts and
shots. Inference is timed per query (one at a time, features cached), with the backbone encode reported
separately.

Usage: python benchmarks/finegrainedad_speed.py [--backbone fsas-tiny] [--pretrained fsas-synthetic]
       [--device cpu] [--epochs 100] [--category capsule] [--queries 16]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from fsas_bench.backbones import FeatureCache, load_backbone
from fsas_bench.data.datamodule import image_sha
from fsas_bench.data.registry import load_dataset
from fsas_bench.methods import get_method
from fsas_bench.methods.finegrainedad.hires import hires_vv_tokens


def _batch(samples: list) -> dict[str, list[str]]:
    return {"path": [str(s.image_path) for s in samples], "sha": [image_sha(s.image_path) for s in samples]}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="fsas-tiny")
    parser.add_argument("--pretrained", default="fsas-synthetic", help="weights tag/file, or 'none' (random)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--category", default="capsule")
    parser.add_argument("--queries", type=int, default=16)
    args = parser.parse_args()
    backbone = load_backbone(args.backbone, args.pretrained, device=args.device, allow_random=True)
    index = load_dataset("synthetic", None)
    train, test = index.normal_train(args.category), index.split(args.category, "test")[: args.queries]
    cache = FeatureCache(backbone)
    print(f"{args.backbone} ({backbone.pretrained}) on {args.device}, {torch.get_num_threads()} threads, "
          f"category {args.category}, {args.epochs} epochs")  # fmt: skip
    header = ("method", "k", "encode s", "fit s", "fit ms/epoch", "infer ms/query", "encode ms/query")
    print("{:14} {:>2} {:>9} {:>7} {:>13} {:>15} {:>16}".format(*header))
    for name in ("promptad", "finegrainedad"):
        cls = get_method(name)
        config = replace(cls.config_cls.for_dataset("synthetic"), epochs=args.epochs, hires_factor=4)
        for k in (1, 2, 4):
            support = _batch(train[:k])
            method = cls(config, cache)
            _sync(args.device)
            start = time.perf_counter()
            method.features(support, method.names)
            if config.mfsc_levels == "full":
                for path, sha in zip(support["path"], support["sha"], strict=True):
                    hires_vv_tokens(backbone, path, sha, config.hires_factor)
            _sync(args.device)
            encode = time.perf_counter() - start
            start = time.perf_counter()
            method.set_support([support], args.category)
            _sync(args.device)
            fit = time.perf_counter() - start
            queries = [_batch([s]) for s in test]
            start = time.perf_counter()
            for q in queries:
                method.features(q, method.names)
            _sync(args.device)
            query_encode = (time.perf_counter() - start) / len(queries)
            start = time.perf_counter()
            with torch.inference_mode():
                for i, q in enumerate(queries):
                    method.predict_step(q, i)
            _sync(args.device)
            infer = (time.perf_counter() - start) / len(queries)
            print(f"{name:14} {k:>2} {encode:>9.2f} {fit:>7.2f} {1000 * fit / args.epochs:>13.1f} "
                  f"{1000 * infer:>15.1f} {1000 * query_encode:>16.1f}")  # fmt: skip
            cache.clear_memory()


if __name__ == "__main__":
    main()
