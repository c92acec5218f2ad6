"""The open_clip wrapper: seeded tiny weights, token taps, error messages, and the encode-once cache."""

from __future__ import annotations

import pytest
import torch

from fsas_bench.backbones import FeatureCache, load_backbone
from fsas_bench.backbones.clip import RANDOM_WEIGHTS_LABEL
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
    tokens, embedding = tiny_backbone.encode_images(x, [1, 3])
    visual = tiny_backbone.model.visual
    with torch.no_grad():
        h = visual._embeds(x)
        manual = {}
        for i, block in enumerate(visual.transformer.resblocks):
            h = block(h)
            manual[i] = h[:, 1:]
        pooled = visual.ln_post(h[:, 0]) @ visual.proj
    for b in (1, 3):
        assert tokens[b].shape == (2, 196, 128)
        torch.testing.assert_close(tokens[b], manual[b], rtol=0, atol=1e-5)
    torch.testing.assert_close(embedding, pooled, rtol=0, atol=1e-5)


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
    batched = cache.features(images, shas, (1, 3))
    assert (cache.stats.misses, cache.stats.forwards) == (5, 5)
    singles = [cache.features(images[i : i + 1], shas[i : i + 1], (1,))[0] for i in range(5)]
    assert (cache.stats.hits, cache.stats.forwards) == (5, 5)
    fresh = FeatureCache(tiny_backbone)
    one_by_one = [fresh.features(images[i : i + 1], shas[i : i + 1], (1, 3))[0] for i in range(5)]
    for a, b, c in zip(batched, singles, one_by_one, strict=True):
        assert torch.equal(a.tokens[1], b.tokens[1]) and torch.equal(a.tokens[3], c.tokens[3])
        assert torch.equal(a.embedding, c.embedding)
    cache.features(images[:1], shas[:1], (1, 5))  # a new block re-encodes that image only
    assert cache.stats.forwards == 6


def test_disk_cache_round_trip(tiny_backbone, tmp_path):
    images = torch.randn(2, 3, 224, 224)
    written = FeatureCache(tiny_backbone, tmp_path).features(images, ["a", "b"], (2,))
    reader = FeatureCache(tiny_backbone, tmp_path)
    read = reader.features(images, ["a", "b"], (2,))
    assert reader.stats.forwards == 0 and reader.stats.hits == 2
    for w, r in zip(written, read, strict=True):
        assert torch.equal(w.tokens[2], r.tokens[2]) and torch.equal(w.embedding, r.embedding)
