"""V-V ("CLIP Surgery") dual-path attention as a module swap over an upstream open_clip ViT (spec
finegrainedad.md §3): the backbone's ``vv_tokens`` feature.

Each swapped block reuses its upstream block's modules (no weight copies): one shared qkv projection of
u = ln_1(x_ori) feeds the original path softmax(q·kᵀ·s)·v and the surgery path softmax(v·vᵀ·s)·v; both go
through the same output projection. The original path is the upstream block exactly; the V-V path carries no
MLP and accumulates only attention outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DualPathBlock(nn.Module):
    """Wraps one upstream ``ResidualAttentionBlock`` (``nn.MultiheadAttention`` inside) with the V-V path."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def _attention(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Original and V-V attention outputs of ``B × L × C`` normalised inputs."""
        attn: nn.MultiheadAttention = self.block.attn
        batch, length, width = u.shape
        heads = attn.num_heads
        q, k, v = F.linear(u, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
        original = F.scaled_dot_product_attention(q, k, v)
        surgery = F.scaled_dot_product_attention(v, v, v)
        project = [o.transpose(1, 2).reshape(batch, length, width) for o in (original, surgery)]
        return tuple(attn.out_proj(o) for o in project)  # type: ignore[return-value]

    def forward(self, x_vv: Tensor, x_ori: Tensor) -> tuple[Tensor, Tensor]:
        """One block on both paths: ``(x_vv, x_ori)`` → ``(x_vv', x_ori')`` (each ``B × L × C``)."""
        block = self.block
        a_ori, a_vv = self._attention(block.ln_1(x_ori))
        x_ori = x_ori + block.ls_1(a_ori)
        x_ori = x_ori + block.ls_2(block.mlp(block.ln_2(x_ori)))
        return x_vv + block.ls_1(a_vv), x_ori


@dataclass
class DualPathOutputs:
    """What the dual-path encoder returns for ``B`` images (nothing normalised).

    Attributes:
        embedding: ``B × D`` projected CLS token of the original path.
        vv_tokens: ``B × N × D`` final V-V patch tokens after ``ln_post`` and ``proj`` (CLS dropped).
        taps: block index → ``B × N × C`` original-path patch tokens after that block (CLS dropped).
    """

    embedding: Tensor
    vv_tokens: Tensor
    taps: dict[int, Tensor]


class DualPathVisual(nn.Module):
    """The upstream ``VisionTransformer`` with every block swapped for a :class:`DualPathBlock`.

    Args:
        visual: ``model.visual`` of an open_clip CLIP (ViT with token pooling ``tok``, no attention pool).
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or not hasattr(visual, "transformer"):
            raise ValueError("V-V attention needs a plain open_clip VisionTransformer (no attention pooling)")
        self.visual = visual
        self.blocks = nn.ModuleList(DualPathBlock(b) for b in visual.transformer.resblocks)

    def forward(self, images: Tensor, taps: tuple[int, ...] = ()) -> DualPathOutputs:
        """Encode ``B × 3 × S × S`` images on both paths."""
        visual = self.visual
        x = visual._embeds(images)
        x_vv, x_ori = x, x
        tapped = {}
        for i, block in enumerate(self.blocks):
            x_vv, x_ori = block(x_vv, x_ori)
            if i in taps:
                tapped[i] = x_ori[:, 1:]
        pooled, _ = visual._pool(x_ori)
        vv = visual.ln_post(x_vv[:, 1:])
        if visual.proj is not None:
            pooled, vv = pooled @ visual.proj, vv @ visual.proj
        return DualPathOutputs(embedding=pooled, vv_tokens=vv, taps=tapped)


@torch.no_grad()
def vv_patch_tokens(visual: nn.Module, images: Tensor) -> Tensor:
    """``B × N × D`` final V-V patch tokens (after ``ln_post`` and ``proj``) of ``B × 3 × S × S`` images."""
    return DualPathVisual(visual)(images).vv_tokens
