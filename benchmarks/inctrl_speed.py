"""InCTRL speed: per-query scoring time at k = 1, 2, 4 and the training step time (batch 16, 8 + 8).

Every image is encoded once (the encode-once cache; the encoding cost per image is printed separately);
queries and training episodes are then scored from cached features: M is one batched matmul per query batch
(no per-patch loops), text prototypes are encoded once per category. Defaults: the embedded benchmark on
``fsas-tiny``; ``--backbone ViT-B-16-plus-240`` (random weights) gives InCTRL's real sizes (15×15 patches,
896 channels, 640-d embedding).

Usage: python benchmarks/inctrl_speed.py [--backbone ViT-B-16-plus-240] [--device cuda] [--category tile]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import lightning as L
import torch

from fsas_bench.backbones import FeatureCache, load_backbone
from fsas_bench.data.datamodule import FSASDataModule
from fsas_bench.data.registry import load_dataset
from fsas_bench.methods.inctrl.config import InCTRLConfig
from fsas_bench.methods.inctrl.lightning_module import InCTRL

SHOTS = (1, 2, 4)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="fsas-tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--category", default="tile", help="embedded synthetic category scored")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per k")
    parser.add_argument("--aux-categories", default="", help="auxiliary categories trained on (default: all)")
    args = parser.parse_args()
    backbone = load_backbone(args.backbone, None, device=args.device, allow_random=True)
    cache = FeatureCache(backbone)
    target, auxiliary = load_dataset("synthetic", None), load_dataset("synthetic-aux", None)
    if args.aux_categories:  # the step time does not depend on the pool size; fewer images encode faster
        kept = tuple(args.aux_categories.split(","))
        auxiliary = dataclasses.replace(
            auxiliary, categories=kept, samples=tuple(s for s in auxiliary.samples if s.category in kept)
        )
    query = target.split(args.category, "test")
    references = target.normal_train(args.category)[: max(SHOTS)]
    method = InCTRL(InCTRLConfig(), cache).to(args.device).eval()
    print(f"backbone {backbone.arch} ({backbone.pretrained}) on {args.device}: grid {backbone.grid}, "
          f"width {backbone.width}, blocks {method.blocks}, {len(query)} queries of '{args.category}'")  # fmt: skip

    data = FSASDataModule(query, references, batch_size=8)
    start = time.perf_counter()
    batches = list(data.predict_dataloader())
    for batch in batches:
        method.features(batch, method.names)
    _sync(args.device)
    print(f"encoding: {1000 * (time.perf_counter() - start) / len(query):.1f} ms per image (once per run)")
    support = list(data.support_dataloader())
    with torch.no_grad():
        for shot in SHOTS:
            refs = [{k: v[:shot] for k, v in support[0].items()}]
            method.set_support(refs, args.category)
            method.predict_step(batches[0], 0)  # warm-up
            _sync(args.device)
            start = time.perf_counter()
            for i, batch in enumerate(batches):
                method.predict_step(batch, i)
            _sync(args.device)
            ms = 1000 * (time.perf_counter() - start) / len(query)
            print(f"k={shot}: {ms:.2f} ms per query (batch 8, cached features)")

    pool = FSASDataModule(auxiliary.samples, [], batch_size=8).predict_dataloader()
    for batch in pool:  # encode the auxiliary images once, so that steps are timed from cached features
        method.features(batch, method.names)
    for shot in SHOTS:
        L.seed_everything(0, verbose=False)
        trainee = InCTRL(InCTRLConfig(epochs=1, steps_per_epoch=args.steps), cache)
        trainee.fit_auxiliary(auxiliary, target, shot)  # warm-up
        _sync(args.device)
        start = time.perf_counter()
        trainee.fit_auxiliary(auxiliary, target, shot)
        _sync(args.device)
        print(f"training k={shot}: {1000 * (time.perf_counter() - start) / args.steps:.1f} ms per step "
              f"(16 queries + {16 * shot} prompts, Lightning loop included)")  # fmt: skip


if __name__ == "__main__":
    main()
