"""FineGrainedAD inference (spec §8): the visual memory bank (VAD), dynamic token-wise text matching through
the Q-Former (PAD), harmonic fusion, upsampling and smoothing. Pure ``nn.Module``s, no Lightning."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsas_bench.methods.ops import harmonic_mean, memory_distance_grid, upsample_and_blur
from fsas_bench.methods.text import anomaly_probability

QFORMER_HEADS = 8


class CandidateAttention(nn.Module):
    """Multi-head cross-attention of each of C queries over its own single key, structured as released:
    ``q_proj`` (D → D), ``kv_proj`` (D → 2D: keys then values), ``proj`` (D → D), all ``nn.Linear`` with
    biases and their default initialisation (drawn in ``dtype``), scale head_dim^−½."""

    def __init__(self, dim: int, heads: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, dtype=dtype)
        self.kv_proj = nn.Linear(dim, 2 * dim, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)

    def forward(self, queries: Tensor, keys: Tensor) -> Tensor:
        """``C × D`` queries, ``C × D`` keys (one per query) → ``C × D``."""
        c, dim = queries.shape
        head_dim = dim // self.heads
        q = self.q_proj(queries).view(c, self.heads, 1, head_dim)
        k, v = self.kv_proj(keys).view(c, 2, self.heads, 1, head_dim).unbind(1)
        weights = (q @ k.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)  # C × heads × 1 × 1
        return self.proj((weights @ v).reshape(c, dim))


class QueryFormer(nn.Module):
    """Two cross-attentions sharing C learnable queries, and a linear fusion (``QueryFormer(C, D)``).

    Structure, parameter shapes and creation order follow the released module (8 heads; normal attention,
    abnormal attention, queries ~ N(0, 0.02²), fusion), so a seeded construction draws the same weights; the
    released module is built in the training dtype (bf16 for FineGrainedAD), whose draws differ from float32
    ones, hence ``dtype`` (cast to float32 afterwards, exactly). Each candidate's normal and abnormal feature
    is the only key of its own attention, so the softmax weight is 1 and the output is a linear map of the
    pair; the queries cannot matter.
    """

    def __init__(
        self, n_candidates: int, dim: int, heads: int = QFORMER_HEADS, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.normal_attention = CandidateAttention(dim, heads, dtype)
        self.abnormal_attention = CandidateAttention(dim, heads, dtype)
        self.queries = nn.Parameter(nn.init.normal_(torch.zeros(n_candidates, dim, dtype=dtype), std=0.02))
        self.fusion = nn.Linear(2 * dim, dim, dtype=dtype)

    def forward(self, pairs: Tensor) -> Tensor:
        """``C × 2 × D`` (normal, abnormal) pairs → ``C × D`` matching keys."""
        out_n = self.normal_attention(self.queries, pairs[:, 0])
        out_a = self.abnormal_attention(self.queries, pairs[:, 1])
        return self.fusion(torch.cat([out_n, out_a], dim=-1))


def text_anomaly(tokens: Tensor, pairs: Tensor, keys: Tensor, tau: Tensor) -> Tensor:
    """Per token, softmax(τ·[v·n_c, v·a_c])[abnormal] of the candidate c whose key is most cosine-similar.

    Args:
        tokens: ``N × D`` unit-norm tokens.
        pairs: ``C × 2 × D`` unit-norm (normal, abnormal) features.
        keys: ``C × D`` matching keys (Q-Former outputs, or the normal features for ``qformer=none``).
        tau: raw logit scale.
    """
    choice = (tokens @ F.normalize(keys, dim=-1).T).argmax(dim=1)
    chosen = pairs[choice]  # N × 2 × D
    return anomaly_probability(torch.einsum("nd,ncd->nc", tokens, chosen), tau)


def harmonic(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """1 / (1/(a + eps) + 1/(b + eps)) as released: half the harmonic mean (exactly: halving is exact in
    floating point); a zero input gives 0 when eps = 0."""
    return harmonic_mean(torch.stack([a, b]), eps) / 2


class FineGrainedADScorer(nn.Module):
    """The per-category test-time state and scoring of one query at a time.

    Args:
        output_size: side of the output map (400 as released).
        sigma: Gaussian σ of the pixel map (4).
        harmonic_eps: epsilon in the reciprocals of the harmonic fusion.
    """

    def __init__(self, output_size: int, sigma: float, harmonic_eps: float) -> None:
        super().__init__()
        self.output_size = output_size
        self.sigma = sigma
        self.harmonic_eps = harmonic_eps
        self.memory: list[Tensor] = []
        self.pairs = torch.empty(0)
        self.keys = torch.empty(0)
        self.image_candidates = (self.pairs, self.keys)
        self.tau = torch.tensor(1.0)

    def set_state(
        self, memory: list[Tensor], pairs: Tensor, keys: Tensor, tau: Tensor, image_candidates: tuple | None = None
    ) -> None:
        """Memory bank (per tap ``M × C``), candidate pairs ``C × 2 × D``, keys ``C × D``, raw τ, and the
        (pairs, keys) that score the global embedding (``None``: the same candidates; PromptAD's released
        image score: its separately trained CLS prompts)."""
        self.memory, self.pairs, self.keys, self.tau = memory, pairs, keys, tau
        self.image_candidates = image_candidates if image_candidates is not None else (pairs, keys)

    def forward(self, taps: list[Tensor], vv_tokens: Tensor, embedding: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``S × S`` and image score of one query (``taps``: per tap ``N × C``; ``vv_tokens`` ``N × D``;
        ``embedding`` ``D``; tokens and embedding need not be normalised)."""
        vision = memory_distance_grid(taps, self.memory)  # V_map, g × g
        tokens = F.normalize(vv_tokens, dim=-1)
        text = text_anomaly(tokens, self.pairs, self.keys, self.tau).view_as(vision)
        pixel = upsample_and_blur(harmonic(text, vision, self.harmonic_eps)[None], self.output_size, self.sigma)[0]
        text_score = text_anomaly(F.normalize(embedding, dim=-1)[None], *self.image_candidates, self.tau)[0]
        vision_score = upsample_and_blur(vision[None], self.output_size, 0.0).amax()
        return pixel, harmonic(text_score, vision_score, self.harmonic_eps)
