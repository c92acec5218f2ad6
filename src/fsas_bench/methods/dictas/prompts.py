"""DictAS's text prompt ensemble and the zero-shot text probability (spec dictas.md §6.1, §7)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from fsas_bench.backbones import ClipBackbone
from fsas_bench.methods.text import ANOMALOUS_STATES, CLIP_LOGIT_SCALE, NORMAL_STATES, anomaly_probability, sentences
from fsas_bench.methods.text import text_prototypes as shared_prototypes

ABNORMAL_STATES = (ANOMALOUS_STATES[0], "broken {}", *ANOMALOUS_STATES[1:])
"""WinCLIP's anomalous states with "broken {}" second, as released."""
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


def text_prototypes(backbone: ClipBackbone, category: str) -> Tensor:
    """T_c = [t_normal, t_abnormal] ``D × 2`` (the official layout; :func:`~fsas_bench.methods.text.text_prototypes`
    transposed) of the raw category name (underscores kept): 245 normal, 175 abnormal sentences."""
    normal, abnormal = (backbone.encode_text(sentences(category, states, TEMPLATES))
                        for states in (NORMAL_STATES, ABNORMAL_STATES))  # fmt: skip
    return shared_prototypes(normal, abnormal).T.contiguous()


def text_probability(embeddings: Tensor, prototypes: Tensor) -> Tensor:
    """p_text = softmax(100·ê·T_c)[abnormal] of ``B × D`` global image embeddings and ``D × 2`` prototypes."""
    return anomaly_probability(F.normalize(embeddings, dim=-1) @ prototypes.to(embeddings), CLIP_LOGIT_SCALE)
