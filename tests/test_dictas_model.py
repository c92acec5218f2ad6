"""DictAS head and lookup: sparsemax, the AttnBlock structure, parameter counts and names, pooling, maps,
batch invariance and the reference K/V cache (spec dictas.md §3–§5, §15)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from fsas_bench.methods.dictas.losses import lookup_losses, patch_masks
from fsas_bench.methods.dictas.torch_model import sparsemax
from fsas_bench.methods.dictas.torch_model import (
    AttnBlock,
    DictASHead,
    ReferenceDictionary,
    anomaly_grids,
    neighbourhood_pool,
    render_maps,
)


def brute_force_simplex_projection(z: np.ndarray) -> np.ndarray:
    """argmin ‖p − z‖² over the simplex, by trying every support set (small M only)."""
    best, best_cost = None, math.inf
    for size in range(1, z.size + 1):
        for support in itertools.combinations(range(z.size), size):
            idx = list(support)
            p = np.zeros_like(z)
            p[idx] = z[idx] - (z[idx].sum() - 1) / size
            if (p >= 0).all() and (cost := ((p - z) ** 2).sum()) < best_cost:
                best, best_cost = p, cost
    return best


def test_sparsemax_is_the_exact_simplex_projection():
    torch.manual_seed(0)
    z = torch.randn(40, 7, dtype=torch.float64) * 2
    p = sparsemax(z)
    assert (p >= 0).all() and torch.allclose(p.sum(-1), torch.ones(40, dtype=torch.float64), atol=1e-12)
    expected = np.stack([brute_force_simplex_projection(row) for row in z.numpy()])
    np.testing.assert_allclose(p.numpy(), expected, atol=1e-12)
    assert (p == 0).any(dim=-1).float().mean() > 0.5  # sparse, with exact zeros
    np.testing.assert_array_equal(sparsemax(z + 3.5).numpy() > 0, p.numpy() > 0)
    torch.testing.assert_close(sparsemax(z + 3.5), p, atol=1e-12, rtol=0)
    # Entries at or below τ are exactly zero; those above are z − τ.
    tau = (z - p).where(p > 0, torch.nan).nanmean(-1, keepdim=True)
    assert torch.equal(p == 0, z <= tau + 1e-12)


def test_sparsemax_long_rows_with_short_and_long_supports():
    torch.manual_seed(8)
    spread = torch.tensor([40.0, 10.0, 0.01, 0.001], dtype=torch.float64)[:, None]  # short → full supports
    z = (torch.randn(4, 300, dtype=torch.float64) * spread).requires_grad_()
    p = sparsemax(z)
    lo, hi = z.min(-1, keepdim=True).values - 1, z.max(-1, keepdim=True).values
    for _ in range(200):  # bisection on τ: Σ max(z − τ, 0) = 1 (an independent reference)
        mid = (lo + hi) / 2
        above = (z - mid).clamp(min=0).sum(-1, keepdim=True) > 1
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    torch.testing.assert_close(p, (z - lo).clamp(min=0), atol=1e-9, rtol=0)
    supports = (p > 0).sum(-1)
    assert supports[0] < 64 and supports[3] > 64  # both the prefix and the full-sort path are exercised
    assert torch.autograd.gradcheck(sparsemax, (z,))


def test_sparsemax_any_axis_and_float32_rows_sum_to_one():
    torch.manual_seed(1)
    logits = torch.randn(3, 50, 5) * 4
    out = sparsemax(logits, dim=1)
    torch.testing.assert_close(out.sum(1), torch.ones(3, 5), atol=1e-6, rtol=0)
    torch.testing.assert_close(out, sparsemax(logits.transpose(1, 2), dim=-1).transpose(1, 2))


def test_sparsemax_gradient_is_the_sparsemax_jacobian():
    torch.manual_seed(2)
    z = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sparsemax, (z,))
    for row in z.detach():
        jac = torch.autograd.functional.jacobian(sparsemax, row)
        s = (sparsemax(row) > 0).double()
        torch.testing.assert_close(jac, torch.diag(s) - torch.outer(s, s) / s.sum())


def test_parameter_counts_match_the_spec():
    block = AttnBlock(1024)
    assert sum(p.numel() for p in block.parameters()) == 6_297_600
    head = DictASHead(1024, 768, 4)
    generators = sum(p.numel() for n, p in head.named_parameters() if not n.startswith("Fuse_Feature"))
    assert generators == 18_892_800
    assert sum(p.numel() for p in head.parameters()) == 21_384_961


def official_layout(width: int, embed: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of an official ``Mymodel`` state dict (written out from the spec, §3.1–§3.4)."""
    block = {
        "q_proj.weight": (width, width), "k_proj.weight": (width, width), "v_proj.weight": (width, width),
        "norm1.weight": (width,), "norm1.bias": (width,),
        "TwoLayerMLP.linear1.weight": (width, width), "TwoLayerMLP.linear1.bias": (width,),
        "TwoLayerMLP.linear2.weight": (width, width), "TwoLayerMLP.linear2.bias": (width,),
        "TwoLayerMLP.norm.weight": (width,), "TwoLayerMLP.norm.bias": (width,),
        "TwoLayerMLP.linear3.weight": (width, width),
    }  # fmt: skip
    layout = {}
    for prefix in ("Query_Generator.", "Key_Generator.", "Value_Generator.AttnBlock."):
        layout.update({prefix + k: v for k, v in block.items()})
    layout.update({
        "Fuse_Feature.fuse_modules.weight": (width // 2, 4 * width), "Fuse_Feature.fuse_modules.bias": (width // 2,),
        "Fuse_Feature.compress.weight": (1, width // 2), "Fuse_Feature.compress.bias": (1,),
        "Fuse_Feature.post_process.weight": (embed, width // 2), "Fuse_Feature.post_process.bias": (embed,),
    })  # fmt: skip
    return layout


def test_official_checkpoint_layout_loads_strictly():
    layout = official_layout(1024, 768)
    state = {key: torch.randn(shape) for key, shape in layout.items()}
    head = DictASHead(1024, 768, 4)
    head.load_state_dict(state, strict=True)
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == layout
    key = "Value_Generator.AttnBlock.TwoLayerMLP.linear3.weight"
    assert torch.equal(head.state_dict()[key], state[key])


def test_initialisation():
    head = DictASHead(256, 64, 4)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert abs(weights.std().item() - 0.02) < 5e-4 and abs(weights.mean().item()) < 5e-4
    assert all(m.bias is None or not m.bias.any() for m in linears)
    norms = [m for m in head.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all((m.weight == 1).all() and not m.bias.any() for m in norms)


def test_attn_block_matches_the_spec_steps():
    torch.manual_seed(3)
    block = AttnBlock(32, heads=4).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 9, 32)
    x0 = F.layer_norm(x, (32,), block.norm1.weight, block.norm1.bias)
    q, k, v = (x0 @ w.T for w in (block.q_proj.weight, block.k_proj.weight, block.v_proj.weight))
    heads = [
        torch.softmax(q[..., h * 8 : (h + 1) * 8] @ k[..., h * 8 : (h + 1) * 8].transpose(1, 2) / math.sqrt(8), -1)
        @ v[..., h * 8 : (h + 1) * 8]
        for h in range(4)
    ]
    mlp = block.TwoLayerMLP
    y = mlp.linear1(torch.cat(heads, -1)) + x0
    y = F.layer_norm(mlp.linear2(y), (32,), mlp.norm.weight, mlp.norm.bias) @ mlp.linear3.weight.T
    torch.testing.assert_close(block(x), y, atol=1e-5, rtol=1e-5)


def test_neighbourhood_pool_is_a_zero_padded_three_by_three_mean():
    torch.manual_seed(4)
    tokens = torch.randn(2, 25, 3)
    grid = tokens.view(2, 5, 5, 3).numpy()
    padded = np.pad(grid, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = sum(padded[:, i : i + 5, j : j + 5] for i in range(3) for j in range(3)) / 9
    np.testing.assert_allclose(neighbourhood_pool(tokens, 3).view(2, 5, 5, 3).numpy(), expected, atol=1e-6)
    assert torch.equal(neighbourhood_pool(tokens, 1), tokens)


def test_render_maps_is_align_corners_upsampling_then_scipy_gaussian():
    torch.manual_seed(5)
    grids = torch.rand(2, 6, 6, dtype=torch.float64)
    maps = render_maps(grids, 48, 6.0)
    up = F.interpolate(grids[:, None], size=(48, 48), mode="bilinear", align_corners=True)[:, 0].numpy()
    expected = np.stack([ndimage.gaussian_filter(m, 6.0, mode="reflect", truncate=4.0) for m in up])
    np.testing.assert_allclose(maps.numpy(), expected, atol=1e-10)


@pytest.fixture
def head_and_dictionary():
    torch.manual_seed(6)
    head = DictASHead(32, 16, 2).eval()
    references = {0: torch.randn(3, 16, 32), 4: torch.randn(3, 16, 32)}  # k = 3 references of a 4×4 grid
    return head, references


def test_lookup_scores_follow_the_formula(head_and_dictionary):
    head, references = head_and_dictionary
    queries = {b: torch.randn(2, 16, 32) for b in references}
    with torch.no_grad():
        grids = anomaly_grids(head, queries, ReferenceDictionary(head, references), (1, 3))
        expected = []
        for b, raw in queries.items():
            transformed = raw + head.Value_Generator.AttnBlock(raw)
            for s in (1, 3):
                q = neighbourhood_pool(transformed, s)
                entries = neighbourhood_pool(references[b], s).reshape(1, 48, 32)
                keys, values = head.Key_Generator(entries), head.Value_Generator(entries)
                weights = sparsemax(head.Query_Generator(q) @ keys.transpose(1, 2) / math.sqrt(32))
                expected.append((1 - F.cosine_similarity(q, weights @ values, dim=-1)) / 2)
    torch.testing.assert_close(grids, torch.stack(expected).mean(0).view(2, 4, 4))
    assert ((grids >= 0) & (grids <= 1)).all()


def test_batch_invariance_and_kv_cache(head_and_dictionary):
    head, references = head_and_dictionary
    queries = {b: torch.randn(5, 16, 32) for b in references}
    calls = []
    head.Key_Generator.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        cached = ReferenceDictionary(head, references, cache=True)
        batched = anomaly_grids(head, queries, cached, (1, 3))
        single = torch.cat(
            [anomaly_grids(head, {b: t[i : i + 1] for b, t in queries.items()}, cached, (1, 3)) for i in range(5)]
        )
        assert len(calls) == 4  # F_K once per (block, scale), reused by all 6 calls
        recomputed = anomaly_grids(head, queries, ReferenceDictionary(head, references, cache=False), (1, 3))
    torch.testing.assert_close(single, batched, atol=1e-5, rtol=0)
    assert torch.equal(recomputed, batched)


def test_training_losses_on_a_constructed_batch(head_and_dictionary):
    head, _ = head_and_dictionary
    torch.manual_seed(7)
    queries, references = [torch.randn(3, 16, 32)] * 2, [torch.randn(3, 16, 32)] * 2
    masks = torch.zeros(3, 32, 32)
    masks[0, :16, :16] = 1  # sample 0: top-left quarter abnormal; samples 1, 2 normal
    abnormal = patch_masks(masks > 0.5, 4)
    assert abnormal[0].view(4, 4)[:2, :2].all() and abnormal.sum() == 4
    loss_query, loss_cqc, retrieved = lookup_losses(head, queries, references, abnormal, (1, 3))
    assert len(retrieved) == 2 and retrieved[0].shape == (3, 16, 32)
    expected_query = expected_cqc = 0.0
    for query, reference in zip(queries, references):
        for s in (1, 3):
            q = neighbourhood_pool(query, s)
            d = 1 - F.cosine_similarity(q, head.retrieve(q, *head.keys_values(neighbourhood_pool(reference, s))), dim=-1)
            l_n = torch.stack([d[0][~abnormal[0]].mean(), d[1].mean(), d[2].mean()])
            expected_query += l_n.mean()
            expected_cqc += max(l_n[0] - d[0][abnormal[0]].mean(), 0)  # only sample 0 has an anomaly
    torch.testing.assert_close(loss_query, torch.as_tensor(expected_query), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_cqc, torch.as_tensor(expected_cqc, dtype=torch.float32), atol=1e-5, rtol=1e-5)
