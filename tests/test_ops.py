"""Map operations against independent references (scipy, brute force)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from fsas_bench.methods.ops import min_cosine_distance, upsample_and_blur


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
