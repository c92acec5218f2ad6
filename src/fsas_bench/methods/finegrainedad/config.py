"""FineGrainedAD / PromptAD settings: benchmark defaults, faithful presets, and the embedded schedule."""

from __future__ import annotations

from dataclasses import dataclass

from fsas_bench.methods.base import MethodConfig
from fsas_bench.methods.finegrainedad.captions import SHIPPED_FILES

QFORMER_CHOICES = ("random_frozen", "none")
EMBEDDED_EPOCHS = 8
EMBEDDED_HIRES_FACTOR = 2


@dataclass(frozen=True)
class FineGrainedADConfig(MethodConfig):
    """FineGrainedAD settings (recorded in ``method_cfg_hash``; every faithful-vs-benchmark difference is a
    field). Defaults are the released hyperparameters (spec §9) with the benchmark protocol.

    Attributes:
        mfsc_levels: ``none`` (PromptAD), ``image``, ``image+entity`` or ``full`` (FineGrainedAD), spec §11.
        captions: MFSC caption file: a shipped name (``mvtec``, ``visa``, ``synthetic``) or a JSON path;
            empty (or a category missing from the file) = template records from the shots (spec §12.2).
        qformer: ``random_frozen`` (released: seeded, never trained) or ``none`` (match normal features).
        use_normal_align: add the computed-but-unused normal-alignment loss (off as released).
        blocks: memory-bank taps, 0-based; empty = blocks at 1/4 and 2/3 of the depth ((2, 7) for 12 blocks).
        epochs: training epochs, one SGD step on all k shots each (100); the last epoch is reported.
        lr, momentum, weight_decay, lr_min: SGD and its per-epoch cosine schedule (0.002, 0.9, 5e-4, 1e-5).
        lambda_match: λ₁ of L_match (0.001).
        n_ctx, n_ctx_ab, n_pro, n_pro_ab: prompt sizes (4, 1, 1, 4).
        hires_factor: tiles per side of the MLSA high-resolution view (4: 960 px for a 240 px backbone).
        seed: train seed (initialisation, prompt substitutions, clustering noise); −1 = the manifest seed.
        precision: Lightning precision of training (``32-true``; released: bf16, PromptAD fp16).
        output_size: side of the output maps (400).
        map_sigma: Gaussian σ of the pixel map at the output size (4).
        harmonic_eps: epsilon in the harmonic fusion's reciprocals (0: exact, a zero input gives 0).
    """

    mfsc_levels: str = "full"
    captions: str = ""
    qformer: str = "random_frozen"
    use_normal_align: bool = False
    blocks: tuple[int, ...] = ()
    epochs: int = 100
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_min: float = 1e-5
    lambda_match: float = 0.001
    n_ctx: int = 4
    n_ctx_ab: int = 1
    n_pro: int = 1
    n_pro_ab: int = 4
    hires_factor: int = 4
    seed: int = -1
    precision: str = "32-true"
    output_size: int = 400
    map_sigma: float = 4.0
    harmonic_eps: float = 0.0

    @classmethod
    def faithful(cls, **changes: object) -> FineGrainedADConfig:
        """The released script's settings: seed 111 and bf16 training (everything else is the default)."""
        return cls(**{"mode": "faithful", "seed": 111, "precision": "bf16-mixed", **changes})

    @classmethod
    def faithful_preset(cls, dataset: str) -> FineGrainedADConfig:
        """:meth:`faithful` (the same on every dataset; PromptADConfig inherits it with its own preset)."""
        return cls.faithful()

    @classmethod
    def for_dataset(cls, dataset: str) -> FineGrainedADConfig:
        """The shipped caption file of ``dataset`` when there is one; on the embedded synthetic sets also a
        short CPU schedule: 8 epochs and a 2 × 2-tile MLSA view (all recorded in ``flags``)."""
        if dataset.startswith("synthetic"):
            return cls(captions="synthetic", epochs=EMBEDDED_EPOCHS, hires_factor=EMBEDDED_HIRES_FACTOR)
        return cls(captions=dataset) if dataset in SHIPPED_FILES else cls()


@dataclass(frozen=True)
class PromptADConfig(FineGrainedADConfig):
    """PromptAD = FineGrainedAD with ``mfsc_levels=none`` (spec §11): the caption is the class name (the
    caption record's foreground noun, fsas-bench's class-name mapping)."""

    mfsc_levels: str = "none"

    @classmethod
    def faithful(cls, **changes: object) -> FineGrainedADConfig:
        """PromptAD's released settings: seed 111 and fp16 (GPU only)."""
        return cls(**{"mode": "faithful", "seed": 111, "precision": "16-mixed", **changes})
