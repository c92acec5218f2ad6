"""DictAS training and evaluation through Lightning: losses fall, the two-phase g_V schedule, the official
target trigger, image-score rules, the activation swap, and an end-to-end sweep (spec dictas.md §8, §15)."""

from __future__ import annotations

import dataclasses
import gc
import json
import weakref

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from open_clip.transformer import QuickGELU

from fsas_bench.backbones import FeatureCache, load_backbone
from fsas_bench.backbones.pipeline import EncodeSettings
from fsas_bench.data.registry import load_dataset
from fsas_bench.errors import UserError
from fsas_bench.methods import get_method
from fsas_bench.methods.dictas.config import DictASConfig
from fsas_bench.methods.dictas.lightning_module import DictAS
from fsas_bench.methods.dictas import lightning_module as dictas_module
from fsas_bench.methods.dictas.activation import cache_with_activation, model_activation, swap_activation
from fsas_bench.methods.dictas.validation import target_validation_ap
from fsas_bench.metrics.category import score_maps
from fsas_bench.runner.sweep import Sweep, SweepSpec
from tests.helpers import split_batch

SMALL = dict(batch_size=4, work_size=128, paste_size=128, anomaly_probability=0.5, data_workers=0, blocks=(2, 5))


pytestmark = pytest.mark.usefixtures("single_thread")


def subset(index, categories, per_category):
    """The first ``per_category`` normal training images and the test split of ``categories``."""
    keep = {c: {s.rel_path for s in index.normal_train(c)[:per_category]} for c in categories}
    samples = tuple(s for s in index.samples if s.category in keep and (s.split == "test" or s.rel_path in keep[s.category]))
    return dataclasses.replace(index, categories=tuple(categories), samples=samples)


@pytest.fixture(scope="module")
def auxiliary():
    return subset(load_dataset("synthetic-aux", None), ("wood", "bracket"), 8)


@pytest.fixture(scope="module")
def target():
    return subset(load_dataset("synthetic", None), ("tile",), 4)


def test_registration_and_default_taps(tiny_backbone):
    cls = get_method("dictas")
    assert cls is DictAS and cls.fit_scope == "auxiliary"
    assert [cls.auxiliary_dataset(t) for t in ("synthetic", "visa", "mvtec", "btad")] == ["synthetic-aux", "mvtec", "visa", "visa"]
    assert DictASConfig().taps(24) == (5, 11, 17, 23) and DictASConfig().taps(12) == (2, 5, 8, 11)
    method = cls(DictASConfig(), FeatureCache(tiny_backbone))
    assert method.blocks == (1, 2, 4, 5) and method.names == ["block1", "block2", "block4", "block5"]
    assert all(k.startswith("head.") for k in method.state_dict())


def test_short_training_lowers_the_query_loss_then_freezes_value_generator(tiny_backbone, auxiliary, target, monkeypatch):
    torch.manual_seed(0)
    method = DictAS(DictASConfig(epochs=3, vgen_freeze="epoch:1", **SMALL), FeatureCache(tiny_backbone))
    frozen: dict[str, torch.Tensor] = {}
    value_calls: list[int] = []
    freeze = method.freeze_value_generator

    def freeze_and_record() -> None:
        freeze()
        frozen.update({k: v.clone() for k, v in method.head.Value_Generator.state_dict().items()})

    monkeypatch.setattr(method, "freeze_value_generator", freeze_and_record)
    method.head.Value_Generator.register_forward_hook(lambda *_: value_calls.append(method.global_step))
    method.fit_auxiliary(auxiliary, target, 0)

    history = method.history
    assert [h["phase"] for h in history] == [1.0, 2.0, 2.0]
    assert history[-1]["loss_query"] < history[0]["loss_query"]
    assert all(h["loss_cqc"] >= 0 for h in history)
    # Phase 2: g_V frozen and untouched; Adam state fresh at the switch and only for the trained parameters.
    assert not any(p.requires_grad for p in method.head.Value_Generator.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in method.head.Value_Generator.state_dict().items())
    state = method.trainer.optimizers[0].state
    value_params = set(method.head.Value_Generator.parameters())
    assert not value_params & set(state) and len(state) == sum(1 for p in method.head.parameters() if p.requires_grad)
    assert {int(s["step"]) for s in state.values()} == {8}  # 2 epochs × 4 steps after the switch
    # Queries pass through g_V in phase 2: 2 layers more than the 2 layers × 2 scales of value lookups.
    calls_per_step = pd.Series(value_calls).value_counts().sort_index()
    assert set(calls_per_step[calls_per_step.index < 4]) == {4} and set(calls_per_step[calls_per_step.index >= 4]) == {6}


def test_official_trigger_restores_the_best_weights_and_flags_leakage(tiny_backbone, auxiliary, target, monkeypatch):
    config = DictASConfig(epochs=3, vgen_freeze="val_trigger", **SMALL)
    assert config.target_leakage and "vgen_freeze=val_trigger" in config.flags()
    assert config.flags().endswith("target_leakage=True")
    torch.manual_seed(0)
    method = DictAS(config, FeatureCache(tiny_backbone))
    ap = target_validation_ap(method.eval(), target, score_maps)
    assert 0 < ap < 1
    scores = iter([0.5, 0.6, 0.4])
    snapshots = []

    def fake_ap(m, t, score):
        assert t is target and score is score_maps
        snapshots.append({k: v.clone() for k, v in m.head.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(dictas_module, "target_validation_ap", fake_ap)
    restored = []

    def record_restore() -> None:
        restored.append({k: v.clone() for k, v in method.head.state_dict().items()})
        method.phase2 = True

    monkeypatch.setattr(method, "freeze_value_generator", record_restore)
    with pytest.raises(RuntimeError, match="map_scorer"):
        method.fit_auxiliary(auxiliary, target, 0)
    method.map_scorer = score_maps
    method.fit_auxiliary(auxiliary, target, 0)
    assert len(snapshots) == 3 and len(restored) == 1  # epoch 3 is worse than epoch 2: restore epoch 2, freeze
    assert all(torch.equal(restored[0][k], snapshots[1][k]) for k in restored[0])
    assert [h["val_pixel_ap"] for h in method.history] == [0.5, 0.6, 0.4]


def test_config_presets_and_validation():
    faithful = DictASConfig.faithful("MVTEC")
    assert faithful.mode == "faithful" and faithful.official_dataset == "mvtec" and faithful.transductive
    assert faithful.activation == "gelu" and faithful.target_leakage
    embedded = DictASConfig.for_dataset("synthetic")
    assert embedded.freeze_epoch == 1 and "epochs=2" in embedded.flags() and DictASConfig.for_dataset("mvtec") == DictASConfig()
    assert DictASConfig(image_score="fixed_fusion:0.25").fusion_alpha == 0.25
    for bad in (dict(vgen_freeze="epoch:0"), dict(image_score="fixed_fusion:2"), dict(scales=(2,)),
                dict(activation="relu"), dict(official_overrides=True, official_dataset="nope")):  # fmt: skip
        with pytest.raises(UserError):
            DictASConfig(**bad)


def test_image_scores_and_official_overrides(tiny_backbone, image_files):
    batch = image_files(5, seed=8)
    cache = FeatureCache(tiny_backbone)
    config = DictASConfig(output_size=64, image_score="fixed_fusion:0.25")
    method = DictAS(config, cache).eval()
    method.set_support([split_batch(batch, [0, 1])], "screw")
    maps, p_map, p_text = method.score(split_batch(batch, [2, 3, 4]))
    out = method.predict_step(split_batch(batch, [2, 3, 4]), 0)
    torch.testing.assert_close(out.image_scores, 0.25 * p_text + 0.75 * p_map)
    singles = [method.predict_step(split_batch(batch, [i]), i) for i in (2, 3, 4)]  # batch-size invariance
    torch.testing.assert_close(out.anomaly_maps, torch.cat([o.anomaly_maps for o in singles]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.image_scores, torch.cat([o.image_scores for o in singles]), atol=1e-5, rtol=0)
    torch.testing.assert_close(p_map, maps.flatten(1).amax(1))

    overrides = DictAS(DictASConfig.faithful("mvtec", output_size=64), cache).eval()
    overrides.set_support([split_batch(batch, [0, 1])], "screw")
    assert overrides.settings.blocks == (1, 2) and overrides.settings.alpha == 0.2
    assert overrides.dictionary.references[1].shape[0] == 2 * 10  # each reference + 9 rotated copies
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    loader = torch.utils.data.DataLoader([split_batch(batch, [i]) | {"index": i} for i in range(2, 5)], batch_size=None)
    overrides.set_queries([split_batch(batch, [i]) for i in range(2, 5)])
    scores = torch.cat([o.image_scores for o in trainer.predict(overrides, dataloaders=loader)])
    raw = [overrides.score(split_batch(batch, [i]))[1:] for i in range(2, 5)]
    p_map, p_text = (torch.cat(v) for v in zip(*raw))
    mm = lambda x: (x - x.min()) / (x.max() - x.min() + 1e-6)  # noqa: E731
    torch.testing.assert_close(scores, 0.2 * mm(p_text) + 0.8 * mm(p_map))
    bottle = DictAS(DictASConfig.faithful("BTAD", output_size=64), cache)
    bottle.set_support([split_batch(batch, [0])], "02")
    assert bottle.settings.scales == (1,) and bottle.settings.alpha == 0 and not bottle.settings.rotate_references


def released_transductive_scores(p_map: np.ndarray, p_text: np.ndarray, dataset: str, category: str) -> np.ndarray:
    """Step-by-step reference of the released per-category image score (written from the released metric code):
    both the map maxima and the text probabilities are min-max normalised over the category's whole test set
    (with 1e-6 added to the range), then mixed with α = 0.2 on mvtec/visa, else α = 0 for the categories
    bracket_brown, metal1, metal2 and wood (BTAD's three in the released metadata), else the default 0.5."""
    if dataset in ("mvtec", "visa"):
        alpha = 0.2
    elif dataset == "BTAD" or category in ("bracket_brown", "metal1", "metal2", "wood"):
        alpha = 0.0
    else:
        alpha = 0.5
    map_part = (p_map - p_map.min()) / (p_map.max() - p_map.min() + 1e-6)
    text_part = (p_text - p_text.min()) / (p_text.max() - p_text.min() + 1e-6)
    return alpha * text_part + (1 - alpha) * map_part


@pytest.mark.parametrize(("official", "category"), [("mvtec", "tile"), ("other", "wood"), ("other", "tile")])
def test_transductive_scores_through_a_batched_predict_loop(official, category, tiny_backbone, image_files):
    """The runner's path: a batch-sampled predict loader plus the same queries handed over by set_queries; the
    first pass must not consume the live loop (it used to: Trainer.predict returned no batch)."""
    batch = image_files(7, seed=12)
    method = DictAS(DictASConfig.faithful(official, output_size=64), FeatureCache(tiny_backbone)).eval()
    method.set_support([split_batch(batch, [0, 1])], category)
    queries = [{"path": batch["path"][i], "sha": batch["sha"][i]} for i in range(2, 7)]
    loader = lambda: torch.utils.data.DataLoader(queries, batch_size=2)  # noqa: E731
    method.set_queries(loader())
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    outputs = trainer.predict(method, dataloaders=loader())
    assert [len(o.image_scores) for o in outputs] == [2, 2, 1]
    maps = torch.cat([o.anomaly_maps for o in outputs])
    p_text = torch.cat([method.score(b)[2] for b in loader()])
    expected = released_transductive_scores(maps.flatten(1).amax(1).numpy(), p_text.numpy(), official, category)
    scores = torch.cat([o.image_scores for o in outputs]).numpy()
    assert np.abs(scores - expected).max() < 1e-6
    method.set_support([split_batch(batch, [0])], category)  # a new category forgets the old query set
    with pytest.raises(RuntimeError, match="set_queries"):
        trainer.predict(method, dataloaders=loader())


def test_activation_swap_leaves_the_shared_backbone_untouched(tiny_backbone, image_files):
    cache = FeatureCache(tiny_backbone)
    assert model_activation(tiny_backbone.model) == "gelu"
    assert cache_with_activation(cache, "native") is cache and cache_with_activation(cache, "gelu") is cache
    swapped_cache = cache_with_activation(cache, "quickgelu")
    assert swapped_cache is cache_with_activation(cache, "quickgelu")  # one swapped copy per shared cache
    swapped = swapped_cache.backbone
    assert model_activation(swapped.model) == "quickgelu" and model_activation(tiny_backbone.model) == "gelu"
    assert any(isinstance(m, QuickGELU) for m in swapped.model.transformer.modules())  # the text tower too
    assert swapped.identity != tiny_backbone.identity
    images = torch.randn(2, 3, 224, 224)
    before = tiny_backbone.encode(images, ["block5"])["block5"]
    assert not torch.allclose(swapped.encode(images, ["block5"])["block5"], before)
    back = swap_activation(swapped.model, "gelu")
    tokens = back.visual.forward_intermediates(images, indices=[5], output_fmt="NLC", normalize_intermediates=False)
    torch.testing.assert_close(tokens["image_intermediates"][0], before)
    method = DictAS(DictASConfig(activation="quickgelu"), cache)
    assert method.cache is swapped_cache


def test_swapped_cache_keeps_precision_budget_and_settings_and_dies_with_the_shared_cache(tmp_path):
    backbone = load_backbone("fsas-tiny", None, precision="bf16")
    settings = EncodeSettings(encode_batch=3, workers=0)
    cache = FeatureCache(backbone, memory_budget=12_345, settings=settings, spill_root=tmp_path / ".spill")
    swapped = cache_with_activation(cache, "quickgelu")
    assert swapped.backbone.precision == "bf16" and json.loads(swapped.backbone.identity)[-1] == "precision=bf16"
    assert swapped.backbone.identity != backbone.identity
    assert swapped.memory_budget == 12_345 and swapped.settings == settings
    assert swapped.spill_root == tmp_path / ".spill" and swapped.memory_budget == 12_345
    swapped.enter_category("tile")
    swapped.features(["a"], ["block5"], lambda i: torch.zeros(3, 224, 224))
    cache.clear_memory()  # as the runner does after every task: the swapped cache is emptied too
    assert swapped.category is None and not swapped._memory
    images = torch.randn(1, 3, 224, 224)  # the swapped forwards run in bf16: they differ from an fp32 twin's
    fp32 = cache_with_activation(FeatureCache(load_backbone("fsas-tiny", None)), "quickgelu").backbone
    tokens = [b.encode(images, ["block5"])["block5"] for b in (swapped.backbone, fp32)]
    assert not torch.equal(*tokens)
    alive = weakref.ref(cache), weakref.ref(swapped), weakref.ref(swapped.backbone)
    del cache, swapped, backbone
    gc.collect()
    assert [ref() for ref in alive] == [None, None, None], "the swapped copy must not outlive the shared cache"


@pytest.mark.slow
def test_end_to_end_sweep_trains_once_and_writes_rows(tmp_path, monkeypatch):
    tiny = DictASConfig(epochs=1, vgen_freeze="epoch:1", batch_size=24, work_size=128, paste_size=128,
                        data_workers=0, blocks=(2, 5), scales=(1,))  # fmt: skip
    monkeypatch.setattr(DictASConfig, "for_dataset", classmethod(lambda cls, dataset: tiny))
    spec = SweepSpec(out=tmp_path, methods=("dictas",), categories=("tile",), shots=(1, 2), seeds=(0,))
    Sweep(spec).run()
    rows = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert set(rows["method"]) == {"dictas"} and set(rows["train_dataset"]) == {"synthetic-aux"}
    assert rows["checkpoint_sha"].nunique() == 1 and len(list((tmp_path / "checkpoints").rglob("*.safetensors"))) == 1
    assert set(rows["flags"]) == {tiny.flags()} and "blocks=(2, 5)" in tiny.flags()
    assert set(rows["shot"]) == {"1", "2"} and (rows["status"] == "ok").all()
