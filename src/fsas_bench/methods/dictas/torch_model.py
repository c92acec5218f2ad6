"""DictAS's trainable head and dictionary lookup on frozen patch tokens (spec dictas.md §3–§5).

Module and parameter names follow the official checkpoint layout (``Query_Generator.*``, ``Key_Generator.*``,
``Value_Generator.AttnBlock.*``, ``Fuse_Feature.*``), so ``train_visa.pth``-style state dicts load with
``strict=True``. Shapes: B batch, N tokens per image (an h × w grid), C channels, M dictionary entries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsas_bench.backbones import ClipBackbone
from fsas_bench.methods.ops import blur, grid_side
from fsas_bench.methods.text import (
    CLIP_LOGIT_SCALE, DICTAS_ABNORMAL_STATES, DICTAS_TEMPLATES, NORMAL_STATES, anomaly_probability, sentences,
)  # fmt: skip
from fsas_bench.methods.text import text_prototypes as shared_prototypes

PREFIX = 64
"""Largest entries examined first; rows whose support is not shorter than this fall back to a full sort."""


def sparsemax(logits: Tensor, dim: int = -1) -> Tensor:
    """Exact sort-based sparsemax along ``dim``.

    For a row z sorted decreasingly, the support size is k(z) = max{j : 1 + j·z_(j) > Σ_{i≤j} z_(i)} (the
    condition holds exactly for j ≤ k(z)), the threshold τ = (Σ_{i≤k} z_(i) − 1)/k, and the output
    max(z − τ, 0): non-negative, summing to 1, exactly zero at or below τ. Supports are usually short, so
    the condition is first evaluated on the :data:`PREFIX` largest entries (a partial sort); a row whose
    condition still holds at the end of the prefix is redone with a full sort, so the result is exact.
    Autograd through sort/cumsum/clamp gives the standard sparsemax Jacobian.

    Args:
        logits: any shape; ``dim`` is the simplex axis.
        dim: the axis to normalise.

    Returns:
        A tensor of ``logits``' shape and dtype.
    """
    z = logits.movedim(dim, -1)
    shape, size = z.shape, z.shape[-1]
    rows = (z - z.amax(dim=-1, keepdim=True)).reshape(-1, size)  # shift invariance keeps the sums small
    tau, open_ended = _threshold(rows.topk(min(size, PREFIX), dim=-1).values)
    if size > PREFIX and bool(open_ended.any()):
        redo = open_ended.nonzero().squeeze(1)
        tau = tau.index_put((redo,), _threshold(rows[redo].sort(dim=-1, descending=True).values)[0])
    return torch.clamp(rows - tau, min=0).reshape(shape).movedim(-1, dim)


def _threshold(ranked: Tensor) -> tuple[Tensor, Tensor]:
    """τ (``R × 1``) of rows whose largest entries are ``ranked`` (``R × K``, decreasing), and whether the
    support condition still holds at K (then the support may extend beyond the K entries)."""
    j = torch.arange(1, ranked.shape[-1] + 1, device=ranked.device, dtype=ranked.dtype)
    cumulative = ranked.cumsum(dim=-1)
    holds = 1 + j * ranked > cumulative
    k = torch.where(holds, j, 0).amax(dim=-1, keepdim=True)  # the largest j where it holds
    return (cumulative.gather(-1, k.long() - 1) - 1) / k, holds[:, -1]


class TwoLayerMLP(nn.Module):
    """The official "TwoLayerMLP": three linear layers without non-linearity, residual before the second
    and a LayerNorm before the third (spec §3.1 step 4)."""

    def __init__(self, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.linear3 = nn.Linear(dim, dim, bias=False)

    def forward(self, attended: Tensor, residual: Tensor) -> Tensor:
        """``B × N × C`` attention output and LayerNormed input → ``B × N × C``."""
        return self.linear3(self.norm(self.linear2(self.drop(self.linear1(attended)) + residual)))


class AttnBlock(nn.Module):
    """LayerNorm → multi-head softmax self-attention (no output projection) → :class:`TwoLayerMLP` with the
    LayerNormed input as residual; no outer residual. 6·C² + 6·C parameters.

    Args:
        dim: channel width C (divisible by ``heads``).
        heads: attention heads (4).
        dropout: dropout inside the MLP (0.1).
    """

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.TwoLayerMLP = TwoLayerMLP(dim, dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``B × N × C`` → ``B × N × C``; attention spans the N tokens of each sample."""
        x0 = self.norm1(x)
        q, k, v = (self._split(proj(x0)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        attended = F.scaled_dot_product_attention(q, k, v)  # scale 1/√(C/heads), no dropout, not causal
        return self.TwoLayerMLP(attended.transpose(1, 2).flatten(2), x0)

    def _split(self, x: Tensor) -> Tensor:
        """``B × N × C`` → ``B × heads × N × C/heads``."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)


class ValueGenerator(nn.Module):
    """g_V(x) = x + AttnBlock(x)."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.AttnBlock = AttnBlock(dim, heads, dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``B × N × C`` → ``B × N × C``."""
        return x + self.AttnBlock(x)


class FuseHead(nn.Module):
    """Text-alignment pooling head (training only): concatenate L layers' tokens, project to C/2,
    attention-pool over tokens, project to the joint embedding D (spec §3.3).

    Args:
        dim: channel width C.
        n_layers: number of tapped layers L (4 in the official head).
        embed_dim: CLIP joint embedding width D.
    """

    def __init__(self, dim: int, n_layers: int, embed_dim: int) -> None:
        super().__init__()
        self.fuse_modules = nn.Linear(dim * n_layers, dim // 2)
        self.compress = nn.Linear(dim // 2, 1)
        self.post_process = nn.Linear(dim // 2, embed_dim)

    def forward(self, layers: Sequence[Tensor]) -> Tensor:
        """L tensors ``B × N × C`` → ``B × D``."""
        hidden = self.fuse_modules(torch.cat(list(layers), dim=-1))
        weights = self.compress(hidden).softmax(dim=1)
        return self.post_process((weights * hidden).sum(dim=1))


class DictASHead(nn.Module):
    """The generators g_Q, g_K, g_V (shared by every layer and scale) and the TAC fuse head.

    Args:
        dim: backbone width C.
        embed_dim: CLIP joint embedding width D.
        n_layers: tapped layers (the fuse head's input is L·C wide).
    """

    def __init__(self, dim: int, embed_dim: int, n_layers: int = 4) -> None:
        super().__init__()
        self.Query_Generator = AttnBlock(dim)
        self.Key_Generator = AttnBlock(dim)
        self.Value_Generator = ValueGenerator(dim)
        self.Fuse_Feature = FuseHead(dim, n_layers, embed_dim)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def keys_values(self, entries: Tensor) -> tuple[Tensor, Tensor]:
        """F_K = g_K(D), F_V = g_V(D) of dictionary entries ``B' × M × C`` (self-attention over all M)."""
        return self.Key_Generator(entries), self.Value_Generator(entries)

    def retrieve(self, queries: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """F_R = sparsemax(g_Q(q)·F_Kᵀ/√C)·F_V.

        Args:
            queries: ``B × N × C`` (already g_V-transformed and pooled).
            keys, values: ``B × M × C`` per-sample dictionaries, or ``1 × M × C`` shared by the batch.

        Returns:
            ``B × N × C`` retrieved content.
        """
        f_q = self.Query_Generator(queries)
        weights = sparsemax(f_q @ keys.transpose(-1, -2) / math.sqrt(f_q.shape[-1]), dim=-1)
        return weights @ values


def neighbourhood_pool(tokens: Tensor, scale: int) -> Tensor:
    """P_s: mean over the s × s neighbourhood on the token grid, zero-padded (count_include_pad=True).

    Args:
        tokens: ``B × N × C`` with N a square grid.
        scale: odd neighbourhood side; 1 is the identity.
    """
    if scale == 1:
        return tokens
    side = grid_side(tokens.shape[1])
    grid = tokens.transpose(1, 2).unflatten(2, (side, side))
    pooled = F.avg_pool2d(grid, scale, stride=1, padding=scale // 2, count_include_pad=True)
    return pooled.flatten(2).transpose(1, 2)


class ReferenceDictionary:
    """The k references of a category as a dictionary per (block, scale).

    Entries are P_s of each reference's grid, concatenated into one sequence ``1 × k·N × C`` (g_K and g_V
    attend over all k references jointly). With ``cache``, F_K and F_V are computed once per (block, scale)
    and device, on first use (exact in eval mode, where dropout is off); otherwise on every call, as the
    official code does.

    Args:
        head: the trained head.
        references: block → ``k × N × C`` raw patch tokens of the references.
        cache: keep F_K, F_V.
    """

    def __init__(self, head: DictASHead, references: dict[int, Tensor], cache: bool = True) -> None:
        self.head = head
        self.references = references
        self.cache = cache
        self._kv: dict[tuple[int, int, torch.device], tuple[Tensor, Tensor]] = {}

    def keys_values(self, block: int, scale: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """F_K, F_V ``1 × k·N × C`` of (block, scale) on ``device``."""
        key = (block, scale, device)
        if key in self._kv:
            return self._kv[key]
        refs = self.references[block].to(device)
        kv = self.head.keys_values(neighbourhood_pool(refs, scale).flatten(0, 1).unsqueeze(0))
        if self.cache:
            self._kv[key] = kv
        return kv


def anomaly_grids(
    head: DictASHead, tokens: dict[int, Tensor], dictionary: ReferenceDictionary, scales: Sequence[int]
) -> Tensor:
    """Mean over (block, scale) of the per-patch score (1 − cos(P_s(g_V(F_q)), F_R))/2.

    Args:
        tokens: block → ``B × N × C`` raw query tokens (the blocks to use).
        scales: neighbourhood sides.

    Returns:
        ``B × h × w`` grids in [0, 1].
    """
    scores = []
    for block, raw in tokens.items():
        transformed = head.Value_Generator(raw)
        for scale in scales:
            queries = neighbourhood_pool(transformed, scale)
            retrieved = head.retrieve(queries, *dictionary.keys_values(block, scale, raw.device))
            scores.append((1 - F.cosine_similarity(queries, retrieved, dim=-1)) / 2)
    mean = torch.stack(scores).mean(0)
    side = grid_side(mean.shape[1])
    return mean.unflatten(1, (side, side))


def render_maps(grids: Tensor, size: int, sigma: float) -> Tensor:
    """``B × h × w`` grids → ``B × size × size`` maps: bilinear upsampling with align_corners=True, then
    Gaussian smoothing (scipy 'reflect', truncate 4; σ = 0 skips it).

    Upsampling is linear, so upsampling the mean of the (layer, scale) grids equals the official mean of
    the upsampled maps.
    """
    upsampled = F.interpolate(grids.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=True)
    return blur(upsampled.squeeze(1), sigma)


def text_prototypes(backbone: ClipBackbone, category: str) -> Tensor:
    """T_c = [t_normal, t_abnormal] ``D × 2`` (the official layout; :func:`~fsas_bench.methods.text.text_prototypes`
    transposed) of the raw category name (underscores kept): 245 normal, 175 abnormal sentences."""
    normal, abnormal = (backbone.encode_text(sentences(category, states, DICTAS_TEMPLATES))
                        for states in (NORMAL_STATES, DICTAS_ABNORMAL_STATES))  # fmt: skip
    return shared_prototypes(normal, abnormal).T.contiguous()


def text_probability(embeddings: Tensor, prototypes: Tensor) -> Tensor:
    """p_text = softmax(100·ê·T_c)[abnormal] of ``B × D`` global image embeddings and ``D × 2`` prototypes."""
    return anomaly_probability(CLIP_LOGIT_SCALE * F.normalize(embeddings, dim=-1) @ prototypes.to(embeddings))
