"""The frozen open_clip text tower run on assembled token embeddings (soft prompts), with gradients."""

from __future__ import annotations

from functools import lru_cache

import open_clip
import torch
from torch import Tensor, nn


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
