"""Faithful backbone inputs and taps of the released codes, each against a step-by-step reference written here:
PromptAD/FineGrainedAD's in-place-updated memory-bank hooks and their cv2 input pipeline (BGR queries, 1024-px
pre-resize), InCTRL's Resize + CenterCrop; and the default preprocessing variant unchanged and never mixed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from fsas_bench.backbones import DEFAULT_PREPROCESS, FeatureCache, Preprocess
from fsas_bench.backbones.vv_attention import vv_patch_tokens
from fsas_bench.data.datamodule import image_sha
from fsas_bench.data.formats import read_image_rgb
from fsas_bench.errors import UserError
from fsas_bench.methods import get_method
from fsas_bench.methods.finegrainedad.config import FineGrainedADConfig
from fsas_bench.methods.promptad.config import PromptADConfig
from fsas_bench.methods.finegrainedad.hires import hires_vv_tokens
from fsas_bench.methods.inctrl.lightning_module import InCTRLConfig
from fsas_bench.methods.ops import uncrop_maps

TOL = 1e-5


def _png(path: Path, width: int, height: int, seed: int) -> Path:
    """A smooth-ish random RGB PNG (channels differ, so a red/blue swap shows)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
    noisy = np.clip(np.asarray(image, dtype=np.int16) + rng.integers(-20, 21, (height, width, 3)), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(path)
    return path


def _normalise(backbone) -> transforms.Normalize:
    return transforms.Normalize(mean=backbone.mean.flatten().tolist(), std=backbone.std.flatten().tolist())


# --- 1. the released memory-bank taps ---------------------------------------------------------------------


def _released_hook_reference(visual, images: torch.Tensor, hooked: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """The released V2V forward, written out: every block runs the original path as
    ``x_ori += attn(ln_1(x_ori)); x_ori = x_ori + mlp(ln_2(x_ori))`` (the first ``+=`` in place), and a forward
    hook on block i keeps a *view* of its output (CLS dropped) — which block i + 1's in-place add then changes."""
    stored = {}
    with torch.no_grad():
        x_ori = visual._embeds(images)  # B × L × C (batch first)
        blocks = visual.transformer.resblocks
        for i, block in enumerate(blocks):
            attn = block.attn
            width, heads = x_ori.shape[-1], attn.num_heads
            u = block.ln_1(x_ori)
            q, k, v = (u @ attn.in_proj_weight.T + attn.in_proj_bias).chunk(3, dim=-1)
            split = [t.reshape(*t.shape[:2], heads, width // heads).transpose(1, 2) for t in (q, k, v)]
            weights = (split[0] @ split[1].transpose(-2, -1) * (width // heads) ** -0.5).softmax(dim=-1)
            mixed = (weights @ split[2]).transpose(1, 2).reshape(*u.shape)
            if i == 0:
                x_ori = x_ori + attn.out_proj(mixed)  # the first block starts the dual path: a new tensor
            else:
                x_ori += attn.out_proj(mixed)  # in place: updates the view the previous hook stored
            x_ori = x_ori + block.mlp(block.ln_2(x_ori))
            if i in hooked:
                stored[i] = x_ori[:, 1:, :]  # a view, as `output[1].permute(1, 0, 2)[:, 1:, :]`
    return {i: t.clone() for i, t in stored.items()}


def test_released_tap_is_block_output_plus_next_attention_residual(tiny_backbone):
    images = torch.randn(2, 3, 224, 224)
    last = tiny_backbone.depth - 1
    reference = _released_hook_reference(tiny_backbone.model.visual, images, (1, 3, last))
    out = tiny_backbone.encode(images, ["block1", "released_tap1", "released_tap3", f"released_tap{last}"])
    for b in (1, 3, last):
        assert out[f"released_tap{b}"].shape == (2, 196, 128)
        assert (out[f"released_tap{b}"] - reference[b]).abs().max() <= TOL
    assert (out["block1"] - reference[1]).abs().max() > 100 * TOL  # the clean output is not what the bank held
    alone = tiny_backbone.encode(images, [f"released_tap{last}", f"block{last}"])
    assert torch.equal(alone[f"released_tap{last}"], alone[f"block{last}"])  # nothing runs after the last block
    with pytest.raises(UserError, match="block indices"):
        tiny_backbone.encode(images, ["released_tap6"])


def test_memory_tap_selects_bank_and_query_tokens(tiny_backbone):
    method = get_method("promptad")(PromptADConfig(memory_tap="released"), FeatureCache(tiny_backbone))
    assert method.names == ["released_tap1", "released_tap3", "embedding", "vv_tokens"]
    with pytest.raises(UserError, match="memory_tap 'hooks' is unknown"):
        get_method("finegrainedad")(FineGrainedADConfig(memory_tap="hooks"), FeatureCache(tiny_backbone))


def test_faithful_presets_reproduce_the_released_pipeline():
    for config in (FineGrainedADConfig.faithful(), PromptADConfig.faithful()):
        assert (config.memory_tap, config.query_bgr_quirk, config.pre_resize) == ("released", True, 1024)
        assert "memory_tap=released;query_bgr_quirk=True;pre_resize=1024" in config.flags()
    benchmark = FineGrainedADConfig()
    assert (benchmark.memory_tap, benchmark.query_bgr_quirk, benchmark.pre_resize) == ("block", False, 0)
    assert InCTRLConfig().preprocess == "resize" and InCTRLConfig.faithful().preprocess == "resize_centercrop"
    assert InCTRLConfig.faithful().flags() == "mode=faithful;preprocess=resize_centercrop;head_dtype=float32"


# --- 2. PromptAD / FineGrainedAD's cv2 input pipeline -----------------------------------------------------


def _released_cv2_input(path: Path, backbone, query: bool) -> torch.Tensor:
    """The released loaders, step by step: cv2.imread (BGR), cv2.resize to 1024² (default INTER_LINEAR); shots
    get cvtColor BGR→RGB, queries go to PIL as the BGR array; then Resize((S, S), bicubic), CenterCrop(S),
    convert('RGB'), ToTensor, Normalize."""
    bgr = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), (1024, 1024))
    array = bgr if query else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    side = backbone.image_size
    transform = transforms.Compose([
        transforms.Resize((side, side), transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(side),
        lambda image: image.convert("RGB"),
        transforms.ToTensor(),
        _normalise(backbone),
    ])  # fmt: skip
    return transform(Image.fromarray(array))


@pytest.mark.parametrize("query", [False, True])
def test_cv2_pipeline_matches_the_released_loader(tiny_backbone, tmp_path, query):
    path = _png(tmp_path / "img.png", 300, 220, seed=3)
    reference = _released_cv2_input(path, tiny_backbone, query)
    variant = Preprocess(pre_resize=1024, bgr=query)
    ours = tiny_backbone.preprocess(read_image_rgb(path), variant)
    assert (ours - reference).abs().max() <= TOL
    plain = tiny_backbone.preprocess(read_image_rgb(path))
    assert (plain - reference).abs().max() > 0.01  # the quirks are measurable on this image


def test_promptad_scores_bgr_queries_against_rgb_shots(tiny_backbone, tmp_path):
    path = _png(tmp_path / "q.png", 200, 160, seed=4)
    batch = {"path": [str(path)], "sha": [image_sha(path)]}
    method = get_method("promptad")(PromptADConfig.faithful(), FeatureCache(tiny_backbone))
    names = method.names
    for variant, query in ((method.shot_input, False), (method.query_input, True)):
        got = method.features(batch, names, variant=variant)[0]
        want = tiny_backbone.encode(_released_cv2_input(path, tiny_backbone, query)[None], names)
        for name in names:
            assert (got[name] - want[name][0]).abs().max() <= TOL, name


def test_promptad_faithful_bank_holds_rgb_released_taps_and_queries_are_bgr(tiny_backbone, tmp_path):
    shot, query = _png(tmp_path / "s.png", 200, 160, seed=8), _png(tmp_path / "q.png", 200, 160, seed=9)
    config = PromptADConfig.faithful(precision="32-true", epochs=1, output_size=64, captions="synthetic")
    method = get_method("promptad")(config, FeatureCache(tiny_backbone))
    method.set_support([{"path": [str(shot)], "sha": [image_sha(shot)]}], "capsule")
    names = method.names
    shot_ref = tiny_backbone.encode(_released_cv2_input(shot, tiny_backbone, query=False)[None], names)
    for bank, name in zip(method.scorer.memory, method.tap_names, strict=True):
        assert (bank - shot_ref[name][0]).abs().max() <= TOL
    out = method.predict_step({"path": [str(query)], "sha": [image_sha(query)]}, 0)
    ref = tiny_backbone.encode(_released_cv2_input(query, tiny_backbone, query=True)[None], names)
    pixel, score = method.scorer([ref[n][0] for n in method.tap_names], ref["vv_tokens"][0], ref["embedding"][0])
    assert (out.anomaly_maps[0] - pixel).abs().max() <= TOL and (out.image_scores[0] - score).abs() <= TOL


def test_mlsa_high_resolution_view_tiles_the_pre_resized_shot(tiny_backbone, tmp_path):
    """Released: the 1024-px RGB shot → Resize((f·S, f·S), bicubic), ToTensor, Normalize, cut into S-px tiles."""
    path, factor, side = _png(tmp_path / "s.png", 300, 220, seed=12), 2, tiny_backbone.image_size
    rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), (1024, 1024)), cv2.COLOR_BGR2RGB)
    big = transforms.Compose([
        transforms.Resize((factor * side, factor * side), transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(),
        _normalise(tiny_backbone),
    ])(Image.fromarray(rgb))  # fmt: skip
    tiles = torch.stack([big[:, r * side : (r + 1) * side, c * side : (c + 1) * side]
                         for r in range(factor) for c in range(factor)])  # fmt: skip
    grid = tiny_backbone.grid[0]
    tokens = vv_patch_tokens(tiny_backbone.model.visual, tiles).view(factor, factor, grid, grid, -1)
    want = tokens.permute(0, 2, 1, 3, 4).reshape(factor * grid * factor * grid, -1)
    got = hires_vv_tokens(tiny_backbone, path, "s", factor, Preprocess(pre_resize=1024))
    assert (got - want).abs().max() <= TOL
    assert (hires_vv_tokens(tiny_backbone, path, "s", factor) - want).abs().max() > 100 * TOL


# --- 3. InCTRL's Resize + CenterCrop ----------------------------------------------------------------------


def _released_inctrl_input(path: Path, backbone) -> torch.Tensor:
    """InCTRL's transform on the PIL image: Resize(S) of the shorter side (bicubic), CenterCrop((S, S)),
    convert('RGB'), ToTensor, Normalize."""
    side = backbone.image_size
    transform = transforms.Compose([
        transforms.Resize(side, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop((side, side)),
        lambda image: image.convert("RGB"),
        transforms.ToTensor(),
        _normalise(backbone),
    ])  # fmt: skip
    with Image.open(path) as image:
        return transform(image)


@pytest.mark.parametrize("size", [(256, 192), (150, 310), (224, 224)])
def test_resize_centercrop_matches_the_released_transform(tiny_backbone, tmp_path, size):
    path = _png(tmp_path / "img.png", *size, seed=5)
    reference = _released_inctrl_input(path, tiny_backbone)
    ours = tiny_backbone.preprocess(read_image_rgb(path), Preprocess(resize="resize_centercrop"))
    assert ours.shape == reference.shape == (3, 224, 224)
    assert (ours - reference).abs().max() <= TOL
    if size[0] != size[1]:
        assert (tiny_backbone.preprocess(read_image_rgb(path)) - reference).abs().max() > 0.1


def test_inctrl_faithful_reads_cropped_inputs(tiny_backbone, tmp_path):
    path = _png(tmp_path / "q.png", 256, 192, seed=6)
    batch = {"path": [str(path)], "sha": [image_sha(path)]}
    method = get_method("inctrl")(InCTRLConfig.faithful(), FeatureCache(tiny_backbone))
    got = method.features(batch, method.names, variant=method.input)[0]
    want = tiny_backbone.encode(_released_inctrl_input(path, tiny_backbone)[None], method.names)
    for name in method.names:
        assert (got[name] - want[name][0]).abs().max() <= TOL, name
    with pytest.raises(UserError, match="preprocess 'crop' is unknown"):
        get_method("inctrl")(InCTRLConfig(preprocess="crop"), FeatureCache(tiny_backbone))


def test_inctrl_faithful_maps_cover_the_whole_image(tiny_backbone, tmp_path):
    ref, query = _png(tmp_path / "r.png", 256, 192, seed=10), _png(tmp_path / "q.png", 256, 192, seed=11)
    method = get_method("inctrl")(InCTRLConfig.faithful(), FeatureCache(tiny_backbone)).eval()
    method.set_support([{"path": [str(ref)], "sha": [image_sha(ref)]}], "hex_nut")
    batch = {"path": [str(query)], "sha": [image_sha(query)]}
    with torch.no_grad():
        out = method.predict_step(batch, 0)
        crop = method.model.anomaly_maps(method.model(method.query_inputs(batch)))
    assert torch.equal(out.anomaly_maps, uncrop_maps(crop, [(256, 192)]).float())
    # resized 298 × 224, crop = columns 37 … 261; squashed to 224 columns, 37 / 298 · 224 ≈ 27.8 lie each side
    outside = torch.cat([out.anomaly_maps[0, :, :27], out.anomaly_maps[0, :, -27:]], dim=1)
    assert torch.all(outside == crop.min())


def test_uncrop_puts_the_crop_map_back_where_the_crop_was():
    """A linear ramp over the whole image, sampled on the crop's pixel centres, comes back as the same ramp on
    the whole (squashed) image inside the crop, and as the crop map's minimum outside it."""
    side, width, height = 24, 32, 24  # resized frame 32 × 24: crop = columns 4 … 28
    ramp = lambda x, y: 0.5 * x + 2.0 * y  # noqa: E731  (x, y in resized-image pixels)
    centres = torch.arange(side, dtype=torch.float64) + 0.5
    crop = ramp(centres[None, :] + 4, centres[:, None])[None].float()
    full = uncrop_maps(crop, [(width * 10, height * 10)])[0]
    xs = (torch.arange(side, dtype=torch.float64) + 0.5) / side * width  # squashed pixel centres → resized x
    want = ramp(xs[None, :], centres[:, None]).float()
    inside = (xs >= 4.5) & (xs <= 27.5)  # pixel centres of the crop (no border clamping)
    assert (full[:, inside] - want[:, inside]).abs().max() <= TOL
    outside = (xs < 4) | (xs > 28)
    assert outside.any() and torch.all(full[:, outside] == crop.min())
    square = torch.rand(2, side, side)
    assert torch.equal(uncrop_maps(square, [(50, 50), (80, 80)]), square)


# --- default variant and cache separation -----------------------------------------------------------------


def test_default_variant_is_todays_preprocessing_and_cache_key(tiny_backbone, tmp_path):
    path = _png(tmp_path / "img.png", 256, 192, seed=7)
    rgb = read_image_rgb(path)
    side = tiny_backbone.image_size
    resized = np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    before = (torch.from_numpy(resized / 255.0).permute(2, 0, 1) - tiny_backbone.mean) / tiny_backbone.std
    assert torch.equal(tiny_backbone.preprocess(rgb), before)
    assert torch.equal(tiny_backbone.preprocess(rgb, DEFAULT_PREPROCESS), before)
    cache = FeatureCache(tiny_backbone, tmp_path / "cache")
    cache.features(["abc"], ["block1"], lambda _: before)
    old_key = hashlib.sha256(f"{tiny_backbone.identity}|abc".encode()).hexdigest()
    assert [p.stem for p in (tmp_path / "cache").glob("*.safetensors")] == [old_key]


def test_variants_never_share_cache_entries(tiny_backbone, tmp_path):
    images = {v: torch.randn(3, 224, 224) for v in ("default", "crop", "bgr")}
    variants = {"default": DEFAULT_PREPROCESS, "crop": Preprocess(resize="resize_centercrop"),
                "bgr": Preprocess(pre_resize=1024, bgr=True)}  # fmt: skip
    cache = FeatureCache(tiny_backbone, tmp_path / "cache")
    cache.prefetch = {"window2"}
    got = {v: cache.features(["same-sha"], ["block1"], lambda _, v=v: images[v], variant=variants[v])[0]
           for v in variants}  # fmt: skip
    assert cache.stats.forwards == 3 and len(list((tmp_path / "cache").glob("*.safetensors"))) == 3
    for v in variants:
        assert torch.equal(got[v]["block1"], tiny_backbone.encode(images[v][None], ["block1"])["block1"][0])
    assert "window2" in got["default"] and "window2" not in got["crop"]  # other methods' prefetch: default only
    again = FeatureCache(tiny_backbone, tmp_path / "cache")
    for v in variants:
        never = lambda _: pytest.fail("decoded a cached image")  # noqa: E731
        hit = again.features(["same-sha"], ["block1"], never, variant=variants[v])
        assert torch.equal(hit[0]["block1"], got[v]["block1"])
    identities = {tiny_backbone.variant_identity(v) for v in variants.values()}
    assert len(identities) == 3 and tiny_backbone.variant_identity(DEFAULT_PREPROCESS) == tiny_backbone.identity
    with pytest.raises(UserError, match="pre_resize -1 is negative"):
        Preprocess(pre_resize=-1)
