"""Patch-kNN: distances against brute force, batch-size invariance, image-score rules."""

from __future__ import annotations

import pytest
import torch

from fsas_bench.backbones import FeatureCache
from fsas_bench.errors import UserError
from fsas_bench.methods import get_method
from fsas_bench.methods.ops import memory_distance_grid
from fsas_bench.methods.patchknn.config import PatchKNNConfig
from fsas_bench.methods.patchknn.torch_model import PatchKNNModel
from tests.helpers import split_batch


@pytest.fixture
def method(tiny_backbone):
    cls = get_method("patchknn")
    return cls(PatchKNNConfig(output_size=64), FeatureCache(tiny_backbone))


def test_default_blocks_follow_promptad_proportions(method):
    assert method.model.blocks == (1, 3)  # (2, 7) of a 12-block ViT, scaled to 6 blocks


def test_grid_distance_is_mean_over_blocks_of_min_over_memory():
    gen = torch.Generator().manual_seed(0)
    memory = {0: torch.randn(8, 4, generator=gen), 2: torch.randn(8, 4, generator=gen)}
    query = {0: torch.randn(4, 4, generator=gen), 2: torch.randn(4, 4, generator=gen)}
    model = PatchKNNModel((0, 2), output_size=8, sigma=0.0, image_score="grid_max")
    model.set_memory(memory)
    cos = torch.nn.functional.cosine_similarity
    expected = torch.stack(
        [torch.stack([min((1 - cos(q, m, dim=0)) / 2 for m in memory[b]) for q in query[b]]) for b in (0, 2)]
    ).mean(0)
    grid = memory_distance_grid([query[0], query[2]], [memory[0], memory[2]])
    torch.testing.assert_close(grid.flatten(), expected, rtol=0, atol=1e-6)
    maps, scores = model([query])
    assert maps.shape == (1, 8, 8) and scores.item() == pytest.approx(expected.max().item(), abs=1e-6)


def test_reference_image_scores_zero_and_batch_size_never_matters(method, image_files):
    batch = image_files(6, seed=3)
    method.set_support([split_batch(batch, [0, 1])], "cat")
    whole = method.predict_step(batch, 0)
    parts = [method.predict_step(split_batch(batch, [i]), i) for i in range(6)]
    assert torch.equal(whole.anomaly_maps, torch.cat([p.anomaly_maps for p in parts]))
    assert torch.equal(whole.image_scores, torch.cat([p.image_scores for p in parts]))
    assert whole.anomaly_maps.shape == (6, 64, 64)
    assert whole.image_scores[:2].abs().max() < 1e-6 and whole.image_scores[2:].min() > 1e-4


def test_image_score_rules(tiny_backbone, image_files):
    cls = get_method("patchknn")
    batch = image_files(3, seed=4)
    cache = FeatureCache(tiny_backbone)
    outs = {}
    for rule in ("map_max", "grid_max"):
        m = cls(PatchKNNConfig(output_size=64, image_score=rule), cache)
        m.set_support([split_batch(batch, [0])], "cat")
        outs[rule] = m.predict_step(split_batch(batch, [1, 2]), 0)
    torch.testing.assert_close(outs["map_max"].image_scores, outs["map_max"].anomaly_maps.flatten(1).amax(1))
    assert torch.all(outs["grid_max"].image_scores >= outs["map_max"].image_scores)  # smoothing lowers peaks
    with pytest.raises(UserError, match="image_score"):
        cls(PatchKNNConfig(image_score="mean"), cache)
