"""Shared method operations against independent references (scipy, brute-force loops, published tap tables)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from fsas_bench.methods import get_method
from fsas_bench.methods.ops import (
    blur, harmonic_mean, memory_distance_grid, min_cosine_distance, scaled_taps, upsample_and_blur,
)  # fmt: skip


def test_min_cosine_distance_brute_force():
    gen = torch.Generator().manual_seed(1)
    q, m = torch.randn(7, 5, generator=gen), torch.randn(11, 5, generator=gen)
    expected = torch.tensor(
        [min((1 - torch.nn.functional.cosine_similarity(qi, mj, dim=0).item()) / 2 for mj in m) for qi in q]
    )
    torch.testing.assert_close(min_cosine_distance(q, m), expected, rtol=0, atol=1e-6)
    assert torch.allclose(min_cosine_distance(m, m), torch.zeros(11), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 1.0, 4.0, 6.0])
def test_upsample_and_blur_equals_interpolate_then_scipy(sigma):
    grids = torch.rand(3, 14, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    two_steps = torch.nn.functional.interpolate(grids[:, None], size=(50, 50), mode="bilinear", align_corners=False)
    expected = np.stack([ndi.gaussian_filter(m, sigma, mode="reflect") if sigma else m for m in two_steps[:, 0].numpy()])
    np.testing.assert_allclose(upsample_and_blur(grids, 50, sigma).numpy(), expected, atol=1e-12)


def test_upsample_and_blur_keeps_constants_and_batches_independent():
    grids = torch.rand(4, 5, 5, generator=torch.Generator().manual_seed(3))
    whole = upsample_and_blur(grids, 37, 4.0)
    assert torch.equal(whole, torch.cat([upsample_and_blur(g[None], 37, 4.0) for g in grids]))
    const = upsample_and_blur(torch.full((1, 3, 3), 0.25), 17, 4.0)
    assert const.shape == (1, 17, 17) and torch.allclose(const, torch.full_like(const, 0.25))


def _loop_distance(q: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    cos = torch.nn.functional.cosine_similarity
    return torch.tensor([min((1 - cos(qi, mj, dim=0).item()) / 2 for mj in m) for qi in q], dtype=torch.float64)


def test_min_cosine_distance_batched_never_mixes_items_and_broadcasts_a_shared_memory():
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(3, 2, 6, 5, dtype=torch.float64, generator=gen)  # B × L × N × C
    own = torch.randn(3, 2, 9, 5, dtype=torch.float64, generator=gen)  # each query its own memory
    shared = own[:1]  # one memory for every query (broadcast)
    got, got_shared = min_cosine_distance(q, own), min_cosine_distance(q, shared)
    assert got.shape == got_shared.shape == (3, 2, 6)
    for b in range(3):
        for layer in range(2):
            for dist, memory in ((got, own[b, layer]), (got_shared, own[0, layer])):
                torch.testing.assert_close(dist[b, layer], _loop_distance(q[b, layer], memory), rtol=0, atol=1e-12)


def test_min_cosine_distance_zero_is_positive_zero():
    m = torch.randn(4, 8, generator=torch.Generator().manual_seed(5))
    dist = min_cosine_distance(m * 3.0, m)  # each row's own direction: 0 up to rounding
    assert (dist >= 0).all() and not torch.signbit(dist).any() and (dist < 1e-6).all()


def test_memory_distance_grid_is_mean_over_taps_on_the_square_grid():
    gen = torch.Generator().manual_seed(6)
    taps = [torch.randn(9, 4, generator=gen) for _ in range(3)]
    memory = [torch.randn(5, 4, generator=gen) for _ in range(3)]
    expected = sum(_loop_distance(t.double(), m.double()) for t, m in zip(taps, memory, strict=True)) / 3
    grid = memory_distance_grid(taps, memory)
    assert grid.shape == (3, 3)
    torch.testing.assert_close(grid.flatten().double(), expected, rtol=0, atol=1e-6)


def test_harmonic_mean_definition_and_zero_limit():
    values = torch.tensor([[2.0, 1.0], [4.0, 0.0], [4.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(harmonic_mean(values)[0], torch.tensor(3 / (1 / 2 + 1 / 4 + 1 / 4), dtype=torch.float64))
    assert harmonic_mean(values)[1] == 0  # a zero value gives 0, never NaN
    with_eps = torch.tensor(3 / (1 / 2 + 1 + 1 / 4), dtype=torch.float64)
    torch.testing.assert_close(harmonic_mean(values, eps=1.0)[1], with_eps)


@pytest.mark.parametrize("sigma", [0.0, 1.5, 6.0])
def test_blur_equals_scipy_at_the_same_size(sigma):
    maps = torch.rand(2, 21, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    expected = np.stack([ndi.gaussian_filter(m, sigma, mode="reflect") if sigma else m for m in maps.numpy()])
    np.testing.assert_allclose(blur(maps, sigma).numpy(), expected, atol=1e-12)


def test_scaled_taps_rule():
    assert scaled_taps((7, 9, 11), 12, 12) == (6, 8, 10)
    assert scaled_taps((1, 12), 12, 1) == (0, 0)
    for depth in range(1, 49):
        for paper in ((3, 8), (7, 9, 11)):
            want = tuple(int(np.ceil(b * depth / 12 - 1e-12)) - 1 for b in paper)
            assert scaled_taps(paper, 12, depth) == want


# Each method's default taps (0-based) at the depths of the backbones it is published on or run with: the
# published taps are exact at the published depth (12 blocks: PromptAD's (2, 7), InCTRL's blocks 7, 9, 11;
# 24 blocks: DictAS's layers 6, 12, 18, 24), and fsas-tiny (6 blocks) gives the embedded benchmark's taps.
TAPS_TABLE = {
    "patchknn": {6: ("block1", "block3"), 12: ("block2", "block7"), 24: ("block5", "block15")},
    "finegrainedad": {6: ("block1", "block3"), 12: ("block2", "block7"), 24: ("block5", "block15")},
    "promptad": {6: ("block1", "block3"), 12: ("block2", "block7"), 24: ("block5", "block15")},
    "inctrl": {6: ("block3", "block4", "block5"), 12: ("block6", "block8", "block10"),
               24: ("block13", "block17", "block21")},
    "dictas": {6: ("block1", "block2", "block4", "block5"), 12: ("block2", "block5", "block8", "block11"),
               24: ("block5", "block11", "block17", "block23")},
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(TAPS_TABLE))
def test_each_method_keeps_its_published_taps(method):
    cls = get_method(method)
    for depth, taps in TAPS_TABLE[method].items():
        names = cls.feature_names(cls.config_cls(), depth)
        assert tuple(n for n in names if n.startswith("block")) == taps, (method, depth)
    explicit = cls.config_cls(blocks=(0, 4))
    assert [n for n in cls.feature_names(explicit, 12) if n.startswith("block")] == ["block0", "block4"]
