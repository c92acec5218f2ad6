"""WinCLIP / WinCLIP+ settings (training-free; no embedded schedule, no faithful preset)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fsas_bench.methods.base import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Limit, MethodConfig
from fsas_bench.methods.text import WINCLIP_TEMPLATES


@dataclass(frozen=True)
class WinCLIPConfig(MethodConfig):
    """WinCLIP+ settings (recorded in ``method_cfg_hash``).

    Attributes:
        scales: window sides in patches (2×2 and 3×3 as published).
        templates: ``winclip22`` (published) or ``anomalib21`` (anomalib parity).
        text_aggregation: ``mean_raw`` (average raw sentence embeddings, anomalib) or ``mean_normalised``.
        temperature: class-score softmax temperature (CLIP's 0.07).
        output_size: output map side; 0 = the backbone's input size.
        map_sigma: Gaussian smoothing of the output map (0 = none, as anomalib).
        harmonic_eps: added before inverting scores in harmonic means (0 = exact; zeros give 0).
        class_names: ``(category, display name)`` overrides; default: underscores become spaces.
    """

    scales: tuple[int, ...] = (2, 3)
    templates: str = "winclip22"
    text_aggregation: str = "mean_raw"
    temperature: float = 0.07
    output_size: int = 0
    map_sigma: float = 0.0
    harmonic_eps: float = 0.0
    class_names: tuple[tuple[str, str], ...] = ()
    limits: ClassVar[dict[str, Limit]] = {
        "scales": POSITIVE_INT.each(), "temperature": POSITIVE, "output_size": NON_NEGATIVE_INT,
        "map_sigma": NON_NEGATIVE, "harmonic_eps": NON_NEGATIVE,
    }  # fmt: skip
    choices: ClassVar[dict[str, tuple[str, ...]]] = {
        "templates": tuple(WINCLIP_TEMPLATES), "text_aggregation": ("mean_raw", "mean_normalised"),
    }  # fmt: skip
