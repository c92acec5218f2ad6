"""InCTRL settings: benchmark defaults (the released training recipe), the faithful preset, the embedded
schedule and the depth-scaled block taps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fsas_bench.backbones.clip import RESIZE_RULES
from fsas_bench.methods.base import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, Limit, MethodConfig
from fsas_bench.methods.inctrl.torch_model import HEAD_DTYPES, LOSSES, PIXEL_MAPS

PAPER_BLOCKS = (7, 9, 11)
"""The 1-indexed blocks of the 12-block ViT-B-16-plus-240 whose patch tokens InCTRL compares."""


@dataclass(frozen=True)
class InCTRLConfig(MethodConfig):
    """InCTRL settings (recorded in ``method_cfg_hash``; benchmark defaults = the released training recipe).

    Attributes:
        blocks: 0-based block taps; empty = :data:`PAPER_BLOCKS` scaled by depth ((6, 8, 10) for 12 blocks, (3, 4, 5)
            for the 6-block fsas-tiny, (13, 17, 21) for 24 blocks).
        epochs: training epochs (10 as released; 6 = the checkpoint the authors picked).
        steps_per_epoch: batches per epoch (100).
        batch_size: queries per batch, half normal and half anomalous (16).
        lr: AdamW learning rate (1e-3; betas (0.9, 0.999)).
        weight_decay: AdamW weight decay (PyTorch's default 0.01, as released).
        loss: ``official`` (focal-with-logits on probabilities, as trained) or ``bce_prob`` (ablation).
        exclude_self_prompt: never give a normal training query itself as a prompt (ablation; released: may).
        pixel_map: ``Mx`` (M upsampled, default extension) or ``holistic`` (M + s_i + s_a upsampled, extension).
        map_sigma: Gaussian smoothing of the map in pixels of the backbone's input frame (4 at 240 px).
        class_names: ``(category, object name)`` overrides of the text prior; default: underscores → spaces.
        preprocess: ``resize`` (straight S × S) or ``resize_centercrop`` (released: shorter side to S, centre
            S × S crop, for training, prompts and queries). With the crop the pixel map covers only the crop; it
            is mapped back onto the whole image and pixels outside the crop score the map's minimum
            (:func:`~fsas_bench.methods.ops.uncrop_maps`; the released code has no pixel evaluation).
        checkpoint: a released ``.pyth`` checkpoint whose ψ, η, φ replace the auxiliary training (``{k}`` in
            the path = the shot count, the released models being per k); empty = train (default).
        head_dtype: dtype of ψ, η, φ and their inputs in training and scoring: ``float64`` (benchmark default) or
            ``float32`` (as released; faithful). The Linear bias in front of ReLU → BatchNorm has a gradient that is
            exactly zero for a unit active on every query of the batch (BatchNorm removes any shift), but in
            float32 it is rounding noise (~1e-9), which Adam (eps 1e-8) normalises into ±lr steps of random
            sign: training then depends chaotically on the CPU kernels and thread count. In float64 the noise
            stays far below eps. Same computation in exact arithmetic; M (the pixel map) is unaffected.
    """

    blocks: tuple[int, ...] = ()
    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    loss: str = "official"
    exclude_self_prompt: bool = False
    pixel_map: str = "Mx"
    map_sigma: float = 4.0
    class_names: tuple[tuple[str, str], ...] = ()
    preprocess: str = "resize"
    checkpoint: str = ""
    head_dtype: str = "float64"
    limits: ClassVar[dict[str, Limit]] = {
        "blocks": NON_NEGATIVE_INT.each(), "epochs": POSITIVE_INT, "steps_per_epoch": POSITIVE_INT,
        "batch_size": POSITIVE_INT, "lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "map_sigma": NON_NEGATIVE,
    }  # fmt: skip
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "loss": LOSSES, "pixel_map": PIXEL_MAPS, "preprocess": RESIZE_RULES, "head_dtype": tuple(HEAD_DTYPES),
    }  # fmt: skip
    embedded_schedule: ClassVar[dict[str, object]] = {"epochs": 2, "steps_per_epoch": 15, "batch_size": 32}
    """2 epochs × 15 steps of 32 queries on the embedded synthetic sets (CPU budget; the same 960 queries as 30
    steps of 16, but 16 + 16 per batch: with 8 + 8 the BatchNorm statistics and Adam steps at lr 1e-3 made
    training amplify float rounding ~1e4-fold, see benchmarks/embedded_stability.py)."""
    paper_taps: ClassVar[tuple[int, ...]] = PAPER_BLOCKS
    faithful_changes: ClassVar[dict[str, object]] = {"preprocess": "resize_centercrop", "head_dtype": "float32"}
    """The released code's Resize + CenterCrop input and float32 heads (the recipe is the default)."""
