"""WinCLIP / WinCLIP+: prompt ensemble, harmonic aggregation, zero-shot reduction, batch invariance, caching."""

from __future__ import annotations

import pytest
import torch

from fsas_bench.backbones import FeatureCache
from fsas_bench.backbones.clip import sliding_windows
from fsas_bench.methods import get_method
from fsas_bench.methods.winclip import WinCLIPConfig, WindowAggregator, harmonic_mean
from fsas_bench.methods.winclip.prompts import prompt_ensemble


def _batch(images: torch.Tensor, names: list[str]) -> dict:
    return {"image": images, "sha": names}


def test_prompt_ensemble_sizes():
    normal, anomalous = prompt_ensemble("hex nut")
    assert (len(normal), len(anomalous)) == (154, 88) and len(set(normal)) == 154
    assert "a photo of a flawless hex nut for visual inspection." in normal
    assert "a photo of the hex nut with damage for anomaly detection." in anomalous
    normal21, anomalous21 = prompt_ensemble("hex nut", "anomalib21")
    assert (len(normal21), len(anomalous21)) == (147, 84)


def test_window_aggregation_is_the_harmonic_mean_of_covering_windows():
    grid = (4, 5)
    scores = torch.rand(12, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.1
    windows = sliding_windows(grid, 2)
    expected = torch.zeros(20, dtype=torch.float64)
    for patch in range(20):
        covering = [scores[w] for w in range(len(windows)) if patch in windows[w].tolist()]
        expected[patch] = len(covering) / sum(1 / s for s in covering)
    torch.testing.assert_close(WindowAggregator(grid, 2)(scores).flatten(), expected, rtol=0, atol=1e-12)
    zero = scores.clone()
    zero[0] = 0.0  # a zero score makes its patches 0 (the limit), not NaN
    out = WindowAggregator(grid, 2)(zero)
    assert out[0, 0] == 0 and torch.isfinite(out).all()
    assert harmonic_mean(torch.tensor([[2.0], [2.0], [0.5]])).item() == pytest.approx(3 / (0.5 + 0.5 + 2))


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(5, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def test_zero_shot_is_the_text_branch_only(tiny_backbone, images):
    cache = FeatureCache(tiny_backbone)
    method = get_method("winclip")(WinCLIPConfig(), cache)
    method.set_support([], "hex_nut")
    out = method.predict_step(_batch(images[:2], ["a", "b"]), 0)
    feats = cache.features(images[:2], ["a", "b"], method.names)
    model = method.model
    for i, f in enumerate(feats):
        zs = model.class_score(f["embedding"])
        maps = [zs.expand(model.grid)] + [agg(model.class_score(f[f"window{s}"])) for s, agg in zip((2, 3), model.aggregators)]
        grid = 3 / sum(1 / m for m in maps)
        expected = torch.nn.functional.interpolate(grid[None, None], size=(224, 224), mode="bilinear")[0, 0]
        torch.testing.assert_close(out.anomaly_maps[i], expected, rtol=0, atol=1e-6)
        assert out.image_scores[i].item() == pytest.approx(zs.item(), abs=1e-7)


def test_few_shot_batch_invariance_and_reference_reuse(tiny_backbone, images):
    cache = FeatureCache(tiny_backbone)
    method = get_method("winclip")(WinCLIPConfig(), cache)
    method.set_support([_batch(images[:2], ["r0", "r1"])], "tile")
    forwards = cache.stats.forwards
    method.set_support([_batch(images[:2], ["r0", "r1"])], "tile")  # same manifest: nothing re-encoded
    assert cache.stats.forwards == forwards == 2
    names = [f"q{i}" for i in range(5)]
    whole = method.predict_step(_batch(images, names), 0)
    parts = [method.predict_step(_batch(images[i : i + 1], names[i : i + 1]), i) for i in range(5)]
    assert torch.equal(whole.anomaly_maps, torch.cat([p.anomaly_maps for p in parts]))
    assert torch.equal(whole.image_scores, torch.cat([p.image_scores for p in parts]))
    assert cache.stats.forwards == 7  # one encoding per unique image, windows included
    # a reference image is at distance 0 from the memory, so its few-shot half vanishes
    ref = method.predict_step(_batch(images[:1], ["r0"]), 0)
    zero_shot = get_method("winclip")(WinCLIPConfig(), cache)
    zero_shot.set_support([], "tile")
    torch.testing.assert_close(ref.anomaly_maps, zero_shot.predict_step(_batch(images[:1], ["r0"]), 0).anomaly_maps / 2,
                               rtol=0, atol=1e-6)  # fmt: skip
