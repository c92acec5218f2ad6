"""The embedded synthetic datasets: layout, exact masks, captions, determinism and the atomic cache."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsas_bench.data.synthetic import (
    AREA_RANGE,
    CATEGORIES,
    EXTRA_CATEGORIES,
    GENERATOR_VERSION,
    SYNTHETIC_DATASETS,
    DatasetSpec,
    ensure_synthetic,
    image_rng,
    procedural_texture,
    render_sample,
    tree_digest,
    write_dataset,
)
from fsas_bench.data.registry import cache_dir
from fsas_bench.data.synthetic import generator
from fsas_bench.errors import UserError

# Change deliberately (with GENERATOR_VERSION) whenever the generated images are meant to change.
PINNED_DIGESTS = {
    "synthetic": "659a3ab1bc56fcfffc3364734e195205bfeeb8626a0072a8896acf2aa97ca801",
    "synthetic-aux": "e777b276cf4e906b67ed8120b2ff3b2290fd317668cc42fa79c20bc71932de3d",
}
LOCATIONS = {"top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"}


@pytest.fixture(scope="module")
def cache() -> Path:
    """Both datasets, generated through the public entry point into the session's hermetic cache (where
    the CLI tests find them too, so they are generated once per test session)."""
    path = cache_dir() / "datasets"
    for name in SYNTHETIC_DATASETS:
        ensure_synthetic(name, path)
    return path


def _root(cache: Path, name: str) -> Path:
    return cache / f"{name}-v{GENERATOR_VERSION}"


def _records(root: Path) -> list[dict]:
    return json.loads((root / "attributes.json").read_text())["images"]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.mark.parametrize("name", list(SYNTHETIC_DATASETS))
def test_tree_matches_pinned_digest(cache: Path, name: str) -> None:
    assert tree_digest(_root(cache, name)) == PINNED_DIGESTS[name]


def test_dataset_specs() -> None:
    evaluation, auxiliary = SYNTHETIC_DATASETS["synthetic"], SYNTHETIC_DATASETS["synthetic-aux"]
    assert not set(evaluation.categories) & set(auxiliary.categories)
    assert not set(EXTRA_CATEGORIES) & (set(evaluation.categories) | set(auxiliary.categories))
    for spec in (evaluation, auxiliary):
        assert len(spec.categories) >= 4
        assert {CATEGORIES[c].kind for c in spec.categories} == {"texture", "object"}
        assert all(max(size) <= 256 for size in spec.image_sizes.values())
    assert (evaluation.train_good, evaluation.test_good, evaluation.per_defect) == (16, 8, 4)
    assert (auxiliary.train_good, auxiliary.test_good, auxiliary.per_defect) == (24, 8, 4)
    assert any(h != w for h, w in evaluation.image_sizes.values())
    assert any(CATEGORIES[c].grayscale for c in evaluation.categories)


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_category_defects_fit_the_category(category: str) -> None:
    spec = CATEGORIES[category]
    assert len(spec.defects) >= 3
    if spec.kind == "texture":
        assert not {"missing_part", "displaced_part"} & set(spec.defects)
    if spec.grayscale:
        assert "colour_shift" not in spec.defects


@pytest.mark.parametrize("name", list(SYNTHETIC_DATASETS))
def test_layout_matches_spec_and_attributes(cache: Path, name: str) -> None:
    spec, root = SYNTHETIC_DATASETS[name], _root(cache, name)
    records = _records(root)
    expected = {
        f"{category}/{split}/{defect}/{index:03d}.png"
        for category in spec.categories
        for split, defect, count in spec.groups(category)
        for index in range(count)
    }
    assert len(records) == len(expected) and {r["rel_path"] for r in records} == expected
    masks = {r["mask_path"] for r in records if r["label"]}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.png")}
    assert on_disk == expected | masks
    assert {p.name for p in root.iterdir() if p.is_file()} == {"attributes.json", "meta.json", generator.MARKER}
    for record in records:
        category = CATEGORIES[record["category"]]
        with Image.open(root / record["rel_path"]) as image:
            assert image.mode == ("L" if category.grayscale else "RGB")
            assert image.size == (category.width, category.height)


@pytest.mark.parametrize("name", list(SYNTHETIC_DATASETS))
def test_masks_are_exactly_the_changed_pixels(cache: Path, name: str) -> None:
    """Each defective image is re-rendered without its defect (same generator); the mask on disk must be
    exactly where the two differ, and the caption attributes must agree with the mask."""
    spec, root = SYNTHETIC_DATASETS[name], _root(cache, name)
    for record in _records(root):
        if not record["label"]:
            assert record["mask_path"] is None and record["defect"] == "good"
            assert record["defect_location"] is None and record["defect_bbox"] is None
            continue
        image = _pixels(root / record["rel_path"])
        mask = _pixels(root / record["mask_path"])
        assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
        assert set(np.unique(mask)) == {0, 255}
        rng = image_rng(spec, record["category"], record["split"], record["defect"], int(record["rel_path"][-7:-4]))
        normal = render_sample(record["category"], rng, None).image
        changed = (image != normal).reshape(*mask.shape, -1).any(axis=2)
        np.testing.assert_array_equal(mask > 0, changed)
        ys, xs = np.nonzero(mask)
        assert record["defect_bbox"] == [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        assert record["defect_area"] == pytest.approx((mask > 0).mean(), abs=1e-6)
        assert AREA_RANGE[0] <= record["defect_area"] <= AREA_RANGE[1]
        assert record["defect_location"] in LOCATIONS
        if record["defect"] in ("missing_part", "displaced_part"):
            assert record["defect_part"]
        if record["defect"] in ("spot", "colour_shift"):
            assert record["defect_colour"]


@pytest.mark.parametrize("name", list(SYNTHETIC_DATASETS))
def test_meta_json_indexes_the_same_images(cache: Path, name: str) -> None:
    root = _root(cache, name)
    meta = json.loads((root / "meta.json").read_text())
    entries = [entry for split in ("train", "test") for items in meta[split].values() for entry in items]
    assert sorted((e["img_path"], e["mask_path"], e["specie_name"], e["anomaly"]) for e in entries) == sorted(
        (r["rel_path"], r["mask_path"] or "", r["defect"], r["label"]) for r in _records(root)
    )


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_render_sample_in_memory(category: str) -> None:
    spec = CATEGORIES[category]
    shape = (spec.height, spec.width) if spec.grayscale else (spec.height, spec.width, 3)
    for seed, defect in enumerate((None, *spec.defects)):
        sample = render_sample(category, np.random.default_rng([99, seed]), defect)
        assert sample.image.dtype == np.uint8 and sample.image.shape == shape
        assert sample.mask.dtype == bool and sample.mask.shape == shape[:2]
        assert sample.mask.any() == (defect is not None)
        assert sample.attributes["defect"] == (defect or "good")
        assert sample.attributes["parts"]
    first, again = (render_sample(category, np.random.default_rng([99, 1]), spec.defects[0]) for _ in range(2))
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.mask, again.mask)


def test_normal_images_vary() -> None:
    """Pose, lighting and noise differ between normal images, so raw differences are no anomaly signal."""
    first, second = (render_sample("hex_nut", np.random.default_rng(seed), None).image for seed in (0, 1))
    assert (first != second).mean() > 0.5


def test_render_sample_rejects_a_defect_the_category_lacks() -> None:
    with pytest.raises(ValueError, match="no defect"):
        render_sample("fabric", np.random.default_rng(0), "missing_part")


def test_procedural_texture() -> None:
    texture = procedural_texture(np.random.default_rng(3), 40, 64)
    assert texture.dtype == np.uint8 and texture.shape == (40, 64, 3)
    np.testing.assert_array_equal(texture, procedural_texture(np.random.default_rng(3), 40, 64))
    assert texture.std() > 1.0
    assert not np.array_equal(texture, procedural_texture(np.random.default_rng(4), 40, 64))


def test_ensure_synthetic_reuses_a_complete_tree(cache: Path) -> None:
    root = _root(cache, "synthetic")
    stamp = (root / "attributes.json").stat().st_mtime_ns
    assert ensure_synthetic("synthetic", cache) == root
    assert (root / "attributes.json").stat().st_mtime_ns == stamp
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".")], "a staging directory was left behind"


def test_unknown_dataset_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown synthetic dataset"):
        ensure_synthetic("nope", tmp_path)


def test_racing_callers_leave_one_complete_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two callers both stage a full tree before either publishes; one rename wins, the other's copy is
    discarded, and both get the same complete tree."""
    tiny = DatasetSpec("synthetic-race", 7, ("hex_nut", "capsule"), 2, 1, 1)
    monkeypatch.setitem(SYNTHETIC_DATASETS, tiny.name, tiny)
    both_staged = threading.Barrier(2)

    def write_then_wait(spec: DatasetSpec, root: Path) -> None:
        write_dataset(spec, root)
        both_staged.wait(timeout=60)

    monkeypatch.setattr(generator, "write_dataset", write_then_wait)
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(2) as pool:
        roots = list(pool.map(lambda _: ensure_synthetic(tiny.name, cache), range(2)))
    assert roots[0] == roots[1] == cache / f"synthetic-race-v{GENERATOR_VERSION}"
    assert [p.name for p in cache.iterdir()] == [roots[0].name]
    assert (roots[0] / generator.MARKER).is_file()
    (tmp_path / "fresh").mkdir()
    write_dataset(tiny, tmp_path / "fresh")
    assert tree_digest(roots[0]) == tree_digest(tmp_path / "fresh")


def test_an_incomplete_tree_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = DatasetSpec("synthetic-tiny", 7, ("wire_mesh",), 1, 1, 1)
    monkeypatch.setitem(SYNTHETIC_DATASETS, tiny.name, tiny)
    stale = tmp_path / f"synthetic-tiny-v{GENERATOR_VERSION}"
    (stale / "wire_mesh").mkdir(parents=True)
    (stale / "leftover.txt").write_text("partial")
    assert ensure_synthetic(tiny.name, tmp_path) == stale
    assert (stale / generator.MARKER).is_file() and not (stale / "leftover.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == [stale.name]


def test_image_rng_depends_on_every_key() -> None:
    spec = SYNTHETIC_DATASETS["synthetic"]
    draws = {
        float(image_rng(s, c, split, d, i).random())
        for s, c, split, d, i in [
            (spec, "tile", "train", "good", 0),
            (replace(spec, seed=spec.seed + 1), "tile", "train", "good", 0),
            (spec, "fabric", "train", "good", 0),
            (spec, "tile", "test", "good", 0),
            (spec, "tile", "test", "crack", 0),
            (spec, "tile", "train", "good", 1),
        ]
    }
    assert len(draws) == 6
