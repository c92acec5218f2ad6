"""FineGrainedAD settings: benchmark defaults, the faithful preset, and the embedded schedule (PromptAD's
config, in ``methods/promptad``, derives from it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fsas_bench.data.synthetic import SYNTHETIC_DATASETS
from fsas_bench.errors import UserError
from fsas_bench.methods.base import BELOW_ONE, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, SEED, Limit, MethodConfig
from fsas_bench.methods.finegrainedad.captions import SHIPPED_FILES
from fsas_bench.methods.finegrainedad.prompts import MFSC_LEVELS
from fsas_bench.methods.finegrainedad.regions import MLSA_REGIONS
from fsas_bench.methods.patchknn.config import PROMPTAD_TAPS

QFORMER_CHOICES = ("random_frozen", "none")
IMAGE_SCORE_CHOICES = ("segmentation_prompts", "cls_prompts")
CANDIDATE_OVERFLOW_CHOICES = ("cycle", "raise")
MEMORY_TAPS = ("block", "released")
RELEASED_PIPELINE: dict[str, object] = {"memory_tap": "released", "query_bgr_quirk": True, "pre_resize": 1024}
"""Both released codes: in-place-updated hook taps, BGR queries, cv2 pre-resize to 1024."""


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
        triplet_margin: margin of L_tri (FineGrainedAD 1.0; PromptAD's released training uses 0.0).
        image_score: ``segmentation_prompts`` (the segmentation prompts score the global embedding) or
            ``cls_prompts`` (PromptAD as released: a second prompt set with ``n_pro_cls`` normal contexts,
            trained on the shots' global embeddings by ``train_cls.py``'s loss, scores the images).
        n_pro_cls: normal contexts of the ``cls_prompts`` set (3 as released).
        candidate_overflow: a gated attribute with fewer handle candidates than handle rows: ``cycle``
            through the ranked candidates (none: the attribute is left out) or ``raise`` (the released top-k
            fails).
        n_ctx, n_ctx_ab, n_pro, n_pro_ab: prompt sizes (4, 1, 1, 4).
        hires_factor: tiles per side of the MLSA high-resolution view (4: 960 px for a 240 px backbone).
        mlsa_regions: MLSA region maps: ``corrected`` (each shot's own background decision, background excluded
            from stage 2, true pooling) or ``released`` (the released code's quirks, ``regions.py``).
        seed: train seed (initialisation, prompt substitutions, clustering noise); −1 = the manifest seed.
        precision: Lightning precision of training (``32-true``; released: bf16, PromptAD fp16).
        output_size: side of the output maps (400).
        map_sigma: Gaussian σ of the pixel map at the output size (4).
        harmonic_eps: epsilon in the harmonic fusion's reciprocals (0: exact, a zero input gives 0).
        memory_tap: token kind of the memory bank and of the query taps: ``block`` (the clean block output) or
            ``released`` (what the released hooks hold: block output + the next block's attention residual,
            backbone feature ``released_tap{i}``).
        query_bgr_quirk: score queries with red and blue swapped, as the released test loop does (it reads
            BGR with cv2 and converts only the shots to RGB).
        pre_resize: square OpenCV bilinear resize of every image (shots, queries, the shots' MLSA view) before
            the backbone's own resize, as the released loaders do (1024); 0 = none.
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
    triplet_margin: float = 1.0
    image_score: str = "segmentation_prompts"
    n_pro_cls: int = 3
    candidate_overflow: str = "cycle"
    n_ctx: int = 4
    n_ctx_ab: int = 1
    n_pro: int = 1
    n_pro_ab: int = 4
    hires_factor: int = 4
    mlsa_regions: str = "corrected"
    seed: int = -1
    precision: str = "32-true"
    output_size: int = 400
    map_sigma: float = 4.0
    harmonic_eps: float = 0.0
    memory_tap: str = "block"
    query_bgr_quirk: bool = False
    pre_resize: int = 0
    limits: ClassVar[dict[str, Limit]] = {
        "blocks": NON_NEGATIVE_INT.each(), "epochs": POSITIVE_INT, "lr": NON_NEGATIVE, "momentum": BELOW_ONE,
        "weight_decay": NON_NEGATIVE, "lr_min": NON_NEGATIVE, "lambda_match": NON_NEGATIVE,
        "triplet_margin": NON_NEGATIVE, "n_pro_cls": POSITIVE_INT, "n_ctx": POSITIVE_INT, "n_ctx_ab": POSITIVE_INT,
        "n_pro": POSITIVE_INT, "n_pro_ab": POSITIVE_INT, "hires_factor": POSITIVE_INT, "seed": SEED,
        "output_size": POSITIVE_INT, "map_sigma": NON_NEGATIVE, "harmonic_eps": NON_NEGATIVE,
        "pre_resize": NON_NEGATIVE_INT,
    }  # fmt: skip
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "mfsc_levels": MFSC_LEVELS, "qformer": QFORMER_CHOICES, "memory_tap": MEMORY_TAPS, "mlsa_regions": MLSA_REGIONS,
        "image_score": IMAGE_SCORE_CHOICES, "candidate_overflow": CANDIDATE_OVERFLOW_CHOICES,
    }  # fmt: skip
    paper_taps: ClassVar[tuple[int, ...]] = PROMPTAD_TAPS
    embedded_schedule: ClassVar[dict[str, object]] = {"captions": "synthetic", "epochs": 8, "hires_factor": 2}
    """The embedded synthetic sets: their shipped caption file, 8 epochs and a 2 × 2-tile MLSA view (CPU budget)."""
    faithful_changes: ClassVar[dict[str, object]] = {
        "seed": 111, "precision": "bf16-mixed", **RELEASED_PIPELINE, "mlsa_regions": "released",
        "candidate_overflow": "raise",
    }  # fmt: skip
    """The released script: seed 111, bf16 training, the released taps and input pipeline, the released MLSA
    region maps and the top-k that fails on too few handle candidates (the same on every dataset)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_score == "cls_prompts" and self.mfsc_levels != "none":
            name = type(self).__name__
            raise UserError(f"{name}.image_score=cls_prompts is PromptAD's (mfsc_levels=none): use segmentation_prompts")

    @classmethod
    def for_dataset(cls, dataset: str) -> FineGrainedADConfig:
        """The shipped caption file of ``dataset`` when there is one; on the embedded synthetic sets
        :attr:`embedded_schedule` (all recorded in ``flags``)."""
        if dataset not in SYNTHETIC_DATASETS and dataset in SHIPPED_FILES:
            return cls(captions=dataset)
        return super().for_dataset(dataset)
