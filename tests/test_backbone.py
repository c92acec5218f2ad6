"""The open_clip wrapper: seeded tiny weights, token taps, error messages, and the encode-once cache."""

from __future__ import annotations

import pytest
import torch

from fsas_bench.backbones import FeatureCache, load_backbone
from fsas_bench.backbones.clip import RANDOM_WEIGHTS_LABEL, parse_feature, sliding_windows
from fsas_bench.errors import UserError


def test_tiny_backbone_is_seeded_and_labelled(tiny_backbone):
    again = load_backbone("fsas-tiny", "none")
    other = load_backbone("fsas-tiny", None, seed=1)
    first = dict(tiny_backbone.model.named_parameters())
    assert all(torch.equal(p, first[n]) for n, p in again.model.named_parameters())
    assert not torch.equal(first["visual.conv1.weight"], dict(other.model.named_parameters())["visual.conv1.weight"])
    assert tiny_backbone.pretrained == RANDOM_WEIGHTS_LABEL
    assert tiny_backbone.grid == (14, 14) and tiny_backbone.depth == 6


def test_tokens_are_raw_residual_stream_without_cls(tiny_backbone):
    x = torch.randn(2, 3, 224, 224)
    out = tiny_backbone.encode(x, ["block1", "block3", "embedding", "final_tokens"])
    visual = tiny_backbone.model.visual
    with torch.no_grad():
        h = visual._embeds(x)
        manual = {}
        for i, block in enumerate(visual.transformer.resblocks):
            h = block(h)
            manual[i] = h[:, 1:]
        pooled = visual.ln_post(h[:, 0]) @ visual.proj
        final = visual.ln_post(h)[:, 1:]
    for b in (1, 3):
        assert out[f"block{b}"].shape == (2, 196, 128)
        torch.testing.assert_close(out[f"block{b}"], manual[b], rtol=0, atol=1e-5)
    torch.testing.assert_close(out["embedding"], pooled, rtol=0, atol=1e-5)
    torch.testing.assert_close(out["final_tokens"], final, rtol=0, atol=1e-5)


def test_sliding_windows_count_and_coverage():
    for scale, count, most in ((2, 169, 4), (3, 144, 9)):
        windows = sliding_windows((14, 14), scale)
        assert windows.shape == (count, scale * scale)
        coverage = torch.bincount(windows.flatten(), minlength=196)
        assert coverage.min() == 1 and coverage.max() == most
    assert sliding_windows((15, 15), 2).shape[0] == 196 and sliding_windows((15, 15), 3).shape[0] == 169
    assert sliding_windows((3, 3), 2).tolist() == [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]


def test_window_path_with_all_tokens_reproduces_image_embedding(tiny_backbone):
    x = torch.randn(2, 3, 224, 224)
    everything = torch.arange(196).view(1, 196)
    windowed = tiny_backbone._encode_windows(x, everything)[:, 0]
    torch.testing.assert_close(windowed, tiny_backbone.encode(x, ["embedding"])["embedding"], rtol=0, atol=1e-5)
    assert tiny_backbone.encode(x, ["window2"])["window2"].shape == (2, 169, 128)


def test_text_embeddings_are_cached(tiny_backbone):
    first = tiny_backbone.encode_text(["a photo of a tile", "a photo of a damaged tile"])
    second = tiny_backbone.encode_text(["a photo of a tile", "a photo of a damaged tile"])
    assert first.shape == (2, 128) and first is second


@pytest.mark.parametrize(
    ("arch", "pretrained", "needle"),
    [
        ("ViT-Nope", None, "unknown backbone 'ViT-Nope'"),
        ("ViT-B-16", None, "has no weights: pass --pretrained"),
        ("ViT-B-16", "no_such_tag", "is not a known pretrained tag"),
        ("ViT-B-16", "/no/such/file.pt", "checkpoint file does not exist"),
    ],
)
def test_unobtainable_weights_are_one_line_user_errors(arch, pretrained, needle):
    with pytest.raises(UserError, match=needle) as info:
        load_backbone(arch, pretrained)
    assert "\n" not in str(info.value)


def test_checkpoint_of_wrong_architecture_is_rejected(tmp_path, tiny_backbone):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    loaded = load_backbone("fsas-tiny", str(path))
    assert loaded.pretrained == "tiny.pt" and loaded.weights_id.startswith("file-sha256:")
    with pytest.raises(UserError, match="cannot be loaded as ViT-B-16"):
        load_backbone("ViT-B-16", str(path))


def test_cache_encodes_each_image_once_and_is_batch_invariant(tiny_backbone, tmp_path):
    images = torch.randn(5, 3, 224, 224)
    shas = [f"img{i}" for i in range(5)]
    cache = FeatureCache(tiny_backbone)
    names = ("block1", "block3", "embedding")
    batched = cache.features(shas, names, lambda i: images[i])
    assert (cache.stats.misses, cache.stats.forwards) == (5, 5)
    singles = [cache.features(shas[i : i + 1], ("block1",), lambda _: pytest.fail("decoded a cached image"))[0]
               for i in range(5)]  # fmt: skip
    assert (cache.stats.hits, cache.stats.forwards) == (5, 5)
    fresh = FeatureCache(tiny_backbone)
    one_by_one = [fresh.features(shas[i : i + 1], names, lambda _, i=i: images[i])[0] for i in range(5)]
    for a, b, c in zip(batched, singles, one_by_one, strict=True):
        assert torch.equal(a["block1"], b["block1"]) and torch.equal(a["block3"], c["block3"])
        assert torch.equal(a["embedding"], c["embedding"])
    cache.features(shas[:1], ("block1", "block5"), lambda i: images[i])  # a new feature re-encodes that image only
    assert cache.stats.forwards == 6


def test_disk_cache_round_trip(tiny_backbone, tmp_path):
    images = torch.randn(2, 3, 224, 224)
    written = FeatureCache(tiny_backbone, tmp_path).features(["a", "b"], ("block2", "embedding"), lambda i: images[i])
    reader = FeatureCache(tiny_backbone, tmp_path)
    read = reader.features(["a", "b"], ("block2", "embedding"), lambda i: images[i])
    assert reader.stats.forwards == 0 and reader.stats.hits == 2
    for w, r in zip(written, read, strict=True):
        assert w.keys() == r.keys() and all(torch.equal(w[k], r[k]) for k in w)


def test_prefetch_encodes_every_method_feature_on_the_first_miss(tiny_backbone):
    images = torch.randn(2, 3, 224, 224)
    cache = FeatureCache(tiny_backbone)
    cache.prefetch = {"block1", "window2"}
    first = cache.features(["a", "b"], ("embedding",), lambda i: images[i])
    assert first[0].keys() == {"block1", "window2", "embedding"}
    cache.features(["a", "b"], ("block1", "window2"), lambda i: pytest.fail("re-encoded a prefetched image"))
    assert cache.stats.forwards == 2 and cache.stats.hits == 2


@pytest.mark.parametrize(
    ("name", "parsed"),
    [("block0", ("block", 0)), ("block11", ("block", 11)), ("released_tap3", ("released_tap", 3)),
     ("window2", ("window", 2)), ("embedding", ("embedding", None)), ("final_tokens", ("final_tokens", None)),
     ("vv_tokens", ("vv_tokens", None))],
)  # fmt: skip
def test_feature_vocabulary_parses_every_known_name(name, parsed):
    assert parse_feature(name) == parsed


@pytest.mark.parametrize("name", ["vv_token", "embeddings", "block", "block03", "block-1", "block1a", "tap1", ""])
def test_unknown_feature_names_are_errors_not_silently_skipped(tiny_backbone, name):
    with pytest.raises(ValueError, match=f"unknown backbone feature '{name}'.*block<i>"):
        parse_feature(name)
    with pytest.raises(UserError, match="unknown backbone feature"):
        tiny_backbone.check_features(["block1", name])
    cache = FeatureCache(tiny_backbone)  # once silently skipped, then re-encoded on every call
    with pytest.raises(ValueError, match="unknown backbone feature"):
        cache.features(["a"], ("block1", name), lambda i: torch.randn(3, 224, 224))
    assert cache.stats.encode_seconds == 0 and not cache._memory


def test_window_sides_are_checked_against_the_patch_grid(tiny_backbone):
    side = min(tiny_backbone.grid)
    tiny_backbone.check_features([f"window{side}", "window1"])
    assert sliding_windows(tiny_backbone.grid, side).shape[0] == 1  # the largest accepted side encodes
    for bad in (side + 1, 0):
        with pytest.raises(UserError, match=f"window sides \\[{bad}\\] do not fit the 14×14 patch grid"):
            tiny_backbone.check_features([f"window{bad}"])


@pytest.mark.parametrize("supported", [True, False])
def test_bf16_on_a_gpu_without_bf16_is_refused_before_the_sweep(monkeypatch, supported):
    from fsas_bench.backbones.clip import check_device_precision

    calls = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: calls.append(a) or supported)
    for precision in ("fp32", "fp16"):
        check_device_precision("cuda:0", precision)
    check_device_precision("cpu", "bf16")
    assert not calls, "only bf16 on a CUDA device asks the GPU"
    if supported:
        check_device_precision("cuda:0", "bf16")
    else:
        with pytest.raises(UserError, match=r"^--precision bf16 is not supported by the GPU of --device cuda:0: use"):
            check_device_precision("cuda:0", "bf16")
    assert len(calls) == 1
    with pytest.raises(UserError, match="--precision 'int8' is unknown"):
        check_device_precision("cpu", "int8")
