"""DictAS's self-supervised losses: L_query, the Contrastive Query Constraint and the Text Alignment
Constraint (spec dictas.md §8.3–§8.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fsas_bench.methods.dictas.torch_model import DictASHead, neighbourhood_pool
from fsas_bench.methods.text import CLIP_LOGIT_SCALE



def patch_masks(masks: Tensor, side: int) -> Tensor:
    """Abnormal-patch mask m_a ``B × side²`` (bool) of binary pixel masks ``B × S × S``: bilinear
    (align_corners=True) downsampling to the grid, then > 0.5."""
    grid = F.interpolate(masks.float().unsqueeze(1), size=(side, side), mode="bilinear", align_corners=True)
    return (grid > 0.5).flatten(1)


def lookup_losses(
    head: DictASHead, queries: Sequence[Tensor], references: Sequence[Tensor], abnormal: Tensor, scales: Sequence[int]
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """L_query and L_CQC summed over (layer, scale), each query looking up its own reference only.

    Args:
        queries: per layer ``B × N × C`` query tokens F̃_q (raw in phase 1, g_V-transformed in phase 2).
        references: per layer ``B × N × C`` raw reference tokens.
        abnormal: ``B × N`` abnormal-patch mask m_a.
        scales: neighbourhood sides (must contain 1: TAC uses the scale-1 retrievals).

    Returns:
        ``(L_query, L_CQC, retrieved)`` with ``retrieved`` the per-layer scale-1 F_R (``B × N × C``).
    """
    m_a = abnormal.to(queries[0].dtype)
    m_n = 1 - m_a
    loss_query = loss_cqc = queries[0].new_zeros(())
    retrieved = []
    for query, reference in zip(queries, references, strict=True):
        for scale in scales:
            q = neighbourhood_pool(query, scale)
            r = head.retrieve(q, *head.keys_values(neighbourhood_pool(reference, scale)))
            if scale == 1:
                retrieved.append(r)
            distance = 1 - F.cosine_similarity(q, r, dim=-1)  # B × N, in [0, 2] (not halved)
            l_n = (distance * m_n).sum(1) / (m_n.sum(1) + 1e-6)
            l_a = (distance * m_a).sum(1) / (m_a.sum(1) + 1e-6)
            loss_query = loss_query + l_n.mean()
            hinge = torch.where(l_a == 0, torch.zeros_like(l_n), l_n - l_a).clamp(min=0)
            loss_cqc = loss_cqc + hinge.sum() / ((hinge != 0).sum() + 1e-6)
    return loss_query, loss_cqc, retrieved


def tac_losses(
    head: DictASHead, queries: Sequence[Tensor], retrieved: Sequence[Tensor], text: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """The two cross-entropies of the Text Alignment Constraint.

    Args:
        queries: per layer ``B × N × C`` F̃_q.
        retrieved: per layer ``B × N × C`` scale-1 F_R.
        text: ``B × D × 2`` class prompt embeddings [t_normal, t_abnormal] of each sample.
        labels: ``B`` query labels (1 = a synthetic anomaly was pasted).

    Returns:
        ``(CE(query, label), CE(retrieved, normal))``.
    """

    def logits(layers: Sequence[Tensor]) -> Tensor:
        fused = F.normalize(head.Fuse_Feature([F.normalize(t, dim=-1) for t in layers]), dim=-1)
        return CLIP_LOGIT_SCALE * torch.einsum("bd,bdk->bk", fused, text)

    return F.cross_entropy(logits(queries), labels), F.cross_entropy(logits(retrieved), torch.zeros_like(labels))
