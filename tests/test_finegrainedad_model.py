"""FineGrainedAD / PromptAD building blocks against definition-level references (spec finegrainedad.md)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsas_bench.backbones.vv_attention import DualPathVisual
from fsas_bench.data.synthetic import CATEGORIES
from fsas_bench.methods.finegrainedad.captions import (
    CaptionSchemaError, load_caption_file, template_record, validate_record, vocabularies,
)  # fmt: skip
from fsas_bench.methods.finegrainedad.hires import hires_vv_tokens, stitch, tile_images
from fsas_bench.methods.finegrainedad.losses import match_loss, total_loss, triplet_loss, v2t_loss
from fsas_bench.methods.finegrainedad.prompt_learner import FamilyFeatures, PromptLearner
from fsas_bench.methods.finegrainedad.prompts import build_families, render
from fsas_bench.methods.finegrainedad.regions import dpc_knn, effective_k, region_weights
from fsas_bench.methods.text import encode_embedded_prompts, token_embeddings, tokenize
from fsas_bench.methods.finegrainedad.torch_model import QueryFormer, harmonic, text_anomaly

MVTEC = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile",
         "toothbrush", "transistor", "wood", "zipper")  # fmt: skip
VISA = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4",
        "pipe_fryum")  # fmt: skip


# --- V-V attention -----------------------------------------------------------------------------------------


def _reference_vv(visual: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Hand-written V-V path: per block and head, softmax(v·vᵀ/√d)·v from the upstream weights, no MLP."""
    x = visual._embeds(images)[0]
    x_vv, x_ori = x.clone(), x.clone()
    for block in visual.transformer.resblocks:
        attn = block.attn
        u = block.ln_1(x_ori)
        v = u @ attn.in_proj_weight[2 * u.shape[1] :].T + attn.in_proj_bias[2 * u.shape[1] :]
        heads = []
        d = u.shape[1] // attn.num_heads
        for h in range(attn.num_heads):
            vh = v[:, h * d : (h + 1) * d]
            weights = torch.softmax(vh @ vh.T / math.sqrt(d), dim=-1)
            heads.append(weights @ vh)
        x_vv = x_vv + attn.out_proj(torch.cat(heads, dim=1))
        x_ori = block(x_ori[None])[0]
    return visual.ln_post(x_vv[1:]) @ visual.proj


def test_vv_swap_leaves_the_original_path_unchanged_and_matches_a_reference(tiny_backbone):
    visual = tiny_backbone.model.visual
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = DualPathVisual(visual)(images, taps=(1, 3))
        upstream = visual.forward_intermediates(images, indices=[1, 3], output_fmt="NLC", normalize_intermediates=False)
        torch.testing.assert_close(out.embedding, upstream["image_features"], rtol=0, atol=1e-5)
        for tap, reference in zip((1, 3), upstream["image_intermediates"], strict=True):
            torch.testing.assert_close(out.taps[tap], reference, rtol=0, atol=1e-5)
        torch.testing.assert_close(out.vv_tokens[1], _reference_vv(visual, images[1:]), rtol=0, atol=1e-4)
        assert not torch.allclose(out.vv_tokens, visual.ln_post(upstream["image_intermediates"][-1]) @ visual.proj)
        features = tiny_backbone.encode(images[:1], ["vv_tokens", "embedding"])
    torch.testing.assert_close(features["vv_tokens"], out.vv_tokens[:1], rtol=0, atol=1e-5)
    assert all(type(b).__name__ == "ResidualAttentionBlock" for b in visual.transformer.resblocks)  # upstream intact


def test_soft_prompt_text_path_equals_upstream_encode_text(tiny_backbone):
    model = tiny_backbone.model
    tokens = tokenize(model, "fsas-tiny", ["a photo of a hex nut.", "X X X X a capsule with a crack."])
    with torch.no_grad():
        ours = encode_embedded_prompts(model, token_embeddings(model, tokens), tokens)
        torch.testing.assert_close(ours, model.encode_text(tokens), rtol=0, atol=1e-6)


# --- caption files -----------------------------------------------------------------------------------------


def test_shipped_caption_files_validate_and_cover_the_datasets():
    assert sorted(load_caption_file("mvtec")) == sorted(MVTEC)
    assert sorted(load_caption_file("visa")) == sorted(VISA)
    synthetic = load_caption_file("synthetic")
    assert sorted(synthetic) == sorted(CATEGORIES)
    for name, record in synthetic.items():  # defect phrases come from the generator's defect names
        phrases = [d.removeprefix("with a ").replace(" ", "_") for d in record.defect_states]
        assert phrases == list(CATEGORIES[name].defects)
    vocab = vocabularies(synthetic)
    assert set(vocab.colors) == {c for r in synthetic.values() for c in r.color}
    assert len(vocab.locations) == len(set(vocab.locations)) and "center" in vocab.locations


def _raw_record() -> dict:
    return {
        "category": "widget", "foreground": "widget", "background": "white",
        "entities": [{"name": "knob", "number": "1", "location": "center", "caption": "A knob sits at the center."},
                     {"name": "pin", "number": "2", "location": "left", "caption": "Two pins stick out on the left."}],
        "relation": "The knob is flanked by a pin.", "color": ["red", "blue"], "texture": ["smooth"],
        "shape": ["round"], "direction": ["upright"], "defect_states": ["with a crack", "with a dent"],
        "caption": "A red widget with a knob at the center and pins on the left.", "provenance": "hand",
        "source_image": "widget/train/good/000.png",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("relation"), "missing field.*relation"),
        (lambda r: r.update(caption="A thing at the center and on the left."), "foreground 'widget' does not occur"),
        (lambda r: r.update(relation="They touch."), "entity 'knob' does not occur verbatim in 'relation'"),
        (lambda r: r["entities"][1].update(location="top"), "caption of entity 'pin' must contain"),
        (lambda r: r.update(color=[]), "'color' must be a non-empty list"),
        (lambda r: r.update(defect_states=["cracked"]), "defect_states must read 'with <defect>'"),
        (lambda r: r.update(provenance="copied"), "'provenance' is 'copied'"),
        (lambda r: r["entities"][0].pop("number"), "entity 0 needs non-empty string fields"),
    ],
)
def test_schema_validator_names_the_problem(change, message):
    raw = _raw_record()
    validate_record(raw, "0 of test.json")
    change(raw)
    with pytest.raises(CaptionSchemaError, match=message):
        validate_record(raw, "0 of test.json")


def test_template_records_follow_the_schema():
    shots = [np.zeros((64, 64, 3), np.uint8) for _ in range(2)]
    for shot in shots:
        shot[16:48, 16:48] = (200, 40, 40)
    record = template_record("odd_part", shots)
    assert record.background == "black" and record.color == ("red",) and record.foreground == "odd part"
    raw = json.loads(json.dumps(asdict(record)))
    assert validate_record(raw, "template") == record


# --- prompt rendering --------------------------------------------------------------------------------------


def test_prompt_rendering_is_deterministic_for_a_seed_and_substitutes_as_specified():
    records = load_caption_file("synthetic")
    record, vocab = records["hex_nut"], vocabularies(records)
    families = build_families(record, vocab, "full", seed=3)
    assert families == build_families(record, vocab, "full", seed=3)
    assert [f.name for f in families] == ["image", "entity:hexagonal body", "entity:threaded bore", "background"]
    image = families[0]
    assert image.handle == tuple(record.caption.replace("hex nut", f"hex nut {d}") for d in record.defect_states)
    assert image.attributes["color"][0] == "light grey.dark grey"
    assert set(image.attributes["color"][1]) == set(vocab.colors) - set(record.color)
    assert image.attributes["relation"][1][0] == record.relation.replace(
        "hexagonal body", "hexagonal body with a scratch").replace("threaded bore", "threaded bore with a scratch")
    assert families[-1].handle == tuple(f"dark grey background {d}" for d in record.defect_states)
    drawn = set()
    for seed in range(40):
        body = build_families(record, vocab, "full", seed=seed)[1]
        rng = random.Random(seed)
        defect = rng.choice(record.defect_states)
        location = rng.choice([loc for loc in vocab.locations if loc != "center"])
        expected = f"the hexagonal body {defect} of steel sits in the {location} of the picture."
        assert body.handle == (expected,) and location != "center"
        drawn.add(body.handle)
    assert len(drawn) > 5  # the seed matters
    assert render("a nut", 4, 1) == "X X X X X a nut."


def test_promptad_mode_builds_the_promptad_prompt_sets():
    records = load_caption_file("mvtec")
    (family,) = build_families(records["metal_nut"], vocabularies(records), "none", seed=0)
    assert family.normal == ("metal nut",) and family.learned == ("metal nut",) * 4 and not family.attributes
    expected = [
        "damaged metal nut", "flawed metal nut", "abnormal metal nut", "imperfect metal nut", "blemished metal nut",
        "metal nut with flaw", "metal nut with defect", "metal nut with damage",
        "metal nut with a bent tab", "metal nut with a colour stain", "metal nut with a flipped side",
        "metal nut with a scratch",
    ]  # fmt: skip
    assert list(family.handle) == expected
    (image,) = build_families(records["metal_nut"], vocabularies(records), "image", seed=0)
    assert image.normal == (records["metal_nut"].caption,)
    assert set(image.attributes) == {"relation", "color", "texture", "shape"}


# --- prompt learner ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def learner(tiny_backbone):
    records = load_caption_file("synthetic")
    families = build_families(records["capsule"], vocabularies(records), "full", seed=0)
    torch.manual_seed(0)
    return PromptLearner(tiny_backbone.model, "fsas-tiny", families, 4, 1, 1, 4)


def test_contexts_fill_the_placeholders_and_the_rest_is_untouched(tiny_backbone, learner):
    model = tiny_backbone.model
    with torch.no_grad():
        learner.gates.fill_(-1e4)  # sigmoid 0: family 1 reduces to ctx + caption
        embedded = learner.embeddings()
    plain = token_embeddings(model, learner.tokens)
    rows = learner.rows[0]
    normal, handle, learned = rows.normal[0], rows.handle[1], rows.learned[2]
    torch.testing.assert_close(embedded[normal, 1:5], learner.normal_ctx[0].detach())
    torch.testing.assert_close(embedded[normal, 5:], plain[normal, 5:])
    torch.testing.assert_close(embedded[normal, :1], plain[normal, :1])
    torch.testing.assert_close(embedded[handle, 5:], plain[handle, 5:])
    torch.testing.assert_close(embedded[learned, 5], learner.abnormal_ctx[2, 0].detach())  # row i: actx[i % 4]
    torch.testing.assert_close(embedded[learned, 6:], plain[learned, 6:])
    entity = learner.rows[1].normal[0]
    torch.testing.assert_close(embedded[entity, 5:], plain[entity, 5:])
    assert (learner.tokens[normal].argmax() - learner.tokens[normal].nonzero().max()).item() == 0  # EOT pooled


def test_gates_add_attribute_sequences_position_wise(tiny_backbone, learner):
    with torch.no_grad():
        learner.gates.zero_()  # sigmoid 0.5 on each of 4 attributes
        embedded = learner.embeddings()
        learner.gates.fill_(-1e4)
        bare = learner.embeddings()
    row = learner.rows[0].normal[0]
    attributes = learner.attribute_fixed[row].sum(0)
    torch.testing.assert_close(embedded[row, 5:], bare[row, 5:] + 0.5 * attributes[5:])
    torch.testing.assert_close(embedded[row, 1:5], 3.0 * learner.normal_ctx[0].detach())  # 1 + 4 · 0.5


def test_parameter_counts():
    assert sum(p.numel() for p in QueryFormer(4, 640).parameters()) == 2 * (4 * 640**2 + 4 * 640) + 4 * 640 + (
        2 * 640 * 640 + 640
    )  # two cross-attentions of ≈1.6M, a fusion of ≈0.8M (spec §10.8), plus the C shared queries
    assert 4 * 640 + 4 * 640 + 8 == 5128  # contexts + gates at 640-d, as in the spec


# --- losses ------------------------------------------------------------------------------------------------


def test_losses_against_loops():
    g = torch.Generator().manual_seed(1)
    tokens = F.normalize(torch.randn(2, 5, 3, generator=g), dim=-1)
    normal, abnormal = F.normalize(torch.randn(3, generator=g), dim=0), F.normalize(torch.randn(3, generator=g), dim=0)
    each = F.normalize(torch.randn(4, 3, generator=g), dim=-1)
    tau = torch.tensor(4.6)
    ce = []
    for s in range(2):
        for n in range(5):
            logits = [tau * tokens[s, n] @ normal] + [tau * tokens[s, n] @ a for a in each]
            ce.append(-torch.log_softmax(torch.stack(logits), 0)[0])
    torch.testing.assert_close(v2t_loss(tokens, normal, each, tau), torch.stack(ce).mean())
    hinge = []
    for s in range(2):
        for c in range(3):  # distances summed over the 5 tokens, per channel
            dn = sum((tokens[s, n, c] - normal[c]) ** 2 for n in range(5))
            da = sum((tokens[s, n, c] - abnormal[c]) ** 2 for n in range(5))
            hinge.append(torch.clamp(dn - da + 1.0, min=0))
    torch.testing.assert_close(triplet_loss(tokens, normal, abnormal, 1.0), torch.stack(hinge).mean())
    channel_axis = torch.clamp(((tokens - normal) ** 2).sum(-1) - ((tokens - abnormal) ** 2).sum(-1) + 1, min=0).mean()
    assert not torch.isclose(triplet_loss(tokens, normal, abnormal, 1.0), channel_axis)


def _features(g: torch.Generator, dim: int = 3) -> FamilyFeatures:
    handle, learned, normal = (torch.randn(n, dim, generator=g) for n in (2, 4, 1))
    abnormal = torch.cat([handle, learned])
    return FamilyFeatures(F.normalize(normal.mean(0), dim=0), F.normalize(abnormal.mean(0), dim=0),
                          F.normalize(abnormal, dim=-1), handle, learned, normal)  # fmt: skip


def test_loss_composition_matches_entities_but_not_the_background():
    g = torch.Generator().manual_seed(2)
    tokens = F.normalize(torch.randn(2, 4, 3, generator=g), dim=-1)
    image, e1, e2, bg = (_features(g) for _ in range(4))
    regions = 1 + 1.5 * (torch.rand(3, 2, 4, generator=g) > 0.5).float()
    tau = torch.tensor(2.0)
    out = total_loss(tokens, [image, e1, e2, bg], regions, tau, 0.001, use_reg=True, use_normal_align=False, margin=1.0)
    expected_match = 0.001 * (match_loss(e1.handle, e1.learned) + match_loss(e2.handle, e2.learned))
    torch.testing.assert_close(out["parts_match"], expected_match)
    weighted = [tokens * regions[i][..., None] for i in range(3)]
    parts = sum(v2t_loss(w, f.normal, f.abnormal_each, tau) + triplet_loss(w, f.normal, f.abnormal, 1.0)
                for w, f in zip(weighted, (e1, e2, bg), strict=True))  # fmt: skip
    torch.testing.assert_close(out["parts"], parts)
    reg = (F.normalize(image.learned, dim=-1).mean(0) - F.normalize(e1.learned + e2.learned, dim=-1).mean(0)
           - F.normalize(bg.normal_raw, dim=-1).mean(0)).norm()  # fmt: skip
    torch.testing.assert_close(out["reg"], reg)
    torch.testing.assert_close(out["total"], out["image"] + out["match"] + out["parts"] + out["parts_match"] + reg)
    aligned = total_loss(tokens, [image, e1, e2, bg], regions, tau, 0.001, use_reg=True, use_normal_align=True,
                         margin=1.0)  # fmt: skip
    parts_sum = e1.normal_raw.mean(0) + e2.normal_raw.mean(0) + bg.normal_raw.mean(0)
    torch.testing.assert_close(aligned["normal_align"], (image.normal - F.normalize(parts_sum, dim=0)).pow(2).sum())
    promptad = total_loss(tokens, [image], None, tau, 0.001, use_reg=False, use_normal_align=False, margin=0.0)
    assert set(promptad) == {"image", "match", "total"}


# --- region aggregation ------------------------------------------------------------------------------------


def test_dpc_knn_separates_blobs_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(30, 2, generator=g) * 0.1, torch.randn(20, 2, generator=g) * 0.1 + 5])
    labels = dpc_knn(points, 2, 5, torch.Generator().manual_seed(1))
    assert labels[:30].unique().numel() == 1 and labels[30:].unique().numel() == 1 and labels[0] != labels[-1]
    assert torch.equal(labels, dpc_knn(points, 2, 5, torch.Generator().manual_seed(1)))
    masked = dpc_knn(points, 2, 5, torch.Generator().manual_seed(1), mask=torch.arange(50) < 30)
    assert (masked[30:] == -1).all() and masked[:30].unique().numel() == 2
    assert [effective_k(8, 2), effective_k(5, 3), effective_k(5, 4), effective_k(5, 6)] == [1, 1, 2, 5]


def test_region_weights_shape_range_and_determinism():
    g = torch.Generator().manual_seed(3)
    hires = F.normalize(torch.randn(2, 64, 8, generator=g), dim=-1)
    entities = F.normalize(torch.randn(2, 8, generator=g), dim=-1)
    background = F.normalize(torch.randn(8, generator=g), dim=0)
    maps = region_weights(hires, entities, background, 2, torch.Generator().manual_seed(0))
    assert maps.shape == (3, 2, 16) and maps.min() >= 1 and maps.max() <= 2.5
    assert torch.equal(maps, region_weights(hires, entities, background, 2, torch.Generator().manual_seed(0)))
    assert set(torch.unique(maps * 4).tolist()) <= {4.0, 5.5, 7.0, 8.5, 10.0}  # 2 × 2 averages of {1, 2.5}


def test_tiles_are_stitched_row_major():
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    assert len(tile_images(image, 4, 2)) == 4
    tiles = torch.arange(4 * 4 * 1, dtype=torch.float32).view(4, 4, 1)  # 2 × 2 tiles of 2 × 2 tokens
    grid = stitch(tiles, 2).view(4, 4)
    assert grid[0].tolist() == [0, 1, 4, 5] and grid[2].tolist() == [8, 9, 12, 13]


def test_hires_tokens_are_computed_in_the_backbone_precision(image_files):
    from fsas_bench.backbones import load_backbone
    from fsas_bench.data.formats import read_image_rgb

    batch = image_files(1)
    path, sha = Path(batch["path"][0]), batch["sha"][0]
    tokens = {}
    for precision in ("fp32", "bf16"):
        backbone = load_backbone("fsas-tiny", None, precision=precision)
        tiles = torch.stack([backbone.preprocess(t) for t in tile_images(read_image_rgb(path), 224, 2)])
        expected = stitch(backbone.encode(tiles, ["vv_tokens"])["vv_tokens"], 2)  # encode applies the precision
        tokens[precision] = hires_vv_tokens(backbone, path, sha, 2)
        assert tokens[precision].dtype == torch.float32
        torch.testing.assert_close(tokens[precision], expected, rtol=0, atol=0)
    assert not torch.equal(tokens["fp32"], tokens["bf16"])


# --- inference ---------------------------------------------------------------------------------------------


def test_qformer_ignores_its_queries_and_matching_picks_the_nearest_key():
    torch.manual_seed(0)
    qformer = QueryFormer(3, 8)
    pairs = F.normalize(torch.randn(3, 2, 8), dim=-1)
    before = qformer(pairs)
    with torch.no_grad():
        qformer.queries.normal_()
    torch.testing.assert_close(qformer(pairs), before)  # a single key: the attention weight is 1
    tokens = F.normalize(torch.randn(5, 8), dim=-1)
    keys = torch.randn(3, 8)
    probs = text_anomaly(tokens, pairs, keys, torch.tensor(4.6))
    for n in range(5):
        c = int((tokens[n] @ F.normalize(keys, dim=-1).T).argmax())
        expected = torch.softmax(4.6 * torch.stack([tokens[n] @ pairs[c, 0], tokens[n] @ pairs[c, 1]]), 0)[1]
        torch.testing.assert_close(probs[n], expected)
    assert harmonic(torch.tensor(0.0), torch.tensor(0.5), 0.0) == 0
    torch.testing.assert_close(harmonic(torch.tensor(0.2), torch.tensor(0.3), 0.0), torch.tensor(0.12))
