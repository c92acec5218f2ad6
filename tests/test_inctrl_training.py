"""InCTRL training: balanced episodes, a short run lowering the loss, and the method end to end in a sweep."""

from __future__ import annotations

import dataclasses

import lightning as L
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from fsas_bench.backbones import FeatureCache
from fsas_bench.backbones.pipeline import EncodeSettings
from fsas_bench.data.registry import load_dataset
from fsas_bench.errors import UserError
from fsas_bench.methods import get_method
from fsas_bench.methods.inctrl.config import InCTRLConfig
from fsas_bench.methods.inctrl.episodes import BalancedEpisodes
from fsas_bench.runner.sweep import Sweep, SweepSpec


@pytest.fixture(scope="module")
def auxiliary():
    return load_dataset("synthetic-aux", None)


@pytest.fixture(scope="module")
def feature_dir(tmp_path_factory):
    """A feature disk cache shared by this module's tests (the auxiliary images are encoded once)."""
    return tmp_path_factory.mktemp("inctrl-features")


def pool_of(index):
    return [s for c in index.categories for split in ("train", "test") for s in index.split(c, split)]


def test_balanced_episodes_draw_prompts_from_normals_of_the_query_category(auxiliary):
    pool = pool_of(auxiliary)
    by_path = {str(s.image_path): s for s in pool}
    self_prompts = 0
    for exclude_self in (False, True):
        episodes = BalancedEpisodes(pool, 3, 8, 20, exclude_self, torch.Generator().manual_seed(0))
        batches = list(episodes)
        assert len(batches) == len(episodes) == 20
        for batch in batches:
            queries = [by_path[p] for p in batch["query"]["path"]]
            assert [q.label for q in queries] == [0] * 4 + [1] * 4 and batch["label"].tolist() == [0.0] * 4 + [1.0] * 4
            assert batch["category"] == [q.category for q in queries]
            for i, query in enumerate(queries):
                prompts = [by_path[p] for p in batch["prompts"]["path"][3 * i : 3 * i + 3]]
                assert len(set(p.image_path for p in prompts)) == 3
                assert all(p.label == 0 and p.category == query.category for p in prompts)
                if query.image_path in {p.image_path for p in prompts}:
                    assert not exclude_self
                    self_prompts += 1
    assert self_prompts > 0  # as released, a normal query may be its own prompt
    with pytest.raises(UserError, match="normal images per auxiliary category"):
        BalancedEpisodes(pool, 40, 8, 1, False, torch.Generator())


def test_drawn_samples_are_exactly_the_images_of_the_training_batches(auxiliary):
    def twin() -> BalancedEpisodes:
        return BalancedEpisodes(pool_of(auxiliary), 2, 8, 3, False, torch.Generator().manual_seed(5))

    episodes, read = twin(), []
    for _ in range(2):  # two epochs: the permutations carry over
        for batch in episodes:
            read += batch["query"]["path"] + batch["prompts"]["path"]
    assert [str(s.image_path) for s in twin().drawn_samples(2)] == list(dict.fromkeys(read))
    assert len(set(read)) < len(read)  # some images are drawn twice and encoded once


def test_auxiliary_training_encodes_its_images_ahead_and_then_only_hits(tiny_backbone, auxiliary):
    L.seed_everything(0, verbose=False)
    cache = FeatureCache(tiny_backbone, settings=EncodeSettings(encode_batch=4, workers=0))
    method = get_method("inctrl")(InCTRLConfig(epochs=1, steps_per_epoch=2, batch_size=8), cache)
    updates = []
    method.report_phase, method.phase = updates.append, "training"
    method.fit_auxiliary(auxiliary, auxiliary, shot=1)
    encoding = [u for u in updates if u.phase == "training, encoding ahead"]  # its own phase: its own ETA
    total = encoding[-1].total
    assert [u.completed for u in encoding] == list(range(1, total + 1))
    assert encoding[-1].detail == f"{total}/{total} images"
    assert cache.stats.forwards == cache.stats.misses == total  # every image encoded ahead, in batches, once
    assert cache.stats.hits == 2 * 8 * 2  # the two steps' 8 queries and 8 prompts all hit


@pytest.mark.slow
def test_short_training_lowers_the_loss_and_leaves_the_patch_branch_untouched(tiny_backbone, auxiliary, feature_dir):
    kept = ("bracket", "wood")  # two of the four categories keep the test short
    auxiliary = dataclasses.replace(
        auxiliary, categories=kept, samples=tuple(s for s in auxiliary.samples if s.category in kept)
    )
    L.seed_everything(0, verbose=False)
    method = get_method("inctrl")(InCTRLConfig(epochs=1, steps_per_epoch=20), FeatureCache(tiny_backbone, feature_dir))
    fixed = list(BalancedEpisodes(pool_of(auxiliary), 2, 16, 3, False, torch.Generator().manual_seed(1)))

    def evaluate() -> tuple[float, list[torch.Tensor]]:
        method.eval()
        with torch.no_grad():
            loss = torch.stack([method.episode_loss(b) for b in fixed]).mean().item()
            maps = [method.model(method.query_inputs(b["query"])).residual_map for b in fixed]
        return loss, maps

    method.set_support([fixed[0]["prompts"]], "bracket")
    before, maps_before = evaluate()
    method.fit_auxiliary(auxiliary, auxiliary, shot=2)
    after, maps_after = evaluate()
    assert after < before - 0.01
    assert all(torch.equal(a, b) for a, b in zip(maps_before, maps_after, strict=True))


@pytest.mark.slow
def test_end_to_end_sweep_trains_one_model_per_shot(tmp_path, feature_dir, monkeypatch):
    monkeypatch.setattr(InCTRLConfig, "for_dataset", classmethod(lambda cls, dataset: cls(epochs=1, steps_per_epoch=2)))
    spec = SweepSpec(out=tmp_path, methods=("inctrl",), categories=("tile",), shots=(1, 2), seeds=(0,),
                     feature_cache_dir=feature_dir)  # fmt: skip
    Sweep(spec).run()
    rows = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert set(rows["train_dataset"]) == {"synthetic-aux"} and set(rows["fit_scope"]) == {"auxiliary"}
    assert set(rows["flags"]) == {"epochs=1;steps_per_epoch=2"}
    assert set(rows["status"]) == {"ok"} and rows["metric"].nunique() == 7
    assert rows.groupby("shot")["checkpoint_sha"].nunique().eq(1).all() and rows["checkpoint_sha"].nunique() == 2
    checkpoints = sorted((tmp_path / "checkpoints").rglob("*.safetensors"))
    assert [p.name.rsplit("_", 1)[1] for p in checkpoints] == ["k1.safetensors", "k2.safetensors"]
    state = load_file(checkpoints[0])
    assert all(k.startswith("model.") for k in state)  # prompts and text prototypes are not checkpointed


@pytest.mark.parametrize("head_dtype", ["float64", "float32"])
def test_training_does_not_amplify_rounding_differences_of_the_features(
    tiny_backbone, auxiliary, feature_dir, head_dtype
):
    """Features perturbed at float32 rounding level (what another CPU's kernels or thread count give) must move
    the trained scores by a comparable amount, not chaotically. float32 heads (as released) fail this: the
    bias in front of ReLU → BatchNorm has an exactly-zero gradient for units active on the whole batch, and
    Adam turns its float32 rounding noise into ±lr steps of random sign."""
    kept = ("bracket", "wood")
    auxiliary = dataclasses.replace(
        auxiliary, categories=kept, samples=tuple(s for s in auxiliary.samples if s.category in kept)
    )
    config = InCTRLConfig(epochs=1, steps_per_epoch=8, head_dtype=head_dtype)
    fixed = list(BalancedEpisodes(pool_of(auxiliary), 1, 16, 2, False, torch.Generator().manual_seed(1)))

    def trained_scores(relative_noise: float) -> torch.Tensor:
        L.seed_everything(0, verbose=False)
        method = get_method("inctrl")(config, FeatureCache(tiny_backbone, feature_dir))
        features = method.features
        noise = torch.Generator().manual_seed(2)

        def perturbed(batch, names, prefetch=True, **variant):
            return [{k: v * (1 + relative_noise * torch.randn(v.shape, generator=noise)) for k, v in f.items()}
                    for f in features(batch, names, prefetch, **variant)]  # fmt: skip

        method.features = perturbed
        method.fit_auxiliary(auxiliary, auxiliary, shot=1)
        method.features = features
        method.set_support([fixed[0]["prompts"]], "bracket")
        method.eval()
        with torch.no_grad():
            return torch.cat([method.model(method.query_inputs(b["query"])).score for b in fixed]).double()

    move = (trained_scores(0.0) - trained_scores(1e-7)).abs().max().item()
    if head_dtype == "float64":
        assert move < 1e-5
    else:
        assert move > 1e-4  # the released precision amplifies the same perturbation by orders of magnitude


def test_presets_embedded_schedule_and_released_recipe():
    embedded = InCTRLConfig.for_dataset("synthetic")
    assert (embedded.epochs, embedded.steps_per_epoch, embedded.batch_size, embedded.lr) == (2, 15, 32, 1e-3)
    assert embedded.head_dtype == "float64" and embedded.flags() == "epochs=2;steps_per_epoch=15;batch_size=32"
    released = InCTRLConfig.for_dataset("mvtec")
    assert (released.epochs, released.steps_per_epoch, released.batch_size, released.lr) == (10, 100, 16, 1e-3)
    assert released.weight_decay == 0.01 and released.flags() == ""
