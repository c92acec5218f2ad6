"""Dataset format loaders and image/mask readers, on tiny fake trees written with Pillow."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsas_bench.data.formats import (
    elpv_available,
    load_elpv,
    load_meta_json,
    load_mvtec_tree,
    load_textile,
    load_visa,
    load_visa_csv,
    read_image_rgb,
    read_mask,
    read_sample,
    textile_available,
    verify_samples,
)
from fsas_bench.data.formats import packaged
from fsas_bench.errors import UserError

WIDTH, HEIGHT = 6, 4  # non-square on purpose: a transposed mask cannot pass


def write_image(path: Path, size: tuple[int, int] = (WIDTH, HEIGHT), mode: str = "RGB", value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value,) * 3).save(path)
    return path


def write_mask(
    path: Path, box: tuple[int, int, int, int], size: tuple[int, int] = (WIDTH, HEIGHT), value: int = 255
) -> Path:
    """A single-channel mask, ``value`` inside ``box`` = (left, top, right, bottom), 0 elsewhere."""
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def expected_mask(box: tuple[int, int, int, int], size: tuple[int, int] = (WIDTH, HEIGHT)) -> np.ndarray:
    mask = np.zeros((size[1], size[0]), dtype=bool)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = True
    return mask


def one_line(error: pytest.ExceptionInfo[UserError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    """Two categories (RGB ``bottle``, grayscale ``grid``); crack masks that position-pairing would mix up."""
    root = tmp_path / "mvtec"
    for category, mode in (("bottle", "RGB"), ("grid", "L")):
        for name in ("000.png", "001.png", "002.png"):
            write_image(root / category / "train" / "good" / name, mode=mode)
        write_image(root / category / "test" / "good" / "000.png", mode=mode)
        for name in ("000.png", "002.png"):
            write_image(root / category / "test" / "crack" / name, mode=mode)
        write_mask(root / category / "ground_truth" / "crack" / "000_mask.png", (0, 0, 2, 1))
        write_mask(root / category / "ground_truth" / "crack" / "001_mask.png", (0, 0, 6, 4))
        write_mask(root / category / "ground_truth" / "crack" / "002_mask.png", (4, 1, 6, 4))
    (root / "license_files").mkdir()
    (root / "readme.txt").write_text("not a category")
    (root / "bottle" / "train" / "good" / "notes.txt").write_text("not an image")
    return root


def test_mvtec_tree_indexes_categories_splits_and_masks(mvtec_root: Path) -> None:
    index = load_mvtec_tree(mvtec_root, "mvtec")
    assert index.name == "mvtec" and index.root == mvtec_root.resolve()
    assert index.categories == ("bottle", "grid")
    assert index.has_masks and _has_normal_test(index)
    assert [s.rel_path for s in index.normal_train("bottle")] == [
        "bottle/train/good/000.png", "bottle/train/good/001.png", "bottle/train/good/002.png"
    ]
    test = {s.rel_path: s for s in index.split("bottle", "test")}
    assert sorted(test) == ["bottle/test/crack/000.png", "bottle/test/crack/002.png", "bottle/test/good/000.png"]
    assert test["bottle/test/good/000.png"].label == 0 and test["bottle/test/good/000.png"].mask_path is None
    crack = test["bottle/test/crack/002.png"]
    assert (crack.label, crack.defect_type, crack.split) == (1, "crack", "test")
    assert crack.mask_path == mvtec_root.resolve() / "bottle/ground_truth/crack/002_mask.png"
    assert crack.image_path == mvtec_root.resolve() / crack.rel_path


def test_masks_are_paired_by_name_and_read_as_height_by_width(mvtec_root: Path) -> None:
    index = load_mvtec_tree(mvtec_root, "mvtec")
    crack = next(s for s in index.split("grid", "test") if s.rel_path.endswith("crack/002.png"))
    image, mask = read_sample(crack)
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, expected_mask((4, 1, 6, 4)))
    normal = index.split("grid", "test")[-1]
    assert normal.label == 0
    _, empty = read_sample(normal)
    assert empty.shape == (HEIGHT, WIDTH) and not empty.any()


def test_grayscale_images_are_read_as_rgb(mvtec_root: Path) -> None:
    image = read_image_rgb(mvtec_root / "grid" / "train" / "good" / "000.png")
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    assert (image == 128).all()


def test_missing_mask_is_a_user_error(mvtec_root: Path) -> None:
    write_image(mvtec_root / "bottle" / "test" / "crack" / "003.png")
    with pytest.raises(UserError) as error:
        load_mvtec_tree(mvtec_root, "mvtec")
    assert one_line(error) == (
        "mask missing for 'bottle/test/crack/003.png' (expected ground_truth/crack/003_mask.png or 003.png): "
        "check the dataset layout"
    )


def test_tree_without_ground_truth_has_no_masks(tmp_path: Path) -> None:
    write_image(tmp_path / "headct" / "train" / "good" / "0.png")
    write_image(tmp_path / "headct" / "test" / "good" / "1.png")
    write_image(tmp_path / "headct" / "test" / "defect" / "2.png")
    index = load_mvtec_tree(tmp_path, "headct")
    assert not index.has_masks
    assert all(s.mask_path is None for s in index.samples)
    assert [s.label for s in index.split("headct", "test")] == [1, 0]


def test_btad_ok_ko_with_bmp_images_and_same_stem_masks(tmp_path: Path) -> None:
    root = tmp_path / "btad"
    for name in ("0000.bmp", "0001.bmp"):
        write_image(root / "03" / "train" / "ok" / name, size=(8, 5))
    write_image(root / "03" / "test" / "ok" / "0002.bmp", size=(8, 5))
    write_image(root / "03" / "test" / "ko" / "0003.bmp", size=(8, 5))
    write_image(root / "03" / "test" / "ko" / "0004.bmp", size=(8, 5))
    write_mask(root / "03" / "ground_truth" / "ko" / "0003.png", (0, 0, 1, 1), size=(8, 5))
    write_mask(root / "03" / "ground_truth" / "ko" / "0004.png", (7, 4, 8, 5), size=(8, 5))
    index = load_mvtec_tree(root, "btad")
    assert index.categories == ("03",)
    assert [s.rel_path for s in index.normal_train("03")] == ["03/train/ok/0000.bmp", "03/train/ok/0001.bmp"]
    ok, = (s for s in index.split("03", "test") if s.label == 0)
    assert ok.defect_type == "good"
    ko = [s for s in index.split("03", "test") if s.label == 1]
    assert [(s.defect_type, s.mask_path.name) for s in ko] == [("ko", "0003.png"), ("ko", "0004.png")]
    np.testing.assert_array_equal(read_sample(ko[1])[1], expected_mask((7, 4, 8, 5), size=(8, 5)))
    verify_samples(index.samples)


def test_visa_form_one_is_found_in_its_1cls_folder(tmp_path: Path) -> None:
    tree = tmp_path / "visa" / "1cls" / "candle"
    write_image(tree / "train" / "good" / "0000.JPG")
    write_image(tree / "test" / "good" / "0001.JPG")
    write_image(tree / "test" / "bad" / "000.JPG")
    write_mask(tree / "ground_truth" / "bad" / "000.png", (1, 1, 3, 3))
    index = load_visa(tmp_path / "visa")
    assert index.root == (tmp_path / "visa" / "1cls").resolve()
    bad, = (s for s in index.samples if s.label == 1)
    assert (bad.rel_path, bad.defect_type, bad.mask_path.name) == ("candle/test/bad/000.JPG", "bad", "000.png")


@pytest.fixture
def visa_root(tmp_path: Path) -> Path:
    """The original VisA tree: images under Data/Images, class-index masks, split_csv/1cls.csv."""
    root = tmp_path / "visa"
    rows = []
    for category in ("pcb4", "candle"):
        images = root / category / "Data" / "Images"
        for stem, split in (("0000", "train"), ("0001", "train"), ("0002", "test")):
            write_image(images / "Normal" / f"{stem}.JPG")
            rows.append([category, split, "normal", f"{category}/Data/Images/Normal/{stem}.JPG", ""])
        write_image(images / "Anomaly" / "000.JPG")
        write_mask(root / category / "Data" / "Masks" / "Anomaly" / "000.png", (2, 0, 3, 4), value=7)
        rows.append([category, "test", "anomaly", f"{category}/Data/Images/Anomaly/000.JPG",
                     f"{category}/Data/Masks/Anomaly/000.png"])
    (root / "split_csv").mkdir()
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)
    return root


def test_visa_csv_index_and_class_index_masks(visa_root: Path) -> None:
    index = load_visa(visa_root)
    assert index.categories == ("candle", "pcb4")
    assert index.has_masks and _has_normal_test(index)
    assert [s.rel_path for s in index.normal_train("pcb4")] == [
        "pcb4/Data/Images/Normal/0000.JPG", "pcb4/Data/Images/Normal/0001.JPG"
    ]
    anomaly, = (s for s in index.split("pcb4", "test") if s.label == 1)
    assert anomaly.mask_path == visa_root.resolve() / "pcb4/Data/Masks/Anomaly/000.png"
    np.testing.assert_array_equal(read_sample(anomaly)[1], expected_mask((2, 0, 3, 4)))


def test_visa_csv_anomaly_without_mask_is_a_user_error(visa_root: Path) -> None:
    csv_path = visa_root / "split_csv" / "1cls.csv"
    csv_path.write_text(csv_path.read_text().replace("pcb4/Data/Masks/Anomaly/000.png", ""))
    with pytest.raises(UserError, match=r"mask missing for 'pcb4/Data/Images/Anomaly/000.JPG'") as error:
        load_visa_csv(visa_root)
    one_line(error)


def test_visa_csv_missing_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="1cls.csv' not found") as error:
        load_visa_csv(tmp_path)
    one_line(error)


def meta_record(img_path: str, mask_path: str, cls_name: str, specie_name: str, anomaly: int) -> dict[str, object]:
    return {"img_path": img_path, "mask_path": mask_path, "cls_name": cls_name, "specie_name": specie_name,
            "anomaly": anomaly}


def test_meta_json_capitalised_keys_and_absolute_paths(mvtec_root: Path) -> None:
    root = mvtec_root.resolve()
    foreign = "/remote-home/someone/data/mvtec"  # the machine that wrote the file
    meta = {
        "Train": {"bottle": [meta_record(f"{root}/bottle/train/good/000.png", "", "bottle", "good", 0)]},
        "Test": {"bottle": [
            meta_record(f"{foreign}/bottle/test/crack/002.png", f"{foreign}/bottle/ground_truth/crack/002_mask.png",
                        "bottle", "crack", 1),
            meta_record("bottle/test/good/000.png", "", "bottle", "good", 0),
        ]},
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=4))
    index = load_meta_json(root, "mvtec_meta")
    assert index.categories == ("bottle",) and index.has_masks and _has_normal_test(index)
    assert [s.rel_path for s in index.normal_train("bottle")] == ["bottle/train/good/000.png"]
    crack, good = index.split("bottle", "test")
    assert (crack.rel_path, crack.label, crack.defect_type) == ("bottle/test/crack/002.png", 1, "crack")
    assert crack.mask_path == root / "bottle/ground_truth/crack/002_mask.png"
    assert (good.label, good.mask_path, good.defect_type) == (0, None, "good")
    verify_samples(index.samples)


def test_meta_json_without_masks_and_with_directory_placeholders(tmp_path: Path) -> None:
    write_image(tmp_path / "yes" / "y1.jpg")
    write_image(tmp_path / "no" / "n1.jpg")
    meta = {"train": {}, "test": {"brain": [
        meta_record("yes/y1.jpg", "brain/ground_truth", "brain", "", 1),
        meta_record("no/n1.jpg", "", "brain", "", 0),
    ]}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    index = load_meta_json(tmp_path, "br35h")
    assert not index.has_masks
    assert [(s.label, s.defect_type, s.mask_path) for s in index.samples] == [(1, "", None), (0, "good", None)]


def test_meta_json_anomaly_without_mask_when_others_have_masks(tmp_path: Path) -> None:
    meta = {"test": {"a": [meta_record("a/1.png", "a/1_mask.png", "a", "x", 1),
                           meta_record("a/2.png", "", "a", "x", 1)]}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"mask missing for 'a/2.png' .*add its mask_path") as error:
        load_meta_json(tmp_path, "custom")
    one_line(error)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "cannot read"),
        ('{"train": {}}', "has no 'test' key"),
        ('{"test": {"a": [{"img_path": "x.png"}]}}', "needs 'img_path' and 'anomaly'"),
        ('{"test": {"a": [{"img_path": "/elsewhere/x.png", "anomaly": 0}]}}', "is not under the dataset root"),
    ],
)
def test_meta_json_malformed(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "meta.json").write_text(content)
    with pytest.raises(UserError, match=problem) as error:
        load_meta_json(tmp_path, "custom")
    one_line(error)


def test_missing_root_and_empty_tree_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data for dataset 'mpdd' not found") as error:
        load_mvtec_tree(tmp_path / "absent", "mpdd")
    one_line(error)
    with pytest.raises(UserError, match="no categories in") as error:
        load_mvtec_tree(tmp_path, "mpdd")
    one_line(error)


@pytest.mark.parametrize("content", [b"this is not an image", None], ids=["garbage", "truncated"])
def test_corrupt_image_is_a_user_error(mvtec_root: Path, content: bytes | None) -> None:
    path = mvtec_root / "bottle" / "train" / "good" / "001.png"
    path.write_bytes(content if content is not None else path.read_bytes()[:50])
    index = load_mvtec_tree(mvtec_root, "mvtec")
    with pytest.raises(UserError, match=r"unreadable image '.*bottle/train/good/001.png'") as error:
        verify_samples(index.samples)
    one_line(error)
    with pytest.raises(UserError, match="unreadable image") as error:
        read_image_rgb(path)
    one_line(error)


def test_mask_size_mismatch_is_a_user_error(mvtec_root: Path) -> None:
    write_mask(mvtec_root / "bottle" / "ground_truth" / "crack" / "000_mask.png", (0, 0, 1, 1), size=(HEIGHT, WIDTH))
    index = load_mvtec_tree(mvtec_root, "mvtec")
    crack = next(s for s in index.samples if s.rel_path == "bottle/test/crack/000.png")
    expected = r"is 4x6 but image 'bottle/test/crack/000.png' is 6x4 \(width x height\): fix or regenerate the mask"
    for check in (lambda: verify_samples(index.samples), lambda: read_sample(crack)):
        with pytest.raises(UserError, match=expected) as error:
            check()
        one_line(error)


def test_missing_file_is_a_user_error(mvtec_root: Path) -> None:
    index = load_mvtec_tree(mvtec_root, "mvtec")
    (mvtec_root / "grid" / "ground_truth" / "crack" / "002_mask.png").unlink()
    with pytest.raises(UserError, match=r"mask file missing: '.*002_mask.png'") as error:
        verify_samples(index.samples)
    one_line(error)


def test_mask_modes_are_binarised_on_raw_values(tmp_path: Path) -> None:
    rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha alone is not a defect
    rgba[3, 5, 1] = 9
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    palette = Image.new("P", (WIDTH, HEIGHT), 0)
    palette.putpalette([0, 0, 0] * 256)  # every index renders black; the index is the class
    palette.putpixel((1, 2), 3)
    palette.save(tmp_path / "palette.png")
    for name, pixel in (("rgba.png", (3, 5)), ("palette.png", (2, 1))):
        mask = read_mask(tmp_path / name)
        assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == bool
        assert list(zip(*np.nonzero(mask))) == [pixel]


def test_missing_data_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged, "ELPV_MODULE", "fsas_bench_absent_module")
    monkeypatch.setattr(packaged, "TEXTILE_MODULE", "fsas_bench_absent_module")
    assert not elpv_available() and not textile_available()
    for load in (load_elpv, load_textile):
        with pytest.raises(UserError, match=r"install the data extra: pip install 'fsas-bench\[data\]'") as error:
            load()
        one_line(error)


def sorted_test_sha(paths: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()


@pytest.mark.data_extra
@pytest.mark.skipif(not elpv_available(), reason="optional extra elpv-dataset is not installed")
def test_elpv_protocol() -> None:
    index = load_elpv()
    assert index.categories == ("elpv",) and not index.has_masks and _has_normal_test(index)
    test = index.split("elpv", "test")
    assert len(index.normal_train("elpv")) == 1131
    assert (sum(s.label == 0 for s in test), sum(s.label == 1 for s in test)) == (377, 715)
    assert sorted_test_sha([s.rel_path for s in test]) == (
        "71bf99dbc6b5f2358ad847146ef299d199bcf890732cc8cc4b47064dc5e4a329"
    )
    by_type = load_elpv(by_type=True)
    assert by_type.categories == ("elpv_mono", "elpv_poly")
    assert [sum(s.label for s in by_type.split(c, "test")) for c in by_type.categories] == [313, 402]
    assert sorted(s.rel_path for s in by_type.samples) == sorted(s.rel_path for s in index.samples)
    image = read_image_rgb(test[0].image_path)
    assert image.shape == (300, 300, 3)


@pytest.mark.data_extra
@pytest.mark.skipif(not elpv_available(), reason="optional extra elpv-dataset is not installed")
def test_elpv_split_equals_scikit_learn() -> None:
    model_selection = pytest.importorskip("sklearn.model_selection")
    index = load_elpv()
    normals = [s.rel_path for s in index.samples if s.label == 0]  # labels.csv order
    _, test = model_selection.train_test_split(normals, test_size=0.25, random_state=42)
    assert set(test) == {s.rel_path for s in index.split("elpv", "test") if s.label == 0}


@pytest.mark.data_extra
@pytest.mark.skipif(not textile_available(), reason="optional extra conformal-clip-data is not installed")
def test_textile_protocol() -> None:
    index = load_textile()
    assert index.categories == ("textile_local", "textile_global") and not index.has_masks
    for category, kind in (("textile_local", "local"), ("textile_global", "global")):
        test = index.split(category, "test")
        assert len(index.normal_train(category)) == 750
        assert sum(s.label == 0 for s in test) == 250
        assert {s.rel_path.split("/")[0] for s in test if s.label == 1} == {kind}
        assert sum(s.label == 1 for s in test) == 500
    assert {s.rel_path for s in index.normal_train("textile_local")} == {
        s.rel_path for s in index.normal_train("textile_global")
    }
    assert read_image_rgb(index.samples[0].image_path).shape == (250, 250, 3)


def _has_normal_test(index) -> bool:
    return any(s.split == "test" and s.label == 0 for s in index.samples)
