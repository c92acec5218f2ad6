"""Sparsemax (Martins & Astudillo, ICML 2016): the Euclidean projection of logits onto the probability simplex."""

from __future__ import annotations

import torch
from torch import Tensor

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
