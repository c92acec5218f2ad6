"""InCTRL: parameter count, patch residual against brute force, batch-size invariance, k = 1, loss quirk."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsas_bench.backbones import FeatureCache
from fsas_bench.errors import UserError
from fsas_bench.methods import get_method
from fsas_bench.methods.inctrl.config import InCTRLConfig
from fsas_bench.methods.inctrl.torch_model import InCTRLInputs, InCTRLModel, InCTRLOutput, inctrl_loss
from fsas_bench.methods.inctrl.lightning_module import prompt_sentences
from fsas_bench.methods.inctrl.torch_model import focal_on_probabilities, patch_residual
from tests.helpers import split_batch

GRID = (4, 4)


def random_inputs(batch: int, shot: int, seed: int = 0, layers: int = 3, channels: int = 8, dim: int = 12):
    """Training-layout inputs: every query has its own prompts and category prototypes."""
    gen = torch.Generator().manual_seed(seed)
    n = GRID[0] * GRID[1]
    return InCTRLInputs(
        query_tokens=torch.randn(batch, layers, n, channels, generator=gen),
        prompt_tokens=torch.randn(batch, layers, shot * n, channels, generator=gen),
        query_embedding=torch.randn(batch, dim, generator=gen),
        prompt_embeddings=torch.randn(batch, shot, dim, generator=gen),
        text_prototypes=F.normalize(torch.randn(batch, 2, dim, generator=gen), dim=-1),
    )


def eval_model(pixel_map: str = "Mx", dim: int = 12) -> InCTRLModel:
    """A small model in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = InCTRLModel(dim, GRID, output_size=32, sigma=1.0, pixel_map=pixel_map)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def pick(x: InCTRLInputs, i: int) -> InCTRLInputs:
    return InCTRLInputs(*(t[i : i + 1] for t in vars(x).values()))


def test_trainable_parameters_for_vit_b_16_plus_240_dimensions():
    model = InCTRLModel(640, (15, 15), output_size=240, sigma=4.0, pixel_map="Mx")  # heads only, no CLIP weights

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    assert (count(model.adapter), count(model.diff_head_ref), count(model.diff_head)) == (204_800, 92_033, 38_083)
    assert count(model) == 334_916
    keys = set(model.state_dict())  # the released state dict's names
    assert {"adapter.fc.0.weight", "adapter.fc.2.weight", "diff_head.bn1.running_mean",
            "diff_head_ref.projection3.bias"} <= keys  # fmt: skip


def test_registration_and_default_taps():
    cls = get_method("inctrl")
    assert (cls.fit_scope, cls.trains_per_shot, cls.supports_zero_shot) == ("auxiliary", True, False)
    assert [cls.auxiliary_dataset(d) for d in ("synthetic", "mvtec", "visa", "elpv")] == [
        "synthetic-aux", "visa", "mvtec", "mvtec"
    ]  # fmt: skip
    assert InCTRLConfig().taps(12) == (6, 8, 10)  # blocks 7, 9, 11 (1-indexed) as released
    assert InCTRLConfig().taps(6) == (3, 4, 5)


def test_patch_residual_is_the_mean_over_layers_of_the_nearest_prompt_patch():
    x = random_inputs(batch=2, shot=2)
    expected = torch.zeros(2, GRID[0] * GRID[1])
    for b in range(2):
        for i in range(expected.shape[1]):
            per_layer = [
                min(0.5 * (1 - F.cosine_similarity(x.query_tokens[b, l, i], p, dim=0)) for p in x.prompt_tokens[b, l])
                for l in range(3)
            ]
            expected[b, i] = sum(per_layer) / 3
    torch.testing.assert_close(patch_residual(x.query_tokens, x.prompt_tokens), expected, rtol=0, atol=1e-6)


def test_scores_follow_the_spec_and_s_p_is_max_m():
    model = eval_model()
    x = random_inputs(batch=5, shot=3)
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out.patch_score, out.residual_map.amax(dim=1))
    torch.testing.assert_close(out.score, (out.holistic + out.patch_score) / 2)
    cos = torch.einsum("bd,bkd->bk", F.normalize(x.query_embedding, dim=-1), x.text_prototypes)
    torch.testing.assert_close(out.text_score, (100 * cos).softmax(-1)[:, 1])
    holistic = out.residual_map + (out.image_residual + out.text_score)[:, None]
    torch.testing.assert_close(out.holistic_map, holistic)
    assert ((out.score >= 0) & (out.score <= 1)).all()


@pytest.mark.parametrize("pixel_map", ["Mx", "holistic"])
def test_batch_size_invariance_with_per_query_prompts(pixel_map):
    model = eval_model(pixel_map)
    x = random_inputs(batch=8, shot=2, seed=1)
    with torch.no_grad():
        whole = model(x)
        parts = [model(pick(x, i)) for i in range(8)]
        maps = model.anomaly_maps(whole)
        part_maps = torch.cat([model.anomaly_maps(p) for p in parts])
    for name in ("residual_map", "patch_score", "image_residual", "score"):
        single = torch.cat([getattr(p, name) for p in parts])
        torch.testing.assert_close(getattr(whole, name), single, rtol=0, atol=1e-6)
    torch.testing.assert_close(maps, part_maps, rtol=0, atol=1e-6)


def test_holistic_map_is_mx_shifted_by_the_image_evidence():
    x = random_inputs(batch=3, shot=1, seed=2)
    with torch.no_grad():
        out = eval_model("Mx")(x)
        mx, holistic = eval_model("Mx").anomaly_maps(out), eval_model("holistic").anomaly_maps(out)
    shift = (out.image_residual + out.text_score)[:, None, None].expand_as(mx)
    torch.testing.assert_close(holistic - mx, shift, rtol=0, atol=1e-5)
    assert mx.shape == (3, 32, 32)


def test_one_shot_prototype_is_the_single_prompt():
    model = eval_model()
    x = random_inputs(batch=4, shot=1, seed=3)
    with torch.no_grad():
        out = model(x)
        expected = model.diff_head_ref(model.adapter(x.prompt_embeddings[:, 0]) - model.adapter(x.query_embedding))
    torch.testing.assert_close(out.image_residual, expected, rtol=0, atol=1e-7)


def test_official_loss_is_focal_with_logits_on_probabilities():
    p = torch.tensor([0.0, 0.3, 0.9, 1.0, 0.5])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    b = -(y * torch.log(torch.sigmoid(p)) + (1 - y) * torch.log(1 - torch.sigmoid(p)))
    expected = ((1 - torch.exp(-b)) ** 2 * b).mean()
    assert focal_on_probabilities(p, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert focal_on_probabilities(torch.ones(1), torch.ones(1)).item() > 0.01  # never saturates on probabilities
    out = InCTRLOutput(*(torch.rand(5, generator=torch.Generator().manual_seed(i)) for i in range(7)))
    bce = F.binary_cross_entropy
    expected = bce(out.score, y) + bce(out.image_residual, y)
    assert inctrl_loss(out, y, "bce_prob").item() == pytest.approx(expected.item())


def test_text_prior_sentences():
    normal, anomalous = prompt_sentences("metal nut")
    assert (len(normal), len(anomalous)) == (154, 88)
    assert "a photo of the flawless metal nut for anomaly detection." in normal
    assert prompt_sentences("cat") == (["a photo of cat for anomaly detection."],
                                       ["a photo without cat for anomaly detection."])  # fmt: skip


@pytest.fixture
def method(tiny_backbone):
    m = get_method("inctrl")(InCTRLConfig(), FeatureCache(tiny_backbone))
    torch.manual_seed(0)
    for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm1d)):
        bn.running_mean.uniform_(-0.5, 0.5)
    return m.eval()


def test_method_batch_size_invariance(method, image_files):
    refs, queries = image_files(2, seed=5, prefix="ref"), image_files(8, seed=6, prefix="query")
    method.set_support([refs], "hex_nut")
    whole = method.predict_step(queries, 0)
    parts = [method.predict_step(split_batch(queries, [i]), i) for i in range(8)]
    torch.testing.assert_close(whole.anomaly_maps, torch.cat([p.anomaly_maps for p in parts]), rtol=0, atol=1e-6)
    torch.testing.assert_close(whole.image_scores, torch.cat([p.image_scores for p in parts]), rtol=0, atol=1e-6)
    with torch.no_grad():
        out = method.model(method.query_inputs(queries))
        singles = [method.model(method.query_inputs(split_batch(queries, [i]))) for i in range(8)]
    torch.testing.assert_close(out.residual_map, torch.cat([s.residual_map for s in singles]), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.patch_score, torch.cat([s.patch_score for s in singles]), rtol=0, atol=1e-6)
    assert whole.anomaly_maps.shape == (8, 224, 224) and whole.anomaly_maps.dtype == torch.float32


def test_method_one_shot_and_no_prompts(method, image_files):
    refs = image_files(1, seed=7, prefix="ref")
    with pytest.raises(UserError, match="at least one reference"):
        method.set_support([], "tile")
    method.set_support([refs], "tile")
    own = method.model(method.query_inputs(refs))
    assert own.residual_map.abs().max() < 1e-6 and own.patch_score.item() < 1e-6  # the prompt is its own match
    out = method.predict_step(image_files(3, seed=8), 0)
    assert out.image_scores.shape == (3,) and all(math.isfinite(s) for s in out.image_scores.tolist())


def test_unknown_options_are_user_errors(tiny_backbone):
    cls = get_method("inctrl")
    with pytest.raises(UserError, match="loss"):
        cls(InCTRLConfig(loss="focal"), FeatureCache(tiny_backbone))
    with pytest.raises(UserError, match="pixel_map"):
        cls(InCTRLConfig(pixel_map="none"), FeatureCache(tiny_backbone))
