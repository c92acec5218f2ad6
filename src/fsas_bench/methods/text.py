"""The CLIP text toolkit of the methods: state words, the class-name rule, sentence ensembles, two-way text
prototypes (one layout, ``2 × D``: normal row, anomalous row), the two-way anomaly probability, and the frozen
open_clip text tower run on assembled token embeddings (soft prompts, with gradients)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

CLIP_LOGIT_SCALE = 100.0
"""CLIP's logit scale exp(t) (trained to its cap 100): the factor of cosine similarities in the two-way softmax
of InCTRL's text prior and DictAS's text probability and loss, as released."""

NORMAL_STATES = (
    "{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect", "{} without damage",
)  # fmt: skip
"""WinCLIP's normal state words (InCTRL and DictAS use the same seven)."""
ANOMALOUS_STATES = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
"""WinCLIP's anomalous state words (InCTRL's too; DictAS adds "broken {}")."""

WINCLIP_TEMPLATES = {
    # WinCLIP's published 22 templates (each phrase once with "a" and once with "the"), InCTRL's order.
    "winclip22": (
        "a cropped photo of the {}.", "a cropped photo of a {}.", "a close-up photo of a {}.",
        "a close-up photo of the {}.", "a bright photo of a {}.", "a bright photo of the {}.",
        "a dark photo of a {}.", "a dark photo of the {}.", "a jpeg corrupted photo of a {}.",
        "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.", "a blurry photo of a {}.",
        "a photo of the {}.", "a photo of a {}.", "a photo of a small {}.", "a photo of the small {}.",
        "a photo of a large {}.", "a photo of the large {}.", "a photo of a {} for visual inspection.",
        "a photo of the {} for visual inspection.", "a photo of a {} for anomaly detection.",
        "a photo of the {} for anomaly detection.",
    ),
    # anomalib's 21-template list (one "jpeg corrupted" template duplicated, one "cropped" missing), in its order.
    "anomalib21": (
        "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
        "a bright photo of a {}.", "a bright photo of the {}.", "a dark photo of the {}.", "a dark photo of a {}.",
        "a jpeg corrupted photo of the {}.", "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.",
        "a blurry photo of a {}.", "a photo of a {}.", "a photo of the {}.", "a photo of a small {}.",
        "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
        "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
        "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
    ),
}  # fmt: skip
"""WinCLIP's template lists by name (InCTRL's text prior uses ``winclip22``)."""
DICTAS_ABNORMAL_STATES = (ANOMALOUS_STATES[0], "broken {}", *ANOMALOUS_STATES[1:])
"""DictAS's anomalous states: WinCLIP's with "broken {}" second, as released."""
DICTAS_TEMPLATES = (
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
)  # fmt: skip
"""DictAS's 35 templates (template 23 keeps its literal backslash, as the official list)."""


def class_name(category: str, overrides: Sequence[tuple[str, str]] = ()) -> str:
    """The object name of ``category`` in prompts: its entry in ``overrides`` (``(category, name)`` pairs),
    else the category with underscores as spaces."""
    return dict(overrides).get(category, category.replace("_", " "))


def sentences(name: str, states: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every state × template sentence for the object ``name`` (state-major order, as released)."""
    return [template.format(state.format(name)) for state in states for template in templates]


def text_prototypes(normal: Tensor, anomalous: Tensor, normalise: bool = True) -> Tensor:
    """``2 × D`` prototypes (t_n, t_a) of ``T × D`` sentence embeddings: the unit mean of the unit embeddings;
    ``normalise=False``: the plain mean of the raw embeddings (anomalib's WinCLIP)."""
    if not normalise:
        return torch.stack([normal.mean(0), anomalous.mean(0)])
    return torch.stack([F.normalize(F.normalize(s, dim=-1).mean(0), dim=-1) for s in (normal, anomalous)])


def anomaly_probability(similarity: Tensor, logit_scale: float | Tensor = 1.0) -> Tensor:
    """softmax(logit_scale · [s_n, s_a])[anomalous] of ``... × 2`` similarities to (t_n, t_a) → ``...``.

    Callers whose released code scales before a matmul or divides by a temperature pass those logits with the
    default scale 1 (an exact no-op), so every method keeps its released rounding."""
    return (logit_scale * similarity).softmax(dim=-1)[..., 1]


def tokenize(model: nn.Module, arch: str, sentences: list[str]) -> Tensor:
    """``T × L`` token ids of ``sentences`` at the model's context length."""
    return _tokenizer(arch)(sentences, context_length=model.context_length)


@lru_cache(maxsize=8)
def _tokenizer(arch: str) -> open_clip.tokenizer.SimpleTokenizer:
    """The architecture's tokenizer, built once (building it reads the BPE vocabulary)."""
    return open_clip.get_tokenizer(arch)


def token_embeddings(model: nn.Module, tokens: Tensor) -> Tensor:
    """Frozen ``T × L × W`` token embeddings of ``tokens`` (the prompt learner's fixed parts)."""
    with torch.no_grad():
        return model.token_embedding(tokens.to(model.token_embedding.weight.device)).float()


def encode_embedded_prompts(model: nn.Module, embeddings: Tensor, tokens: Tensor) -> Tensor:
    """Raw (unnormalised) ``T × D`` text features of ``T × L × W`` token embeddings.

    The same computation as upstream ``CLIP.encode_text`` after its embedding lookup: positional embedding,
    causal transformer, ``ln_final``, pooling at each row's EOT (the argmax of ``tokens``), projection.
    Gradients flow to ``embeddings``; the tower's weights stay frozen.
    """
    x = embeddings + model.positional_embedding.to(embeddings.dtype)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1).to(x.device)]
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection
