"""fsas-tiny-clip: the shipped weights, the pretraining pairs and captions, training, resuming, and zero-shot use."""

from __future__ import annotations


import lightning as L
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from fsas_bench.backbones import TINY_ARCH, load_backbone
from fsas_bench.backbones import registry
from fsas_bench.cli import main
from fsas_bench.data.formats.images import read_image_rgb
from fsas_bench.data.registry import load_dataset
from fsas_bench.data.synthetic import CATEGORIES, EXTRA_CATEGORIES, SYNTHETIC_DATASETS
from fsas_bench.errors import UserError
from fsas_bench.pretrain import (
    PRETRAIN_CATEGORIES,
    PairSet,
    PretrainConfig,
    caption,
    checkpoint_dir,
    pair_key,
    pretrain,
    render_pairs,
)
from fsas_bench.pretrain.captions import NORMAL_TAILS, NORMAL_WORDS
from fsas_bench.pretrain.data import CaptionedPairs, TwinSampler
from fsas_bench.pretrain.module import ClipPretrainer, build_tokenizer
from fsas_bench.pretrain.quality import classify, image_embeddings

ANOMALOUS_WORDS = ("defect", "damage", "flaw", "scratch", "crack", "stain", "spot", "blotch", "discolour",
                   "missing", "no ", "displaced", "misplaced", "shifted", "fracture", "fissure", "faulty",
                   "incomplete", "misassembled", "scrape")  # fmt: skip


@pytest.fixture(scope="module")
def pairs() -> PairSet:
    """One normal/defective twin of every pretraining category."""
    return render_pairs(0, 1)


@pytest.fixture(scope="module")
def shipped():
    return load_backbone(TINY_ARCH, "fsas-synthetic")


def test_shipped_weights_are_pinned_small_fp16_and_labelled(shipped, tiny_backbone):
    path, sha = registry.shipped_weights(TINY_ARCH, "fsas-synthetic")
    assert path.stat().st_size <= 10_000_000
    assert {t.dtype for t in load_file(path).values()} == {torch.float16}
    assert shipped.pretrained == "fsas-synthetic" and shipped.weights_id == f"file-sha256:{sha}"
    assert shipped.identity != tiny_backbone.identity
    trained, random = shipped.model.visual.conv1.weight, tiny_backbone.model.visual.conv1.weight
    assert trained.dtype == torch.float32 and not torch.equal(trained, random)


def test_corrupt_shipped_weights_are_rejected(tmp_path, monkeypatch):
    path, _ = registry.shipped_weights(TINY_ARCH, "fsas-synthetic")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / path.name).write_bytes(bytes(data))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(UserError, match="corrupt or missing") as info:
        load_backbone(TINY_ARCH, "fsas-synthetic")
    assert "\n" not in str(info.value)


def test_pairs_are_deterministic_twins_over_the_whole_vocabulary(pairs):
    first, again, other = pairs, render_pairs(0, 1), render_pairs(1, 1)
    assert first.images.shape == (2 * len(PRETRAIN_CATEGORIES), 224, 224, 3) and first.images.dtype == np.uint8
    assert np.array_equal(first.images, again.images) and first.attributes == again.attributes
    assert not np.array_equal(first.images, other.images)
    assert set(EXTRA_CATEGORIES) < {a["category"] for a in first.attributes}
    for normal, damaged in zip(first.attributes[::2], first.attributes[1::2]):
        assert normal["category"] == damaged["category"] and normal["defect"] == "good" != damaged["defect"]


def test_pairs_are_disjoint_from_the_benchmark_images(pairs):
    assert pair_key(0, "tile", 0)[0] not in {spec.seed for spec in SYNTHETIC_DATASETS.values()}
    for name in SYNTHETIC_DATASETS:
        index = load_dataset(name, None)
        benchmark = {
            np.asarray(Image.fromarray(read_image_rgb(s.image_path)).resize((224, 224), Image.Resampling.BICUBIC)).tobytes()
            for s in index.samples
        }
        assert not any(image.tobytes() in benchmark for image in pairs.images)


def test_captions_say_whether_and_where_an_image_is_defective(pairs):
    for attributes in pairs.attributes:
        for seed in range(20):
            text = caption(attributes, np.random.default_rng(seed))
            assert attributes["noun"] in text
            for normal_phrase in (*NORMAL_TAILS, *NORMAL_WORDS):
                text = text.replace(normal_phrase, "")
            assert any(w in text for w in ANOMALOUS_WORDS) == (attributes["defect"] != "good"), text
    damaged = {**pairs.attributes[1], "defect_location": "top left"}
    located = [caption(damaged, np.random.default_rng(s), mirrored=m) for s in range(60) for m in (False, True)]
    assert any("top left" in t for t in located[::2]) and not any("top left" in t for t in located[1::2])
    assert any("top right" in t for t in located[1::2])


def test_views_are_a_function_of_seed_epoch_and_image(pairs):
    dataset = CaptionedPairs(pairs, 0, (0.5,) * 3, (0.25,) * 3, build_tokenizer())
    n = len(dataset)
    first, again, next_epoch = dataset.view(3), dataset.view(3), dataset.view(n + 3)
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert not (torch.equal(first[0], next_epoch[0]) and first[1] == next_epoch[1])
    sampler = TwinSampler(n, 0)
    order = list(sampler)
    assert sorted(order) == list(range(n)) and all(a // 2 == b // 2 for a, b in zip(order[::2], order[1::2]))
    sampler.set_epoch(2)
    assert sorted(list(sampler)) == list(range(2 * n, 3 * n))


@pytest.mark.slow
def test_a_few_steps_on_a_handful_of_pairs_lower_the_loss(pairs):
    dataset = CaptionedPairs(pairs, 0, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, build_tokenizer(),
                             augment=False)  # fmt: skip
    images, tokens = map(torch.stack, zip(*(dataset[i] for i in range(0, 16, 2))))  # normal images of 8 categories
    L.seed_everything(0, verbose=False)
    module = ClipPretrainer(lr=1e-3, weight_decay=0.1, warmup_steps=1)
    with torch.no_grad():
        before = float(module.batch_loss(images, tokens))
    trainer = L.Trainer(accelerator="cpu", max_steps=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(images, tokens), batch_size=8))
    with torch.no_grad():
        after = float(module.batch_loss(images, tokens))
    assert after < 0.7 * before, f"loss {before:.3f} -> {after:.3f}"


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    config = dict(seed=0, epochs=2, items_per_category=1, batch_size=8, warmup_steps=1, workers=1)
    straight = load_file(pretrain(PretrainConfig(out=tmp_path / "straight.safetensors", **config), progress=False))

    def crash_in_second_epoch(self: ClipPretrainer) -> None:
        if self.current_epoch == 1:
            raise RuntimeError("simulated crash")

    out = tmp_path / "resumed.safetensors"
    with monkeypatch.context() as patch:
        patch.setattr(ClipPretrainer, "on_train_epoch_end", crash_in_second_epoch, raising=False)
        with pytest.raises(RuntimeError, match="simulated crash"):
            pretrain(PretrainConfig(out=out, **config), progress=False)
    assert (checkpoint_dir(out) / "last.ckpt").is_file() and not out.exists()
    resumed = load_file(pretrain(PretrainConfig(out=out, resume=True, **config), progress=False))
    assert straight.keys() == resumed.keys() and all(torch.equal(resumed[k], straight[k]) for k in straight)


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--resume"], "no checkpoint to resume"), (["--epochs", "0"], "--epochs 0 is invalid")],
)
def test_pretrain_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    assert main(["pretrain-tiny-clip", "--out", str(tmp_path / "w.safetensors"), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_shipped_weights_classify_embedded_images_zero_shot(shipped):
    index = load_dataset("synthetic", None)
    samples = [s for category in index.categories for s in index.split(category, "test")[::5]]
    labels = torch.tensor([index.categories.index(s.category) for s in samples])
    predicted = classify(shipped, image_embeddings(shipped, samples), [CATEGORIES[c].noun for c in index.categories])
    accuracy = float((predicted == labels).float().mean())
    assert len(samples) >= 20 and accuracy >= 0.8, f"zero-shot top-1 {accuracy:.2f} (chance 0.2)"
