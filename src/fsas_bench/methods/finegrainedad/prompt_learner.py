"""MLLP soft prompts (spec §5): learnable contexts and attribute gates over frozen token embeddings, every
prompt of every family assembled in one batch and encoded in one pass of the frozen text tower."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsas_bench.errors import UserError
from fsas_bench.methods.finegrainedad.prompts import ATTRIBUTES, Family, render
from fsas_bench.methods.text import encode_embedded_prompts, token_embeddings, tokenize

ROLES = ("normal", "handle", "learned")
GATE_GROUPS = ("normal", "abnormal")  # normal prompts use the normal gates; handle and learned the abnormal


@dataclass(frozen=True)
class FamilyRows:
    """Row indices of one family's prompts in the encoded batch."""

    name: str
    normal: Tensor
    handle: Tensor
    learned: Tensor

    @property
    def abnormal(self) -> Tensor:
        """Handle then learned rows."""
        return torch.cat([self.handle, self.learned])


@dataclass
class FamilyFeatures:
    """Text features of one family (``D`` = joint embedding width).

    Attributes:
        normal: ``D`` normalised mean of the raw normal features (n̄).
        abnormal: ``D`` normalised mean of the raw abnormal features (ā, handle and learned together).
        abnormal_each: ``A × D`` individually normalised abnormal features.
        handle, learned, normal_raw: raw features of those rows.
    """

    normal: Tensor
    abnormal: Tensor
    abnormal_each: Tensor
    handle: Tensor
    learned: Tensor
    normal_raw: Tensor


class PromptLearner(nn.Module):
    """Learnable ``normal_ctx`` (n_pro × n_ctx × W), ``abnormal_ctx`` (n_pro_ab × n_ctx_ab × W) and, when a
    family carries attributes, 2 × 4 gates (normal/abnormal × relation/color/texture/shape).

    Row i of a role uses ``normal_ctx[i % n_pro]`` and (learned rows) ``abnormal_ctx[i % n_pro_ab]``. Gated
    attribute prompts are added position-wise to the whole embedding sequence, their context included.

    Args:
        model: the frozen upstream open_clip CLIP (text tower used, never updated).
        arch: open_clip architecture name (tokenizer).
        families: the rendered families (:func:`~.prompts.build_families`).
        n_ctx, n_ctx_ab, n_pro, n_pro_ab: prompt sizes (4, 1, 1, 4 as released).
        candidate_overflow: ``cycle`` or ``raise`` when an attribute has fewer handle candidates than handle
            rows (:meth:`_attribute_embeddings`).
    """

    def __init__(
        self,
        model: nn.Module,
        arch: str,
        families: list[Family],
        n_ctx: int,
        n_ctx_ab: int,
        n_pro: int,
        n_pro_ab: int,
        candidate_overflow: str = "cycle",
    ) -> None:
        super().__init__()
        self.candidate_overflow = candidate_overflow
        self.text_model = [model]  # a list: not a submodule (frozen, shared, never saved with the learner)
        self.n_ctx, self.n_ctx_ab, self.n_pro, self.n_pro_ab = n_ctx, n_ctx_ab, n_pro, n_pro_ab
        width = model.ln_final.weight.shape[0]
        self.normal_ctx = nn.Parameter(torch.randn(n_pro, n_ctx, width) * 0.02)
        self.abnormal_ctx = nn.Parameter(torch.randn(n_pro_ab, n_ctx_ab, width) * 0.02)
        with_attributes = any(f.attributes for f in families)
        self.gates = nn.Parameter(torch.randn(len(GATE_GROUPS), len(ATTRIBUTES))) if with_attributes else None
        texts, ctx_rows, actx_rows, rows = [], [], [], []
        for family in families:
            indices = {}
            for role in ROLES:
                sentences = getattr(family, role)
                start = len(texts)
                texts += [render(s, n_ctx, n_ctx_ab if role == "learned" else 0) for s in sentences]
                ctx_rows += [i % n_pro for i in range(len(sentences))]
                actx_rows += [i % n_pro_ab if role == "learned" else -1 for i in range(len(sentences))]
                indices[role] = torch.arange(start, len(texts))
            rows.append(FamilyRows(family.name, **indices))
        self.rows = rows
        tokens = tokenize(model, arch, texts)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("fixed", self._zero_context(token_embeddings(model, tokens), actx_rows), persistent=False)
        self.register_buffer("ctx_rows", torch.tensor(ctx_rows), persistent=False)
        self.register_buffer("actx_rows", torch.tensor(actx_rows), persistent=False)
        attr, gate_mask = self._attribute_embeddings(model, arch, families, len(texts))
        self.register_buffer("attribute_fixed", attr, persistent=False)
        self.register_buffer("gate_mask", gate_mask, persistent=False)

    def _zero_context(self, embeddings: Tensor, actx_rows: list[int]) -> Tensor:
        """Token embeddings with the placeholder positions zeroed (the contexts are added there)."""
        out = embeddings.clone()
        out[:, 1 : 1 + self.n_ctx] = 0
        learned = torch.tensor(actx_rows) >= 0
        out[learned, 1 + self.n_ctx : 1 + self.n_ctx + self.n_ctx_ab] = 0
        return out

    def _attribute_embeddings(
        self, model: nn.Module, arch: str, families: list[Family], n_rows: int
    ) -> tuple[Tensor, Tensor]:
        """Per row and gate, the fixed embedding of the attribute prompt summed onto it (``T × 2 × 4 × L × W``
        stored sparsely as ``T × 4 × L × W`` plus a ``T × 2 × 4`` 0/1 mask selecting the gate group).

        Handle rows take the attribute's handle candidates ranked by mean embedding value (descending, the
        official top-k rule). With fewer candidates than handle rows the released top-k raises; ``cycle``
        (fsas-bench's benchmark choice) repeats the ranking instead, and an attribute without any candidate is
        left out of the handle rows; ``raise`` stops with a one-line error as the released code does.
        """
        length, width = self.fixed.shape[1:]
        attr = torch.zeros(n_rows, len(ATTRIBUTES), length, width)
        mask = torch.zeros(n_rows, len(GATE_GROUPS), len(ATTRIBUTES))

        def embed(sentences: list[str], learned: bool) -> Tensor:
            texts = [render(s, self.n_ctx, self.n_ctx_ab if learned else 0) for s in sentences]
            embedded = token_embeddings(model, tokenize(model, arch, texts))
            return self._zero_context(embedded, [0 if learned else -1] * len(texts))

        for family, rows in zip(families, self.rows, strict=True):
            for a, name in enumerate(ATTRIBUTES):
                if name not in family.attributes:
                    continue
                normal, handle = family.attributes[name]
                if self.candidate_overflow == "raise" and len(handle) < len(rows.handle):
                    raise UserError(
                        f"{family.name} '{name}' has {len(handle)} handle candidates for {len(rows.handle)} handle "
                        "prompts (the released top-k fails): add vocabulary or set candidate_overflow=cycle"
                    )
                attr[rows.normal, a], mask[rows.normal, 0, a] = embed([normal], learned=False)[0], 1
                attr[rows.learned, a], mask[rows.learned, 1, a] = embed([normal], learned=True)[0], 1
                if not handle:  # no negatives in the vocabulary: the handle rows get no such attribute
                    continue
                candidates = embed(list(handle), learned=False)
                ranked = candidates.mean(dim=(1, 2)).argsort(descending=True, stable=True)
                for i, row in enumerate(rows.handle.tolist()):
                    attr[row, a] = candidates[ranked[i % len(ranked)]]
                mask[rows.handle, 1, a] = 1
        return attr, mask

    def embeddings(self) -> Tensor:
        """Assembled ``T × L × W`` prompt embeddings."""
        x = self.fixed
        scale = torch.ones(x.shape[0], device=x.device)
        if self.gates is not None:
            weights = (self.gate_mask * torch.sigmoid(self.gates)[None]).sum(1)  # T × 4
            x = x + torch.einsum("ta,talw->tlw", weights, self.attribute_fixed)
            scale = scale + weights.sum(1)  # every attribute prompt carries the same contexts
        ctx = self.normal_ctx[self.ctx_rows] * scale[:, None, None]
        learned = self.actx_rows >= 0
        actx = self.abnormal_ctx[self.actx_rows.clamp(min=0)] * (scale * learned)[:, None, None]
        pad = x.shape[1] - 1 - self.n_ctx - self.n_ctx_ab
        placed = torch.cat([torch.zeros_like(x[:, :1]), ctx, actx, torch.zeros_like(x[:, : max(pad, 0)])], dim=1)
        return x + placed[:, : x.shape[1]]

    def forward(self) -> list[FamilyFeatures]:
        """Encode every prompt once; per family, its normal/abnormal features (spec §5.3)."""
        raw = encode_embedded_prompts(self.text_model[0], self.embeddings(), self.tokens)
        return [family_features(raw, rows) for rows in self.rows]


def family_features(raw: Tensor, rows: FamilyRows) -> FamilyFeatures:
    """n̄, ā (normalised means of raw features, PromptAD's "V1"), and the individually normalised abnormals."""
    abnormal = raw[rows.abnormal]
    return FamilyFeatures(
        normal=F.normalize(raw[rows.normal].mean(0), dim=-1),
        abnormal=F.normalize(abnormal.mean(0), dim=-1),
        abnormal_each=F.normalize(abnormal, dim=-1),
        handle=raw[rows.handle],
        learned=raw[rows.learned],
        normal_raw=raw[rows.normal],
    )
