"""Training losses of PromptAD / FineGrainedAD (spec §7), vectorised over shots and patches.

``tokens`` are ``k × N × D`` patch tokens (unit norm, or re-weighted by a region map), or ``k × D`` global
embeddings for PromptAD's separate image-score prompts; ``tau`` is the raw, *not exponentiated* ``logit_scale``
parameter, as the official code uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fsas_bench.methods.finegrainedad.prompt_learner import FamilyFeatures

def v2t_loss(tokens: Tensor, normal: Tensor, abnormal_each: Tensor, tau: Tensor) -> Tensor:
    """Cross-entropy of τ·[v·n̄, v·a_1, …, v·a_A] with target 0 ("normal"), averaged over every row v."""
    logits = tau * torch.cat([tokens @ normal[:, None], tokens @ abnormal_each.T], dim=-1)
    logits = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


def triplet_loss(tokens: Tensor, normal: Tensor, abnormal: Tensor, margin: float) -> Tensor:
    """mean(max(0, D(V, n̄) − D(V, ā) + margin)) with squared distances summed over axis 1, as released: the
    *token* axis of ``k × N × D`` patch tokens (the official quirk; the mean is then over ``k × D`` entries),
    the channel axis of ``k × D`` embeddings. Released margins: PromptAD 0, FineGrainedAD 1."""
    d_normal = ((tokens - normal) ** 2).sum(dim=1)
    d_abnormal = ((tokens - abnormal) ** 2).sum(dim=1)
    return F.relu(d_normal - d_abnormal + margin).mean()


def match_loss(handle: Tensor, learned: Tensor) -> Tensor:
    """‖mean(normalise(handle)) − mean(normalise(learned))‖² (raw ``H × D`` and ``L × D`` features)."""
    return (F.normalize(handle, dim=-1).mean(0) - F.normalize(learned, dim=-1).mean(0)).pow(2).sum()


def reg_loss(image: FamilyFeatures, entities: list[FamilyFeatures], background: FamilyFeatures) -> Tensor:
    """‖mean(n(learned image)) − mean(n(Σ_e learned entity_e)) − mean(n(normal background))‖₂ (not squared;
    the entity sum is taken per prompt index before normalising)."""
    entity_sum = torch.stack([e.learned for e in entities]).sum(0)
    diff = (
        F.normalize(image.learned, dim=-1).mean(0)
        - F.normalize(entity_sum, dim=-1).mean(0)
        - F.normalize(background.normal_raw, dim=-1).mean(0)
    )
    return diff.norm()


def normal_align_loss(image: FamilyFeatures, entities: list[FamilyFeatures], background: FamilyFeatures) -> Tensor:
    """The released-but-unused term: ‖n̄_image − n(Σ_e mean normal_e + mean normal_bg)‖²."""
    parts = torch.stack([f.normal_raw.mean(0) for f in (*entities, background)]).sum(0)
    return (image.normal - F.normalize(parts, dim=-1)).pow(2).sum()


def family_terms(tokens: Tensor, family: FamilyFeatures, tau: Tensor, margin: float) -> Tensor:
    """L_v2t + L_tri (with ``margin``) of one family on ``tokens``."""
    return v2t_loss(tokens, family.normal, family.abnormal_each, tau) + triplet_loss(
        tokens, family.normal, family.abnormal, margin
    )


def total_loss(
    tokens: Tensor,
    families: list[FamilyFeatures],
    region_weights: Tensor | None,
    tau: Tensor,
    lambda_match: float,
    use_reg: bool,
    use_normal_align: bool,
    margin: float,
) -> dict[str, Tensor]:
    """The spec §7 total and its parts.

    Args:
        tokens: ``k × N × D`` unit-norm V-V patch tokens of the shots (``k × D`` unit-norm global embeddings for
            PromptAD's image-score prompts, one family).
        families: ``[image]`` or ``[image, entity_1 … entity_E, background]``.
        region_weights: ``(E + 1) × k × N`` maps R_e (background last), or ``None`` (all ones).
        tau: the raw logit scale.
        lambda_match: λ₁ (0.001).
        use_reg: add L_reg (FineGrainedAD ``full``).
        use_normal_align: add the unused normal-alignment term (off as released).
        margin: the triplet margin (PromptAD 0, FineGrainedAD 1 as released).
    """
    image, parts = families[0], families[1:]
    out = {
        "image": family_terms(tokens, image, tau, margin),
        "match": lambda_match * match_loss(image.handle, image.learned),
    }
    if parts:
        weights = region_weights if region_weights is not None else torch.ones(len(parts), *tokens.shape[:2])
        weighted = tokens[None] * weights.to(tokens)[..., None]  # (E + 1) × k × N × D
        out["parts"] = sum(family_terms(w, f, tau, margin) for w, f in zip(weighted, parts, strict=True))
        out["parts_match"] = lambda_match * sum(match_loss(f.handle, f.learned) for f in parts[:-1])
        if use_reg:
            out["reg"] = reg_loss(image, parts[:-1], parts[-1])
        if use_normal_align:
            out["normal_align"] = normal_align_loss(image, parts[:-1], parts[-1])
    out["total"] = sum(out.values())
    return out
