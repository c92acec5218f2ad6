"""FineGrainedAD / PromptAD as registered methods: per-category training, determinism, batch invariance, and
end-to-end sweeps on the embedded benchmark."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from fsas_bench.backbones import FeatureCache, load_backbone
from fsas_bench.methods import get_method
from fsas_bench.methods.finegrainedad.config import FineGrainedADConfig
from fsas_bench.methods.promptad.config import PromptADConfig
from fsas_bench.methods.patchknn.torch_model import PatchKNNModel
from fsas_bench.runner.sweep import Sweep, SweepSpec
from tests.helpers import split_batch

TINY = dict(epochs=3, hires_factor=1, output_size=64, captions="synthetic")


@pytest.fixture(scope="module")
def trained_backbone():
    """The tiny CLIP pretrained on synthetic captions (its text tower carries signal)."""
    return load_backbone("fsas-tiny", "fsas-synthetic")


def _method(name: str, backbone, **changes):
    cls = get_method(name)
    return cls(cls.config_cls(**{**TINY, **changes}), FeatureCache(backbone))


def test_registration_configs_and_raw_logit_scale(tiny_backbone):
    fgad, promptad = get_method("finegrainedad"), get_method("promptad")
    assert fgad.fit_scope == promptad.fit_scope == "per_category"
    assert fgad.config_cls().mfsc_levels == "full" and promptad.config_cls().mfsc_levels == "none"
    assert FineGrainedADConfig.for_dataset("synthetic").flags() == "captions=synthetic;epochs=8;hires_factor=2"
    assert PromptADConfig.for_dataset("mvtec").flags() == "captions=mvtec"
    assert FineGrainedADConfig.faithful().flags() == (
        "mode=faithful;candidate_overflow=raise;mlsa_regions=released;seed=111;precision=bf16-mixed;"
        "memory_tap=released;query_bgr_quirk=True;pre_resize=1024"
    )
    method = _method("finegrainedad", tiny_backbone)
    assert method.names == ["block1", "block3", "embedding", "vv_tokens"]  # 6 blocks: (2, 7) scaled
    assert method.tau.item() == tiny_backbone.model.logit_scale.item() < 5  # not exponentiated


@pytest.mark.parametrize("name", ["promptad", "finegrainedad"])
def test_training_lowers_the_loss_and_is_bit_identical_for_a_seed(name, trained_backbone, image_files):
    refs, queries = image_files(2, seed=1, prefix="ref"), image_files(3, seed=2, prefix="query")
    method = _method(name, trained_backbone, epochs=6, seed=5)
    method.set_support([refs], "capsule")
    assert method.loss_history[-1] < method.loss_history[0]
    first = method.predict_step(queries, 0)
    torch.manual_seed(1234)  # whatever ran before, the same seed gives the same fit
    torch.rand(7)
    again = _method(name, trained_backbone, epochs=6, seed=5)
    again.set_support([refs], "capsule")
    assert again.loss_history == method.loss_history
    second = again.predict_step(queries, 0)
    assert torch.equal(first.anomaly_maps, second.anomaly_maps) and torch.equal(first.image_scores, second.image_scores)
    other = _method(name, trained_backbone, epochs=6, seed=6)
    other.set_support([refs], "capsule")
    assert other.loss_history[0] != method.loss_history[0]


def test_inference_is_batch_size_invariant_and_the_vision_branch_is_patchknn(tiny_backbone, image_files):
    refs, queries = image_files(2, seed=3, prefix="ref"), image_files(4, seed=4, prefix="query")
    method = _method("finegrainedad", tiny_backbone, epochs=1)
    method.set_support([refs], "hex_nut")
    whole = method.predict_step(queries, 0)
    parts = [method.predict_step(split_batch(queries, [i]), i) for i in range(4)]
    torch.testing.assert_close(whole.anomaly_maps, torch.cat([p.anomaly_maps for p in parts]), rtol=0, atol=0)
    torch.testing.assert_close(whole.image_scores, torch.cat([p.image_scores for p in parts]), rtol=0, atol=0)
    assert whole.anomaly_maps.shape == (4, 64, 64) and whole.anomaly_maps.dtype == torch.float32
    knn = PatchKNNModel((1, 3), 64, 4.0, "map_max")
    ref_feats = method.features(refs, ["block1", "block3"])
    knn.set_memory({b: torch.cat([f[f"block{b}"] for f in ref_feats]) for b in (1, 3)})
    for bank, knn_bank in zip(method.scorer.memory, knn.memory, strict=True):  # same bank, same distance code (ops)
        assert torch.equal(bank.cpu(), knn_bank)
    assert method.qformer is not None and not any(p.requires_grad for p in method.qformer.parameters())
    none = _method("finegrainedad", tiny_backbone, epochs=1, qformer="none")
    none.set_support([refs], "hex_nut")
    assert none.qformer is None
    pairs, keys = none.candidates(none.learner)
    assert pairs.shape[0] == 4 and torch.equal(keys, pairs[:, 0])  # 2 entities, caption, background


def test_template_records_serve_categories_without_captions(tiny_backbone, image_files):
    method = _method("finegrainedad", tiny_backbone, epochs=1, captions="")
    method.set_support([image_files(1, seed=9, prefix="ref")], "odd_widget")
    record, _ = method.caption_record("odd_widget", [image_files(1, seed=9, prefix="ref")])
    assert record.provenance == "template" and len(record.entities) == 1
    out = method.predict_step(image_files(2, seed=10), 0)
    assert torch.isfinite(out.anomaly_maps).all() and torch.isfinite(out.image_scores).all()


@pytest.mark.slow
def test_end_to_end_on_the_embedded_benchmark(tmp_path, monkeypatch):
    for cls in (FineGrainedADConfig, PromptADConfig):
        monkeypatch.setattr(cls, "for_dataset", classmethod(lambda c, dataset: c(**{**TINY, "epochs": 2})))
    spec = SweepSpec(out=tmp_path, methods=("promptad", "finegrainedad"), categories=("circuit_board",), shots=(1, 2),
                     seeds=(0,), pretrained="fsas-synthetic")  # fmt: skip
    Sweep(spec).run()
    rows = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert set(rows["status"]) == {"ok"} and set(rows["fit_scope"]) == {"per_category"}
    assert set(rows["method"]) == {"promptad", "finegrainedad"} and set(rows["train_seed"]) == {"0"}
    assert rows.groupby("method")["flags"].first().to_dict() == {
        "finegrainedad": "captions=synthetic;epochs=2;hires_factor=1;output_size=64",
        "promptad": "captions=synthetic;epochs=2;hires_factor=1;output_size=64",
    }
    artifacts = tmp_path / "artifacts"
    logged = json.loads(next((artifacts / "finegrainedad").glob("circuit_board-k2-seed0-*.json")).read_text())
    assert logged["prompts"]["entity:microcontroller"]["normal"] == [
        "X X X X A square black microcontroller is soldered near the center of the board."
    ]
    assert logged["train_seed"] == 0 and logged["caption_provenance"] == "hand"
    promptad = json.loads(next((artifacts / "promptad").glob("circuit_board-k1-*.json")).read_text())
    assert list(promptad["prompts"]) == ["image"]
    assert promptad["prompts"]["image"]["normal"] == ["X X X X circuit board."]


@pytest.mark.parametrize(("levels", "n_candidates", "with_regions"), [("image", 1, False), ("image+entity", 4, False)])
def test_intermediate_mfsc_levels(levels, n_candidates, with_regions, tiny_backbone, image_files):
    method = _method("finegrainedad", tiny_backbone, epochs=1, mfsc_levels=levels)
    method.set_support([image_files(1, seed=11, prefix="ref")], "hex_nut")
    pairs, _ = method.candidates(method.learner)
    assert pairs.shape[0] == n_candidates and (method._regions is not None) == with_regions
    assert set(method.losses()) == ({"image", "match", "total"} if levels == "image" else
                                    {"image", "match", "parts", "parts_match", "total"})  # fmt: skip
