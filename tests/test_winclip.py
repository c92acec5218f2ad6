"""WinCLIP / WinCLIP+: prompt ensemble, harmonic aggregation, zero-shot reduction, batch invariance, caching."""

from __future__ import annotations

import pytest
import torch

from fsas_bench.backbones import FeatureCache
from fsas_bench.backbones.clip import sliding_windows
from fsas_bench.methods import get_method
from fsas_bench.methods.ops import harmonic_mean
from fsas_bench.methods.winclip.config import WinCLIPConfig
from fsas_bench.methods.winclip.torch_model import WindowAggregator
from fsas_bench.methods.text import ANOMALOUS_STATES, NORMAL_STATES, WINCLIP_TEMPLATES, sentences
from tests.helpers import split_batch


def test_prompt_ensemble_sizes():
    normal, anomalous = (sentences("hex nut", s, WINCLIP_TEMPLATES["winclip22"]) for s in (NORMAL_STATES, ANOMALOUS_STATES))
    assert (len(normal), len(anomalous)) == (154, 88) and len(set(normal)) == 154
    assert "a photo of a flawless hex nut for visual inspection." in normal
    assert "a photo of the hex nut with damage for anomaly detection." in anomalous
    normal21, anomalous21 = (sentences("hex nut", s, WINCLIP_TEMPLATES["anomalib21"]) for s in (NORMAL_STATES, ANOMALOUS_STATES))
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


def test_zero_shot_is_the_text_branch_only(tiny_backbone, image_files):
    cache = FeatureCache(tiny_backbone)
    method = get_method("winclip")(WinCLIPConfig(), cache)
    method.set_support([], "hex_nut")
    batch = image_files(2, seed=1)
    out = method.predict_step(batch, 0)
    feats = cache.features(batch["sha"], method.names, lambda i: pytest.fail("features should be cached"))
    model = method.model
    for i, f in enumerate(feats):
        zs = model.class_score(f["embedding"])
        maps = [zs.expand(model.grid)] + [agg(model.class_score(f[f"window{s}"])) for s, agg in zip((2, 3), model.aggregators)]
        grid = 3 / sum(1 / m for m in maps)
        expected = torch.nn.functional.interpolate(grid[None, None], size=(224, 224), mode="bilinear")[0, 0]
        torch.testing.assert_close(out.anomaly_maps[i], expected, rtol=0, atol=1e-6)
        assert out.image_scores[i].item() == pytest.approx(zs.item(), abs=1e-7)


def test_few_shot_batch_invariance_and_reference_reuse(tiny_backbone, image_files):
    cache = FeatureCache(tiny_backbone)
    method = get_method("winclip")(WinCLIPConfig(), cache)
    refs, queries = image_files(2, seed=2, prefix="ref"), image_files(5, seed=3, prefix="query")
    method.set_support([refs], "tile")
    forwards = cache.stats.forwards
    method.set_support([refs], "tile")  # same manifest: nothing re-encoded
    assert cache.stats.forwards == forwards == 2
    whole = method.predict_step(queries, 0)
    parts = [method.predict_step(split_batch(queries, [i]), i) for i in range(5)]
    assert torch.equal(whole.anomaly_maps, torch.cat([p.anomaly_maps for p in parts]))
    assert torch.equal(whole.image_scores, torch.cat([p.image_scores for p in parts]))
    assert cache.stats.forwards == 7  # one encoding per unique image, windows included
    # a reference image is at distance 0 from the memory, so its few-shot half vanishes
    ref = method.predict_step(split_batch(refs, [0]), 0)
    zero_shot = get_method("winclip")(WinCLIPConfig(), cache)
    zero_shot.set_support([], "tile")
    expected = zero_shot.predict_step(split_batch(refs, [0]), 0).anomaly_maps / 2
    torch.testing.assert_close(ref.anomaly_maps, expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_paper_architecture_windows_and_scoring(tmp_path):
    """ViT-B-16-plus-240 (random weights; the parity backbone): 15×15 grid, 196 + 169 windows, one forward."""
    import numpy as np
    from PIL import Image

    from fsas_bench.backbones import load_backbone
    from fsas_bench.data.datamodule import image_sha

    backbone = load_backbone("ViT-B-16-plus-240", None, allow_random=True)
    assert backbone.grid == (15, 15) and backbone.image_size == 240
    path = tmp_path / "q.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path)
    cache = FeatureCache(backbone)
    method = get_method("winclip")(WinCLIPConfig(), cache)
    batch = {"path": [str(path)], "sha": [image_sha(path)]}
    method.set_support([batch], "metal_nut")
    out = method.predict_step(batch, 0)
    feats = cache.features(batch["sha"], method.names, lambda i: pytest.fail("re-encoded"))[0]
    assert feats["window2"].shape == (196, 640) and feats["window3"].shape == (169, 640)
    assert feats["final_tokens"].shape == (225, 896) and out.anomaly_maps.shape == (1, 240, 240)
    assert cache.stats.forwards == 1
