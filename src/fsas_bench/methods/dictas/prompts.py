"""DictAS's text prompt ensemble and the zero-shot text probability (spec dictas.md §6.1, §7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fsas_bench.backbones import ClipBackbone

NORMAL_STATES = (
    "{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect", "{} without damage",
)  # fmt: skip
ABNORMAL_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
    "a bad photo of a {}.", "a low resolution photo of the {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a bright photo of a {}.", "a dark photo of the {}.", "a photo of my {}.",
    "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a bright photo of the {}.", "a cropped photo of a {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a photo of one {}.",
    "a close-up photo of the {}.", "a photo of a {}.", "a low resolution photo of a {}.", "a photo of a large {}.",
    "a blurry photo of a {}.", "a jpeg \\ photo of the {}.", "a good photo of a {}.", "a photo of the small {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "a dark photo of a {}.",
    "a photo of a cool {}.", "a photo of a small {}.", "there is a {} in the scene.",
    "there is the {} in the scene.", "this is a {} in the scene.", "this is the {} in the scene.",
    "this is one {} in the scene.",
)  # fmt: skip  (template 23 keeps its literal backslash, as the official list)
TEXT_LOGIT_SCALE = 100.0


def sentences(class_name: str, states: tuple[str, ...]) -> list[str]:
    """Every state × template sentence for ``class_name`` (the raw category name, underscores kept)."""
    return [template.format(state.format(class_name)) for state in states for template in TEMPLATES]


def text_prototypes(backbone: ClipBackbone, class_name: str) -> Tensor:
    """T_c = [t_normal, t_abnormal] ``D × 2``: per state group, the L2-normalised mean of the L2-normalised
    sentence embeddings (245 normal, 175 abnormal sentences)."""
    groups = [backbone.encode_text(sentences(class_name, states)) for states in (NORMAL_STATES, ABNORMAL_STATES)]
    return torch.stack([F.normalize(F.normalize(g, dim=-1).mean(0), dim=0) for g in groups], dim=1)


def text_probability(embeddings: Tensor, prototypes: Tensor) -> Tensor:
    """p_text = softmax(100·ê·T_c)[abnormal] of ``B × D`` global image embeddings and ``D × 2`` prototypes."""
    logits = TEXT_LOGIT_SCALE * F.normalize(embeddings, dim=-1) @ prototypes.to(embeddings)
    return logits.softmax(dim=-1)[:, 1]
