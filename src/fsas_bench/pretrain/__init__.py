"""fsas-tiny-clip: contrastive pretraining of the shipped tiny CLIP on captioned synthetic renderings."""

import os

# Idle OpenMP threads sleep instead of spinning: on cores shared with other jobs, spinning made a 2-thread
# training step 3–5× slower. Takes effect only when torch is not yet imported (as in `fsas-bench pretrain-tiny-clip`).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fsas_bench.pretrain.captions import caption
from fsas_bench.pretrain.pairs import PRETRAIN_CATEGORIES, PairSet, pair_key, render_pairs
from fsas_bench.pretrain.train import PretrainConfig, checkpoint_dir, pretrain

__all__ = [
    "PRETRAIN_CATEGORIES",
    "PairSet",
    "PretrainConfig",
    "caption",
    "checkpoint_dir",
    "pair_key",
    "pretrain",
    "render_pairs",
]
