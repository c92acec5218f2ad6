"""PromptAD / FineGrainedAD against step-by-step references of the released computations (PromptAD's
``train_seg.py`` / ``train_cls.py`` / ``test_cls.py``, FineGrainedAD's Q-Former and top-k), on the seeded
``fsas-tiny`` backbone: triplet margin, the separately trained CLS prompts and their image score, the Q-Former
initialisation, and the candidate top-k that fails."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsas_bench.backbones import FeatureCache
from fsas_bench.errors import UserError
from fsas_bench.methods import get_method
from fsas_bench.methods.finegrainedad.config import FineGrainedADConfig
from fsas_bench.methods.promptad.config import PromptADConfig
from fsas_bench.methods.finegrainedad.captions import load_caption_file
from fsas_bench.methods.finegrainedad.losses import triplet_loss
from fsas_bench.methods.finegrainedad.prompt_learner import PromptLearner
from fsas_bench.methods.finegrainedad.prompts import Family, build_families
from fsas_bench.methods.text import tokenize
from fsas_bench.methods.finegrainedad.torch_model import QueryFormer

TINY = dict(hires_factor=1, output_size=32, captions="synthetic", seed=7)
CATEGORY = "capsule"
GENERIC_STATES = ("damaged {}", "flawed {}", "abnormal {}", "imperfect {}", "blemished {}", "{} with flaw",
                  "{} with defect", "{} with damage")  # fmt: skip
TOL = dict(rtol=0, atol=1e-5)


def _promptad(backbone, **changes) -> object:
    cls = get_method("promptad")
    return cls(cls.config_cls(**{**TINY, **changes}), FeatureCache(backbone))


# --- the released PromptAD computation, written out step by step ------------------------------------------


class ReleasedPromptAD:
    """PromptAD's prompt learner and training step, as released: contexts drawn by ``normal_`` (std 0.02),
    prompts assembled as [SOS, normal ctx, (abnormal ctx), suffix], the text tower run on them, and the loss
    L_v2t + TripletLoss(margin) + λ₁ · L_match with SGD and a per-epoch cosine schedule."""

    def __init__(self, backbone, n_pro: int, margin: float, seed: int, n_ctx: int = 4, n_ctx_ab: int = 1,
                 n_pro_ab: int = 4) -> None:  # fmt: skip
        self.model, self.margin = backbone.model, margin
        record = load_caption_file("synthetic")[CATEGORY]
        name = record.foreground
        states = [s.format(name) for s in GENERIC_STATES] + [f"{name} {d}" for d in record.defect_states]
        width = self.model.ln_final.weight.shape[0]
        torch.manual_seed(seed)
        self.normal_ctx = nn.Parameter(nn.init.normal_(torch.empty(n_pro, n_ctx, width), std=0.02))
        self.abnormal_ctx = nn.Parameter(nn.init.normal_(torch.empty(n_pro_ab, n_ctx_ab, width), std=0.02))
        prefix, ab_prefix = " ".join(["N"] * n_ctx), " ".join(["A"] * n_ctx_ab)
        sentences = {
            "normal": [f"{prefix} {name}." for _ in range(n_pro)],
            "handle": [f"{prefix} {state}." for state in states for _ in range(n_pro)],
            "learned": [f"{prefix} {ab_prefix} {name}." for _ in range(n_pro_ab) for _ in range(n_pro)],
        }
        self.tokens = {k: tokenize(self.model, backbone.arch, v) for k, v in sentences.items()}
        with torch.no_grad():
            embedded = {k: self.model.token_embedding(v).float() for k, v in self.tokens.items()}
        self.sos = {k: v[:, :1] for k, v in embedded.items()}
        self.suffix = {k: v[:, 1 + n_ctx + (n_ctx_ab if k == "learned" else 0) :] for k, v in embedded.items()}
        self.n_states, self.n_pro, self.n_pro_ab = len(states), n_pro, n_pro_ab

    def encode(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Raw text features: positional embedding, causal transformer, ln_final, the EOT row, projection."""
        x = embeddings + self.model.positional_embedding
        x = self.model.transformer(x, attn_mask=self.model.attn_mask)
        x = self.model.ln_final(x)
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.model.text_projection

    def features(self) -> dict[str, torch.Tensor]:
        ctx, actx = self.normal_ctx, self.abnormal_ctx
        width = ctx.shape[-1]
        handle_ctx = ctx.unsqueeze(0).expand(self.n_states, -1, -1, -1).reshape(-1, ctx.shape[1], width)
        learned_ctx = ctx.unsqueeze(0).expand(self.n_pro_ab, -1, -1, -1).reshape(-1, ctx.shape[1], width)
        learned_actx = actx.unsqueeze(0).expand(self.n_pro, -1, -1, -1).reshape(-1, actx.shape[1], width)
        prompts = {
            "normal": torch.cat([self.sos["normal"], ctx, self.suffix["normal"]], dim=1),
            "handle": torch.cat([self.sos["handle"], handle_ctx, self.suffix["handle"]], dim=1),
            "learned": torch.cat([self.sos["learned"], learned_ctx, learned_actx, self.suffix["learned"]], dim=1),
        }
        return {k: self.encode(v, self.tokens[k]) for k, v in prompts.items()}

    def anchors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """n̄ (1 × D), ā (1 × D), the individually normalised abnormal features, and the raw features."""
        f = self.features()
        abnormal = torch.cat([f["handle"], f["learned"]])
        normal_anchor = f["normal"].mean(0, keepdim=True)
        abnormal_anchor = abnormal.mean(0, keepdim=True)
        return (normal_anchor / normal_anchor.norm(dim=-1, keepdim=True),
                abnormal_anchor / abnormal_anchor.norm(dim=-1, keepdim=True),
                abnormal / abnormal.norm(dim=-1, keepdim=True), f)  # fmt: skip

    def triplet(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """The released TripletLoss: squared differences summed over dim 1, hinge with the margin, mean."""
        pos = torch.sum((anchor - positive).pow(2), dim=1)
        neg = torch.sum((anchor - negative).pow(2), dim=1)
        return torch.mean(torch.relu(pos - neg + self.margin))

    def loss(self, visual: torch.Tensor, tau: torch.Tensor, lambda1: float = 0.001) -> torch.Tensor:
        """``visual``: ``k × N × D`` tokens (``train_seg.py``) or ``k × D`` CLS features (``train_cls.py``)."""
        normal, abnormal, abnormal_each, f = self.anchors()
        handle_mean = F.normalize(f["handle"], dim=-1).mean(0)
        learned_mean = F.normalize(f["learned"], dim=-1).mean(0)
        match = (handle_mean - learned_mean).norm(dim=0) ** 2.0
        logits = torch.cat([visual @ normal.T, visual @ abnormal_each.T], dim=-1) * tau
        if visual.dim() == 3:
            v2t = F.cross_entropy(logits.transpose(1, 2), torch.zeros(logits.shape[:2], dtype=torch.long))
        else:
            v2t = F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))
        return v2t + self.triplet(visual, normal, abnormal) + match * lambda1

    def train(self, visual: torch.Tensor, tau: torch.Tensor, epochs: int) -> list[float]:
        params = [self.normal_ctx, self.abnormal_ctx]
        optimizer = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=0.0005)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=1e-5)
        history = []
        for _ in range(epochs):
            optimizer.zero_grad()
            loss = self.loss(visual, tau)
            loss.backward()
            optimizer.step()
            scheduler.step()
            history.append(loss.item())
        return history


def _shots(method, refs) -> tuple[torch.Tensor, torch.Tensor]:
    feats = method.features(refs, ["vv_tokens", "embedding"])
    tokens = F.normalize(torch.stack([f["vv_tokens"] for f in feats]), dim=-1)
    return tokens, F.normalize(torch.stack([f["embedding"] for f in feats]), dim=-1)


# --- 1. triplet margin -------------------------------------------------------------------------------------


def test_released_margins_and_the_triplet_loss_against_a_loop():
    assert PromptADConfig().triplet_margin == 0.0 and PromptADConfig.faithful().triplet_margin == 0.0
    assert FineGrainedADConfig().triplet_margin == 1.0 and FineGrainedADConfig.faithful().triplet_margin == 1.0
    g = torch.Generator().manual_seed(0)
    tokens = F.normalize(torch.randn(2, 5, 4, generator=g), dim=-1)
    normal, abnormal = F.normalize(torch.randn(2, 4, generator=g), dim=-1)
    for margin in (0.0, 1.0):
        hinge = [max(0.0, sum(float((tokens[s, n, c] - normal[c]) ** 2 - (tokens[s, n, c] - abnormal[c]) ** 2)
                              for n in range(5)) + margin) for s in range(2) for c in range(4)]  # fmt: skip
        torch.testing.assert_close(triplet_loss(tokens, normal, abnormal, margin), torch.tensor(sum(hinge) / 8), **TOL)


def test_promptad_segmentation_training_follows_train_seg_with_margin_zero(tiny_backbone, image_files):
    refs = image_files(2, seed=11, prefix="ref")
    method = _promptad(tiny_backbone, epochs=3)
    method.set_support([refs], CATEGORY)
    tokens, _ = _shots(method, refs)
    tau = tiny_backbone.model.logit_scale.detach()
    released = ReleasedPromptAD(tiny_backbone, n_pro=1, margin=0.0, seed=7)
    with torch.no_grad():
        normal, abnormal, _, _ = released.anchors()
        expected_tri = released.triplet(tokens, normal, abnormal)
        record, vocab = method.caption_record(CATEGORY, [refs])
        torch.manual_seed(7)
        family = method.prompt_learner(build_families(record, vocab, "none", 7, 1, 4), 1)()[0]
        ours_tri = triplet_loss(tokens, family.normal, family.abnormal, method.config.triplet_margin)
    torch.testing.assert_close(ours_tri, expected_tri, **TOL)
    expected = released.train(tokens, tau, 3)
    torch.testing.assert_close(torch.tensor(method.loss_history), torch.tensor(expected), **TOL)


# --- 2. PromptAD's separately trained CLS prompts and its image score --------------------------------------


@pytest.mark.slow
def test_cls_prompts_follow_train_cls_and_test_cls(tiny_backbone, image_files):
    refs, queries = image_files(2, seed=12, prefix="ref"), image_files(3, seed=13, prefix="query")
    method = _promptad(tiny_backbone, epochs=3, image_score="cls_prompts")
    method.set_support([refs], CATEGORY)
    _, embeddings = _shots(method, refs)
    tau = tiny_backbone.model.logit_scale.detach()
    released = ReleasedPromptAD(tiny_backbone, n_pro=3, margin=0.0, seed=7)
    expected = released.train(embeddings, tau, 3)
    torch.testing.assert_close(torch.tensor(method.cls_loss_history), torch.tensor(expected), **TOL)
    assert method.cls_learner is not None and method.cls_learner.normal_ctx.shape[0] == 3
    # test_cls.py: softmax(τ · cls · [n̄, ā])[abnormal] of the CLS prompts, harmonically fused with the max of
    # the bilinearly upsampled (unsmoothed) vision map.
    with torch.no_grad():
        normal, abnormal, _, _ = released.anchors()
        text_features = torch.cat([normal, abnormal])
    bank = {b: torch.cat([f[f"block{b}"] for f in method.features(refs, [f"block{b}"])]) for b in method.blocks}
    expected_scores = []
    for f in method.features(queries, ["embedding", *(f"block{b}" for b in method.blocks)]):
        cls_feature = F.normalize(f["embedding"], dim=-1)
        text = (tau * cls_feature @ text_features.T).softmax(dim=-1)[1]
        taps = []
        for b in method.blocks:
            cos = F.normalize(f[f"block{b}"], dim=-1) @ F.normalize(bank[b], dim=-1).T
            taps.append(((1.0 - cos).min(dim=-1).values / 2.0))
        side = math.isqrt(taps[0].shape[0])
        vision = (0.5 * (taps[0] + taps[1])).view(1, 1, side, side)
        vision_max = F.interpolate(vision, size=(32, 32), mode="bilinear", align_corners=False).max()
        expected_scores.append(1.0 / (1.0 / vision_max + 1.0 / text))
    out = method.predict_step(queries, 0)
    torch.testing.assert_close(out.image_scores, torch.stack(expected_scores), **TOL)
    benchmark = _promptad(tiny_backbone, epochs=3)
    benchmark.set_support([refs], CATEGORY)
    assert benchmark.cls_learner is None
    assert not torch.allclose(benchmark.predict_step(queries, 0).image_scores, out.image_scores, rtol=0, atol=1e-5)


def test_image_score_options_and_presets(tiny_backbone):
    assert PromptADConfig().image_score == "segmentation_prompts"
    assert PromptADConfig.faithful().image_score == "cls_prompts" and PromptADConfig.faithful().n_pro_cls == 3
    assert FineGrainedADConfig.faithful().image_score == "segmentation_prompts"
    with pytest.raises(UserError, match="image_score 'clsx' is unknown"):
        _promptad(tiny_backbone, image_score="clsx")
    cls = get_method("finegrainedad")
    with pytest.raises(UserError, match="mfsc_levels=none"):
        cls(cls.config_cls(image_score="cls_prompts"), FeatureCache(tiny_backbone))


# --- 3. the Q-Former's released structure and initialisation ----------------------------------------------


def _released_qformer(n: int, dim: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Parameters drawn in the released order and dtype: per cross-attention q_proj (D→D), kv_proj (D→2D),
    proj (D→D), nn.Linear defaults with biases; the shared queries ~ N(0, 0.02²); the fusion Linear(2D → D)."""
    out = {}
    for branch in ("normal", "abnormal"):
        for name, (d_in, d_out) in (("q", (dim, dim)), ("kv", (dim, 2 * dim)), ("proj", (dim, dim))):
            layer = nn.Linear(d_in, d_out, dtype=dtype)
            out[f"{branch}.{name}.weight"], out[f"{branch}.{name}.bias"] = layer.weight, layer.bias
    out["queries"] = torch.zeros(n, dim, dtype=dtype).normal_(mean=0.0, std=0.02)
    fuse = nn.Linear(2 * dim, dim, dtype=dtype)
    out["fuse.weight"], out["fuse.bias"] = fuse.weight, fuse.bias
    return {k: v.detach().float() for k, v in out.items()}


def _released_attention(p: dict, branch: str, queries: torch.Tensor, keys: torch.Tensor, heads: int) -> torch.Tensor:
    c, dim = queries.shape
    d = dim // heads
    q = (queries @ p[f"{branch}.q.weight"].T + p[f"{branch}.q.bias"]).reshape(c, 1, heads, d).permute(0, 2, 1, 3)
    kv = keys @ p[f"{branch}.kv.weight"].T + p[f"{branch}.kv.bias"]
    kv = kv.reshape(c, 1, 2, heads, d).permute(0, 2, 3, 1, 4)
    k, v = kv[:, 0], kv[:, 1]
    attn = ((q @ k.transpose(-2, -1)) * d**-0.5).softmax(dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(c, 1, dim)[:, 0]
    return x @ p[f"{branch}.proj.weight"].T + p[f"{branch}.proj.bias"]


def _ours(qformer: QueryFormer) -> dict[str, torch.Tensor]:
    """fsas-bench's Q-Former parameters under the names of :func:`_released_qformer`."""
    layers = {"q": "q_proj", "kv": "kv_proj", "proj": "proj"}
    out = {
        f"{b}.{k}.{w}": getattr(getattr(getattr(qformer, f"{b}_attention"), layer), w)
        for b in ("normal", "abnormal") for k, layer in layers.items() for w in ("weight", "bias")
    }  # fmt: skip
    out |= {"queries": qformer.queries, "fuse.weight": qformer.fusion.weight, "fuse.bias": qformer.fusion.bias}
    return {k: v.detach() for k, v in out.items()}


def _released_keys(p: dict[str, torch.Tensor], pairs: torch.Tensor) -> torch.Tensor:
    out1 = _released_attention(p, "normal", p["queries"], pairs[:, 0], 8)
    out2 = _released_attention(p, "abnormal", p["queries"], pairs[:, 1], 8)
    return torch.cat([out1, out2], dim=1) @ p["fuse.weight"].T + p["fuse.bias"]


@pytest.mark.parametrize("n, dim, dtype", [(4, 128, torch.float32), (3, 640, torch.float32), (4, 128, torch.bfloat16)])
def test_qformer_draws_the_released_weights_and_computes_the_released_keys(n, dim, dtype):
    torch.manual_seed(3)
    expected = _released_qformer(n, dim, dtype)
    torch.manual_seed(3)
    qformer = QueryFormer(n, dim, dtype=dtype).float()
    ours = _ours(qformer)
    assert sum(p.numel() for p in qformer.parameters()) == sum(v.numel() for v in expected.values())
    for key, value in expected.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
    assert qformer.normal_attention.q_proj.bias.abs().min() > 0  # default (uniform) biases, not zeros
    pairs = F.normalize(torch.randn(n, 2, dim), dim=-1)
    with torch.no_grad():
        torch.testing.assert_close(qformer(pairs), _released_keys(expected, pairs), **TOL)


@pytest.mark.parametrize("precision, dtype", [("32-true", torch.float32), ("bf16-mixed", torch.bfloat16)])
def test_finegrainedad_candidate_keys_come_from_the_released_qformer(precision, dtype, tiny_backbone, image_files):
    cls = get_method("finegrainedad")
    method = cls(cls.config_cls(**{**TINY, "epochs": 1, "precision": precision}), FeatureCache(tiny_backbone))
    refs = [image_files(1, seed=14, prefix="ref")]
    method.set_support(refs, "hex_nut")
    pairs, keys = method.candidates(method.learner)
    assert method.qformer is not None and method.qformer.queries.shape == (4, 128)  # 2 entities, caption, background
    torch.testing.assert_close(keys, _released_keys(_ours(method.qformer), pairs), **TOL)
    record, vocab = method.caption_record("hex_nut", refs)
    torch.manual_seed(7)  # the train seed; the prompt learner draws first, then the Q-Former in the run's dtype
    method.prompt_learner(build_families(record, vocab, "full", 7, 1, 4), 1)
    expected = _released_qformer(4, 128, dtype)
    for key, value in _ours(method.qformer).items():
        torch.testing.assert_close(value.cpu(), expected[key], rtol=0, atol=0, msg=key)


# --- 4. too few handle candidates ----------------------------------------------------------------------------


def test_too_few_handle_candidates_cycle_in_benchmark_mode_and_raise_as_released(tiny_backbone):
    family = Family(
        name="image", normal=("a widget",), handle=("a widget with a dent", "a widget with a cut", "a bent widget"),
        learned=("a widget",) * 4, attributes={"color": ("red", ("blue",)), "shape": ("round", ())},
    )  # fmt: skip
    model, arch = tiny_backbone.model, tiny_backbone.arch
    with pytest.raises(UserError, match="'color' has 1 handle candidates for 3 handle prompts") as info:
        PromptLearner(model, arch, [family], 4, 1, 1, 4, "raise")
    assert "\n" not in str(info.value) and "candidate_overflow=cycle" in str(info.value)
    learner = PromptLearner(model, arch, [family], 4, 1, 1, 4, "cycle")
    color = learner.attribute_fixed[learner.rows[0].handle, 1]
    assert torch.equal(color[0], color[1]) and torch.equal(color[0], color[2])  # the one candidate, cycled
    assert learner.gate_mask[learner.rows[0].handle, 1, 3].eq(0).all()  # no shape candidate: left out
    assert FineGrainedADConfig.faithful().candidate_overflow == "raise"
    assert FineGrainedADConfig().candidate_overflow == "cycle"
    with pytest.raises(UserError, match="candidate_overflow 'skip' is unknown"):
        _promptad(tiny_backbone, candidate_overflow="skip")
