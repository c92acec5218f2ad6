"""DictAS training data: reference augmentations, Perlin masks, anomaly pasting, texture sources, pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fsas_bench.backbones import load_backbone
from fsas_bench.data.registry import load_dataset
from fsas_bench.errors import UserError
from fsas_bench.methods.dictas.augment import (
    augment_texture,
    coarse_dropout,
    grid_dropout,
    rotate_reflect,
    strong_reference_augment,
)
from fsas_bench.methods.dictas.synthesis import paste_anomaly, perlin_mask, perlin_noise, texture_source
from fsas_bench.methods.dictas.training_data import SynthesisSettings, SyntheticAnomalyPairs


def test_rotation_reflects_borders_and_matches_quarter_turns():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (3, 40, 40), dtype=np.uint8))
    assert torch.equal(rotate_reflect(image, 0.0), image)
    turned = rotate_reflect(image, 90.0).int()
    assert (turned - torch.rot90(image, 1, dims=(-2, -1)).int()).abs().max() <= 1  # counter-clockwise
    flat = torch.full((3, 30, 50), 200, dtype=torch.uint8)
    assert torch.equal(rotate_reflect(flat, 37.0), flat)  # corners reflected, never zero-filled


def test_grid_and_coarse_dropout_patterns():
    image = torch.full((3, 100, 100), 9, dtype=torch.uint8)
    dropped = grid_dropout(image, 0.3)  # units of 10 px, a 3 × 3 hole at each unit's top-left corner
    assert (dropped[0] == 0).sum() == 100 * 9 and dropped[0, :3, :3].eq(0).all() and dropped[0, 3, 3] == 9
    assert (grid_dropout(torch.ones(1, 1024, 1024), 0.3) == 0).sum() == (10 * 30 + 4) ** 2  # units 102, holes 30
    holes = coarse_dropout(image, np.random.default_rng(1), 8, 5)
    zeros = (holes[0] == 0).sum().item()
    assert 25 <= zeros <= 8 * 25 and (holes == 0).all(0).sum() == zeros and image.eq(9).all()
    out = strong_reference_augment(image, np.random.default_rng(2))
    assert out.shape == image.shape and out.dtype == torch.uint8


def test_perlin_noise_vanishes_on_the_lattice_and_masks_threshold_it():
    noise = perlin_noise(np.random.default_rng(3), (64, 64), (4, 2))
    np.testing.assert_allclose(noise[::16, ::32], 0.0, atol=1e-12)  # gradient noise is zero at lattice points
    assert np.abs(noise).max() <= np.sqrt(2) and noise.std() > 0.1
    masks = [perlin_mask(np.random.default_rng(seed), 64) for seed in range(20)]
    assert all(m.dtype == bool and m.shape == (64, 64) for m in masks)
    assert 0 < np.mean([m.mean() for m in masks]) < 0.5


def test_paste_changes_only_the_masked_pixels():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    texture = texture_source("")(rng, 64)
    for seed in range(6):
        out, mask = paste_anomaly(image, texture, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and mask.shape == (64, 64)
        assert np.array_equal(out[~mask], image[~mask])
    tex = augment_texture(torch.from_numpy(texture).permute(2, 0, 1), np.random.default_rng(5))
    assert tex.shape == (3, 64, 64) and tex.dtype == torch.uint8


def test_texture_folder_source(tmp_path):
    with pytest.raises(UserError, match="no '<class>/\\*.jpg' images"):
        texture_source(str(tmp_path))
    (tmp_path / "banded").mkdir()
    Image.fromarray(np.full((20, 30, 3), 77, dtype=np.uint8)).save(tmp_path / "banded" / "a.jpg")
    texture = texture_source(str(tmp_path))(np.random.default_rng(0), 16)
    assert texture.shape == (16, 16, 3) and abs(int(texture.mean()) - 77) <= 2


def test_training_pairs():
    index = load_dataset("synthetic-aux", None)
    backbone = load_backbone("fsas-tiny", None)
    samples = index.normal_train("wood")[:2]

    def pairs(anomaly: float, reference: float) -> SyntheticAnomalyPairs:
        settings = SynthesisSettings(96, 96, anomaly, reference)
        return SyntheticAnomalyPairs(samples, [1, 1], backbone.preprocess, 224, texture_source(""), settings)

    torch.manual_seed(0)
    clean = pairs(0.0, 0.0)[0]
    assert torch.equal(clean["query"], clean["reference"]) and clean["label"] == 0 and not clean["mask"].any()
    assert clean["query"].shape == (3, 224, 224) and clean["category"] == 1
    items = [pairs(1.0, 1.0)[i % 2] for i in range(6)]
    assert all(item["label"] == int(item["mask"].gt(0).any()) for item in items)
    assert any(item["label"] for item in items) and all(not torch.equal(i["query"], i["reference"]) for i in items)
