"""DictAS settings: benchmark defaults, the faithful preset, and the shortened embedded schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from fsas_bench.errors import UserError
from fsas_bench.methods.base import (
    BELOW_ONE, FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, Limit, MethodConfig,
)  # fmt: skip
from fsas_bench.methods.dictas.activation import ACTIVATIONS
from fsas_bench.methods.dictas.overrides import OFFICIAL_MODES, canonical_dataset, official_dataset_for
from fsas_bench.methods.dictas.training_data import SynthesisSettings
from fsas_bench.numbers import strict_int

IMAGE_SCORES = ("map_max", "fixed_fusion:<alpha>", "official_transductive")
PAPER_TAPS = (6, 12, 18, 24)
"""The 1-indexed blocks of the 24-block ViT-L/14-336 whose tokens DictAS looks up (the ends of the depth quarters)."""


@dataclass(frozen=True)
class DictASConfig(MethodConfig):
    """DictAS settings (recorded in ``method_cfg_hash``; every faithful-vs-benchmark difference is a field).

    Attributes:
        blocks: 0-based block taps; empty = the ends of the four depth quarters (blocks 6, 12, 18, 24 of a
            24-block ViT, 1-indexed; ⌈jD/4⌉ for depth D).
        scales: neighbourhood sides of the lookup (1 and 3).
        output_size: side of the output map; 0 = the backbone's input size (336 for ViT-L/14-336).
        smoothing_sigma: Gaussian σ of the output map in output pixels (6).
        image_score: ``map_max`` (benchmark: max of the smoothed map), ``fixed_fusion:α`` (α·p_text +
            (1 − α)·p_map) or ``official_transductive`` (per-category min-max fusion over the test set).
        official_overrides: apply the official per-dataset layers/scales/σ/α table and the MVTec screw
            reference rotations (needs ``official_dataset``); off = one uniform configuration.
        official_dataset: official name of the evaluation dataset (``mvtec``, ``visa``, ``BTAD``, ``MPDD``,
            ``mvtec3D``, ``BrasTS``, ``RESC``, or ``other`` for any dataset outside the released scripts'
            table) for the overrides and the transductive α rule.
        official_mode: ``segmentation`` (official default) or ``classification`` (§9.5), with the overrides.
        activation: ``native`` (the run's backbone as loaded), ``gelu`` or ``quickgelu`` (DictAS then uses a
            private swapped copy of the backbone; the official code runs GELU).
        cache_reference_kv: compute F_K, F_V of the references once per (category, manifest, block, scale).
        epochs, batch_size, learning_rate, betas: Adam schedule (30, 24, 1e-4, (0.5, 0.999)).
        steps_per_epoch: cap on the batches (steps) of an epoch (0 = every image once per epoch).
        plateau_factor, plateau_patience: ReduceLROnPlateau on the epoch-mean L_query (0.8, 2).
        lambda_cqc, lambda_tac: loss weights (0.1, 0.1).
        vgen_freeze: ``epoch:E`` (freeze g_V after epoch E, benchmark E = 2) or ``val_trigger`` (the official
            trigger: pixel AP on the target dataset's test split — target-domain leakage).
        anomaly_probability, reference_probability: synthetic-anomaly and reference-augmentation rates.
        work_size, paste_size: image sides for the reference augmentation and the anomaly paste (1024, 512).
        anomaly_textures: DTD ``images`` folder for anomaly textures; empty = procedural textures.
        precision: Lightning precision of training (``32-true``).
        data_workers: DataLoader worker processes synthesising training pairs (never changes a number).
        target_leakage: derived, true iff training reads the target dataset's test split (val_trigger).
    """

    blocks: tuple[int, ...] = ()
    scales: tuple[int, ...] = (1, 3)
    output_size: int = 0
    smoothing_sigma: float = 6.0
    image_score: str = "map_max"
    official_overrides: bool = False
    official_dataset: str = ""
    official_mode: str = "segmentation"
    activation: str = "native"
    cache_reference_kv: bool = True
    epochs: int = 30
    steps_per_epoch: int = 0
    batch_size: int = 24
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    plateau_factor: float = 0.8
    plateau_patience: int = 2
    lambda_cqc: float = 0.1
    lambda_tac: float = 0.1
    vgen_freeze: str = "epoch:2"
    anomaly_probability: float = 0.3
    reference_probability: float = 0.9
    work_size: int = 1024
    paste_size: int = 512
    anomaly_textures: str = ""
    precision: str = "32-true"
    data_workers: int = 1
    target_leakage: bool = field(init=False, default=False)
    embedded_schedule: ClassVar[dict[str, object]] = {
        "epochs": 2, "steps_per_epoch": 6, "vgen_freeze": "epoch:1", "batch_size": 8, "work_size": 256,
        "paste_size": 256,
    }  # fmt: skip
    paper_taps: ClassVar[tuple[int, ...]] = PAPER_TAPS
    paper_depth: ClassVar[int] = 24
    faithful_changes: ClassVar[dict[str, object]] = {
        "activation": "gelu", "official_overrides": True, "image_score": "official_transductive",
        "vgen_freeze": "val_trigger",
    }  # fmt: skip
    """The official code: GELU backbone, per-dataset overrides, transductive image score, target-triggered g_V
    freeze (leakage)."""
    limits: ClassVar[dict[str, Limit]] = {
        "blocks": NON_NEGATIVE_INT.each(), "output_size": NON_NEGATIVE_INT, "smoothing_sigma": NON_NEGATIVE,
        "epochs": POSITIVE_INT, "steps_per_epoch": NON_NEGATIVE_INT, "batch_size": POSITIVE_INT,
        "learning_rate": NON_NEGATIVE, "betas": BELOW_ONE.each(), "plateau_factor": BELOW_ONE,
        "plateau_patience": NON_NEGATIVE_INT, "lambda_cqc": NON_NEGATIVE, "lambda_tac": NON_NEGATIVE,
        "anomaly_probability": FRACTION, "reference_probability": FRACTION, "work_size": POSITIVE_INT,
        "paste_size": POSITIVE_INT, "data_workers": NON_NEGATIVE_INT,
    }  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "target_leakage", self.vgen_freeze == "val_trigger")
        if self.vgen_freeze != "val_trigger" and self.freeze_epoch is None:
            raise UserError(f"dictas vgen_freeze '{self.vgen_freeze}' is invalid: use epoch:E (E >= 1) or val_trigger")
        if self.image_score not in ("map_max", "official_transductive") and self.fusion_alpha is None:
            raise UserError(f"dictas image_score '{self.image_score}' is invalid: use one of {', '.join(IMAGE_SCORES)}")
        if self.activation not in ("native", *ACTIVATIONS):
            raise UserError(f"dictas activation '{self.activation}' is invalid: use native, gelu or quickgelu")
        if 1 not in self.scales or any(s < 1 or s % 2 == 0 for s in self.scales):
            raise UserError(f"dictas scales {self.scales} are invalid: odd neighbourhood sides including 1")
        if self.official_mode not in OFFICIAL_MODES:
            raise UserError(
                f"dictas official_mode '{self.official_mode}' is invalid: use segmentation or classification"
            )
        if self.official_overrides and self.blocks and len(self.blocks) != 4:
            raise UserError(f"dictas official_overrides needs the four default taps, not blocks {self.blocks}")
        if self.official_overrides or self.image_score == "official_transductive":
            object.__setattr__(self, "official_dataset", canonical_dataset(self.official_dataset))

    @property
    def freeze_epoch(self) -> int | None:
        """E of ``vgen_freeze=epoch:E``; None for ``val_trigger`` (or a malformed value)."""
        prefix, _, value = self.vgen_freeze.partition(":")
        epoch = strict_int(value) if prefix == "epoch" else None
        return epoch if epoch is not None and epoch >= 1 else None

    @property
    def fusion_alpha(self) -> float | None:
        """α of ``image_score=fixed_fusion:α``; None for the other scores (or a malformed value)."""
        prefix, _, value = self.image_score.partition(":")
        try:
            alpha = float(value) if prefix == "fixed_fusion" else None
        except ValueError:
            return None
        return alpha if alpha is not None and 0.0 <= alpha <= 1.0 else None

    @property
    def synthesis(self) -> SynthesisSettings:
        """The training-pair synthesis settings."""
        return SynthesisSettings(self.work_size, self.paste_size, self.anomaly_probability, self.reference_probability)

    @property
    def transductive(self) -> bool:
        """Whether image scores depend on other test images."""
        return self.image_score == "official_transductive"

    @classmethod
    def faithful(cls, official_dataset: str = "other", **changes: object) -> DictASConfig:
        """The official code's behaviour (:attr:`faithful_changes`) on ``official_dataset``."""
        return super().faithful(official_dataset=official_dataset, **changes)

    @classmethod
    def faithful_preset(cls, dataset: str) -> DictASConfig:
        """:meth:`faithful` on the official spelling of ``dataset`` (``other``: the released code's generic
        branches, e.g. on the embedded synthetic sets)."""
        return cls.faithful(official_dataset_for(dataset))

    @property
    def uses_text(self) -> bool:
        """Whether the image score reads the text probability (and so the global embedding)."""
        return self.image_score != "map_max"
