"""Shot manifests: seeded draws, file format and hash, validation and importers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from fsas_bench.data.formats import load_mvtec_tree
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.manifests import (
    _first_counters,
    draw_manifest,
    import_dictas,
    import_promptad,
    manifest_path,
    read_manifest,
    shot_manifest_sha,
    support_samples,
    validate_manifest,
    write_manifest,
)
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError

TRAIN_COUNTS = {"a": 5, "b": 3}


def make_tree(root: Path, counts: dict[str, int] = TRAIN_COUNTS) -> Path:
    """Per category: ``counts[c]`` normal train images and two test images (one good, one crack)."""
    files = [f"{c}/train/good/{i:03d}.png" for c, n in counts.items() for i in range(n)]
    files += [f"{c}/test/{folder}/000.png" for c in counts for folder in ("good", "crack")]
    for rel_path in files:
        (root / rel_path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (3, 2)).save(root / rel_path)
    return root


@pytest.fixture
def index(tmp_path: Path) -> DatasetIndex:
    return load_mvtec_tree(make_tree(tmp_path / "toy"), "toy")


def one_line(error: pytest.ExceptionInfo[UserError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


PINNED_K2_SEED0 = (
    ("a", "a/train/good/001.png"), ("a", "a/train/good/003.png"),
    ("b", "b/train/good/000.png"), ("b", "b/train/good/002.png"),
)
PINNED_K2_SEED0_SHA = "0df99da744cf137763d9dc0e57a3de45cf046ab6032cabde4dae3b29596e386e"


def test_seeded_draw_is_pinned(index: DatasetIndex) -> None:
    manifest = draw_manifest(index, 2, 0)
    assert manifest == draw_manifest(index, 2, 0)
    assert manifest.text().startswith(
        "# manifest: seeded\n# version: 1\n# dataset: toy\n# k: 2\n# seed: 0\n# source: seeded\n"
        "# index_interpretation: n/a\na\t"
    )
    assert manifest.entries == PINNED_K2_SEED0
    assert manifest.sha == PINNED_K2_SEED0_SHA


def test_draws_are_nested_and_differ_between_seeds(index: DatasetIndex) -> None:
    draws = {}
    for seed in range(3):
        one, two, three = (draw_manifest(index, k, seed) for k in (1, 2, 3))
        for category in index.categories:
            assert two.paths(category)[:1] == one.paths(category)
            assert three.paths(category)[:2] == two.paths(category)
        draws[seed] = three.entries
        validate_manifest(three, index)
    assert len(set(draws.values())) == 3


def test_zero_shot_manifest_has_an_empty_body(index: DatasetIndex, tmp_path: Path) -> None:
    manifest = draw_manifest(index, 0, 1)
    assert manifest.entries == () and manifest.text().count("\n") == 7
    validate_manifest(manifest, index)
    path = tmp_path / "k0.txt"
    write_manifest(manifest, path)
    assert read_manifest(path) == manifest


def test_too_many_shots_is_a_user_error(index: DatasetIndex) -> None:
    with pytest.raises(UserError) as error:
        draw_manifest(index, 4, 0)
    assert one_line(error) == "category 'b' has only 3 normal training images; use --shots up to 3"


def test_write_read_round_trip_is_atomic(index: DatasetIndex, tmp_path: Path) -> None:
    manifest = draw_manifest(index, 2, 1)
    path = manifest_path(tmp_path / "shots", manifest)
    assert path == tmp_path / "shots" / "toy" / "seeded" / "v1" / "k2_seed1.txt"
    assert write_manifest(manifest, path) == manifest.sha
    assert path.read_bytes() == manifest.text().encode()
    assert [p.name for p in path.parent.iterdir()] == ["k2_seed1.txt"]
    assert read_manifest(path) == manifest


def test_hash_ignores_line_endings_and_trailing_whitespace(index: DatasetIndex, tmp_path: Path) -> None:
    manifest = draw_manifest(index, 1, 0)
    messy = manifest.text().replace("\n", "  \r\n") + "\r\n\n"
    assert shot_manifest_sha(messy.encode()) == manifest.sha
    path = tmp_path / "messy.txt"
    path.write_bytes(messy.encode())
    assert read_manifest(path) == manifest


def test_unwritable_location_is_a_user_error(index: DatasetIndex, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write shot manifest .*: choose a writable location") as error:
        write_manifest(draw_manifest(index, 1, 0), blocker / "k1.txt")
    one_line(error)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: t.replace("# k: 1\n", ""), "lacks header line"),
        (lambda t: t.replace("# k: 1", "# k: one"), "non-integer version, k or seed"),
        (lambda t: t.replace("# seed: 0", "# colour: red"), "not a known '# key: value' header"),
        (lambda t: t.replace("n/a", "glob"), "index_interpretation 'glob'"),
        (lambda t: t.replace("a\ta/", "a a/"), "is not '<category><TAB><path>'"),
        (lambda t: t.replace("# k: 1", "# k: 2"), "lists 1 references for category 'a': list exactly k=2"),
        (lambda t: t + t.splitlines()[-1] + "\n", "twice for category 'b'"),
        (lambda t: t + "a\ta/train/good/001.png\n", "lists a category in several places"),
    ],
)
def test_malformed_manifest_files(index: DatasetIndex, tmp_path: Path, edit, problem: str) -> None:
    path = tmp_path / "m.txt"
    path.write_text(edit(draw_manifest(index, 1, 0).text()))
    with pytest.raises(UserError, match=problem) as error:
        read_manifest(path)
    one_line(error)


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found: check the path") as error:
        read_manifest(tmp_path / "absent.txt")
    one_line(error)


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([("a", "a/train/good/000.png")], "has no references for category 'b': add 1 for every category"),
        ([("a", "a/train/good/000.png"), ("c", "c/train/good/000.png"), ("b", "b/train/good/000.png")],
         "lists category 'c', unknown to dataset 'toy'"),
        ([("a", "a/test/good/000.png"), ("b", "b/train/good/000.png")], "'a/test/good/000.png' is a test image"),
        ([("a", "b/train/good/000.png"), ("b", "b/train/good/000.png")],
         "'b/train/good/000.png' is not a normal training image of category 'a'"),
        ([("a", "a/train/good/000.png"), ("b", "b/train/good/000.png"), ("a", "a/train/good/001.png")],
         "lists a category in several places"),
    ],
)
def test_validation_failures(index: DatasetIndex, entries: list[tuple[str, str]], problem: str) -> None:
    manifest = dataclasses.replace(draw_manifest(index, 1, 0), entries=tuple(entries))
    with pytest.raises(UserError, match=problem) as error:
        validate_manifest(manifest, index)
    one_line(error)


def test_validation_checks_dataset_and_files(index: DatasetIndex) -> None:
    manifest = draw_manifest(index, 1, 0)
    other = DatasetIndex("other", index.root, index.categories, index.samples)
    with pytest.raises(UserError, match="is for dataset 'toy', not 'other'") as error:
        validate_manifest(manifest, other)
    one_line(error)
    (index.root / manifest.paths("b")[0]).unlink()
    with pytest.raises(UserError, match=f"'{manifest.paths('b')[0]}' is missing under") as error:
        validate_manifest(manifest, index)
    one_line(error)


def test_support_samples_follow_manifest_order(index: DatasetIndex) -> None:
    manifest = draw_manifest(index, 3, 2)
    samples = support_samples(manifest, index, "a")
    assert [s.rel_path for s in samples] == manifest.paths("a")
    assert all(s.split == "train" and s.label == 0 and s.category == "a" for s in samples)


def write_seed_files(seeds_dir: Path, lines: dict[str, str]) -> Path:
    for category, text in lines.items():
        (seeds_dir / category).mkdir(parents=True, exist_ok=True)
        (seeds_dir / category / "selected_samples_per_run.txt").write_text(text)
    return seeds_dir


def test_promptad_seed_files_index_the_sorted_train_list(index: DatasetIndex, tmp_path: Path) -> None:
    seeds = write_seed_files(tmp_path / "seeds", {"a": "#1: 003\n#2: 004 001\n", "b": "#1: 2\n#2: 000 002\n"})
    manifest = import_promptad(seeds, index, 2)
    assert (manifest.name, manifest.seed, manifest.source, manifest.index_interpretation) == (
        "promptad_seedfile", "official", "promptad_seedfile", "sorted"
    )
    assert manifest.entries == (
        ("a", "a/train/good/004.png"), ("a", "a/train/good/001.png"),
        ("b", "b/train/good/000.png"), ("b", "b/train/good/002.png"),
    )
    path = tmp_path / "m.txt"
    write_manifest(manifest, path)
    assert read_manifest(path) == manifest
    assert "# seed: official\n" in path.read_text()


@pytest.mark.parametrize(
    ("b_text", "problem"),
    [
        ("#1: 2\n", "has no valid '#2: i j …' line"),
        ("#2: 000 x\n", "has no valid '#2: i j …' line"),
        ("#2: 000 003\n", "selects index 3 for k=2, but category 'b' has only 3 normal training images"),
        ("#2: 001 001\n", "lists 'b/train/good/001.png' twice for category 'b'"),
        (None, "not found"),
    ],
)
def test_promptad_bad_seed_files(index: DatasetIndex, tmp_path: Path, b_text: str | None, problem: str) -> None:
    files = {"a": "#2: 0 1\n"} | ({"b": b_text} if b_text is not None else {})
    seeds = write_seed_files(tmp_path / "seeds", files)
    with pytest.raises(UserError, match=problem) as error:
        import_promptad(seeds, index, 2)
    one_line(error)


def test_dictas_counter_and_stem_names(index: DatasetIndex, tmp_path: Path) -> None:
    # Category 'a' holds 5 train + 2 test images (counters 0-6), so 'b' starts at counter 7.
    counter_list = tmp_path / "counter" / "fix_2-shot.txt"
    counter_list.parent.mkdir()
    counter_list.write_text(
        "toy/b/train/good/toy_000009.bmp\ntoy/b/train/good/toy_000007.bmp\n"
        "toy/a/train/good/toy_000003.bmp\ntoy/a/train/good/toy_000000.bmp"
    )
    manifest = import_dictas(counter_list, index)
    assert (manifest.k, manifest.seed, manifest.source, manifest.index_interpretation) == (
        2, "official", "dictas_official", "sorted"
    )
    assert manifest.entries == (
        ("a", "a/train/good/003.png"), ("a", "a/train/good/000.png"),
        ("b", "b/train/good/002.png"), ("b", "b/train/good/000.png"),
    )
    stem_list = tmp_path / "stem" / "fix_1-shot.txt"
    stem_list.parent.mkdir()
    stem_list.write_text("toy/b/train/good/TOY_001_000123.bmp\r\ntoy/a/train/good/TOY_004_000042.bmp\n\n")
    manifest = import_dictas(stem_list, index)
    assert manifest.index_interpretation == "n/a"
    assert manifest.entries == (("a", "a/train/good/004.png"), ("b", "b/train/good/001.png"))
    path = tmp_path / "m.txt"
    write_manifest(manifest, path)
    assert read_manifest(path) == manifest


def test_dictas_btad_product_names(tmp_path: Path) -> None:
    btad = load_mvtec_tree(make_tree(tmp_path / "btad", {"01": 2, "02": 2, "03": 2}), "btad")
    listing = tmp_path / "fix_1-shot.txt"
    listing.write_text(
        "BTAD/metal2/train/good/BTAD_001_002080.bmp\nBTAD/wood/train/good/BTAD_000_000782.bmp\n"
        "BTAD/metal1/train/good/BTAD_001_000040.bmp\n"
    )
    assert import_dictas(listing, btad).entries == (
        ("01", "01/train/good/001.png"), ("02", "02/train/good/000.png"), ("03", "03/train/good/001.png"),
    )


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("fix_1-shot.txt", "toy/a/train/good/toy_000042.bmp\ntoy/b/train/good/toy_000007.bmp\n",
         "line 1 \\('toy_000042.bmp'\\) matches no single normal training image of 'a'"),
        ("fix_1-shot.txt", "toy/a/train/good/T_009_000001.bmp\n", "matches no single normal training image of 'a'"),
        ("fix_1-shot.txt", "toy/zzz/train/good/T_000_000001.bmp\n", "names class 'zzz', unknown to dataset 'toy'"),
        ("fix_1-shot.txt", "toy/a/test/good/T_000_000001.bmp\n", "is not '<dataset>/<class>/train/good/<file>'"),
        ("fix_1-shot.txt", "toy/a/train/good/T_000_000001.bmp\n", "has no references for category 'b'"),
        ("shots.txt", "toy/a/train/good/T_000_000001.bmp\n", "cannot tell k from the DictAS list name"),
    ],
)
def test_dictas_bad_lists(index: DatasetIndex, tmp_path: Path, name: str, text: str, problem: str) -> None:
    listing = tmp_path / name
    listing.write_text(text)
    with pytest.raises(UserError, match=problem) as error:
        import_dictas(listing, index)
    one_line(error)


def test_dictas_counters_reproduce_the_mvtec_first_ids() -> None:
    """datasets.md/dictas.md Appendix A.1: first ids from MVTec AD's train/test counts in class order."""
    counts = {  # category: (train/good, test)
        "bottle": (209, 83), "cable": (224, 150), "capsule": (219, 132), "carpet": (280, 117), "grid": (264, 78),
        "hazelnut": (391, 110), "leather": (245, 124), "metal_nut": (220, 115), "pill": (267, 167),
        "screw": (320, 160), "tile": (230, 117), "toothbrush": (60, 42), "transistor": (213, 100),
        "wood": (247, 79), "zipper": (240, 151),
    }
    samples = [
        Sample(Path(f"/x/{c}/{split}/{i}"), f"{c}/{split}/{i:03d}.png", 0, c, split, "good")
        for c, (train, test) in counts.items() for split, n in (("train", train), ("test", test)) for i in range(n)
    ]
    mvtec = DatasetIndex("mvtec", Path("/x"), tuple(counts), tuple(samples))
    assert list(_first_counters(mvtec).values()) == [
        0, 292, 666, 1017, 1414, 1756, 2257, 2626, 2961, 3395, 3875, 4222, 4324, 4637, 4963
    ]
