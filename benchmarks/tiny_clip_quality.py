"""fsas-tiny-clip quality gates: the trained weights against the seeded random weights of the same arch.

Prints, on the embedded `synthetic` evaluation set (its test split; pretraining renders other instances):
1. zero-shot category classification top-1, prompts "a photo of a {noun}" (gate: >= 80 %);
2. zero-shot normal-vs-anomalous I-AUROC: the registered WinCLIP at k = 0, whose image score is the prompt
   ensemble's softmax(cos / 0.07) (7 normal × 4 anomalous states × 22 templates), mean over categories
   (gate: >= 0.75), with its P-AUROC for information;
3. patchknn P-AUROC, mean over manifest seeds of the category mean, per shot and overall
   (gate: trained >= random).

Usage: python benchmarks/tiny_clip_quality.py [--pretrained fsas-synthetic|FILE] [--shots 1,2,4] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from fsas_bench.backbones import TINY_ARCH, load_backbone
from fsas_bench.data.registry import load_dataset
from fsas_bench.pretrain.quality import category_top1
from fsas_bench.runner.leaderboard import load_results
from fsas_bench.runner.sweep import Sweep, SweepSpec

TOP1_GATE = 0.80
AUROC_GATE = 0.75


def sweep_rows(pretrained: str | None, method: str, shots: tuple[int, ...], seeds: tuple[int, ...]) -> pd.DataFrame:
    """Tidy result rows of one method on the embedded set."""
    with tempfile.TemporaryDirectory() as tmp:
        Sweep(SweepSpec(out=Path(tmp), methods=(method,), shots=shots, seeds=seeds, pretrained=pretrained)).run()
        return load_results(Path(tmp) / "results.csv")


def seed_mean(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Per shot: the mean over seeds of the category mean of ``metric``."""
    selected = rows[rows["metric"] == metric]
    return selected.groupby(["shot", "seed"])["value"].mean().groupby("shot").mean()


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", default="fsas-synthetic", help="weights to judge (tag or file)")
    parser.add_argument("--shots", default="1,2,4", help="patchknn shots (default 1,2,4)")
    parser.add_argument("--seeds", default="0,1,2", help="patchknn manifest seeds (default 0,1,2)")
    args = parser.parse_args()
    shots = tuple(int(s) for s in args.shots.split(","))
    seeds = tuple(int(s) for s in args.seeds.split(","))
    index = load_dataset("synthetic", None)
    weights = {"trained": args.pretrained, "random": None}
    n_test = sum(len(index.split(c, "test")) for c in index.categories)
    print(f"fsas-tiny-clip quality gates (trained = {args.pretrained}, random = seeded random weights)")

    top1 = {name: category_top1(load_backbone(TINY_ARCH, tag), index) for name, tag in weights.items()}
    print(f"1. zero-shot category top-1 on {n_test} synthetic test images: trained {100 * top1['trained']:.1f} %, "
          f"random {100 * top1['random']:.1f} % (gate >= {100 * TOP1_GATE:.0f} %) {verdict(top1['trained'] >= TOP1_GATE)}")

    winclip = {name: sweep_rows(tag, "winclip", (0,), (0,)) for name, tag in weights.items()}
    image = {name: float(seed_mean(rows, "I-AUROC")[0]) for name, rows in winclip.items()}
    pixel = {name: float(seed_mean(rows, "P-AUROC")[0]) for name, rows in winclip.items()}
    print(f"2. zero-shot I-AUROC (WinCLIP k=0, prompt ensemble), mean of {len(index.categories)} categories: trained "
          f"{image['trained']:.3f}, random {image['random']:.3f} (gate >= {AUROC_GATE}) "
          f"{verdict(image['trained'] >= AUROC_GATE)}; P-AUROC trained {pixel['trained']:.3f}, random {pixel['random']:.3f}")
    per_category = {
        name: rows[rows["metric"] == "I-AUROC"].groupby("category")["value"].mean() for name, rows in winclip.items()
    }
    for category in index.categories:
        print(f"   {category:<14} trained {per_category['trained'][category]:.3f}  "
              f"random {per_category['random'][category]:.3f}")

    knn = {name: seed_mean(sweep_rows(tag, "patchknn", shots, seeds), "P-AUROC") for name, tag in weights.items()}
    overall = {name: float(np.mean(values.to_numpy())) for name, values in knn.items()}
    print(f"3. patchknn P-AUROC (shots {args.shots}, seeds {args.seeds}; mean over seeds of the category mean): "
          f"trained {overall['trained']:.4f}, random {overall['random']:.4f} (gate: trained >= random) "
          f"{verdict(overall['trained'] >= overall['random'])}")
    for k in shots:
        print(f"   k={k}  trained {knn['trained'][k]:.4f}  random {knn['random'][k]:.4f}")


if __name__ == "__main__":
    main()
