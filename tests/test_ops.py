"""Map operations against independent references (scipy, brute force)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from fsas_bench.methods.ops import gaussian_blur, min_cosine_distance, upsample_grid


@pytest.mark.parametrize("sigma", [1.0, 4.0, 6.0])
def test_gaussian_blur_equals_scipy(sigma):
    maps = torch.rand(3, 41, 29, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = np.stack([ndi.gaussian_filter(m, sigma, mode="reflect") for m in maps.numpy()])
    np.testing.assert_allclose(gaussian_blur(maps, sigma).numpy(), expected, atol=1e-12)


def test_gaussian_blur_sigma_zero_is_identity():
    maps = torch.rand(2, 8, 8)
    assert torch.equal(gaussian_blur(maps, 0.0), maps)


def test_min_cosine_distance_brute_force():
    gen = torch.Generator().manual_seed(1)
    q, m = torch.randn(7, 5, generator=gen), torch.randn(11, 5, generator=gen)
    expected = torch.tensor(
        [min((1 - torch.nn.functional.cosine_similarity(qi, mj, dim=0).item()) / 2 for mj in m) for qi in q]
    )
    torch.testing.assert_close(min_cosine_distance(q, m), expected, rtol=0, atol=1e-6)
    assert torch.allclose(min_cosine_distance(m, m), torch.zeros(11), atol=1e-6)


def test_upsample_grid_shape_and_constant():
    out = upsample_grid(torch.full((2, 3, 3), 0.25), 17)
    assert out.shape == (2, 17, 17) and torch.allclose(out, torch.full_like(out, 0.25))
