"""Bad input through the console entry point: one line on stderr, exit 2, no traceback, nothing under --out.

Each case builds a small dataset (or file) in ``tmp_path``; ``patchknn`` with one shot and seed is the cheapest
sweep, and every check here fails while the sweep is being validated, before anything is computed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsas_bench.cli import main
from fsas_bench.errors import UserError

SIZE = (16, 12)  # (W, H) of every test image
BASE = ["run", "--methods", "patchknn", "--shots", "1", "--seeds", "0"]


def _image(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", SIZE, (value, value // 2, 255 - value)).save(path)


def _mask(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(SIZE[::-1], dtype=np.uint8)
    mask[2:5, 3:7] = 255
    Image.fromarray(mask).save(path)


def _record(img: object, mask: object = "", anomaly: int = 0, cls: str = "part") -> dict[str, object]:
    return {"img_path": img, "mask_path": mask, "cls_name": cls, "specie_name": "dent" if anomaly else "good",
            "anomaly": anomaly}  # fmt: skip


def meta_dataset(data_root: Path, category: str = "part", **replace: object) -> Path:
    """``<data_root>/custom`` with a meta.json of one category (2 train, 1 normal + 1 anomalous test image).

    ``replace`` swaps whole records: keys ``train0``, ``train1``, ``test0``, ``test1``.
    """
    root = data_root / "custom"
    for rel in ("train/0.png", "train/1.png", "test/good.png", "test/bad.png"):
        _image(root / rel)
    _mask(root / "gt/bad.png")
    records = {
        "train0": _record("train/0.png", cls=category), "train1": _record("train/1.png", cls=category),
        "test0": _record("test/good.png", cls=category), "test1": _record("test/bad.png", "gt/bad.png", 1, category),
    } | replace  # fmt: skip
    meta = {"train": {category: [records["train0"], records["train1"]]},
            "test": {category: [records["test0"], records["test1"]]}}  # fmt: skip
    (root / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


def run_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> str:
    """Run the CLI with ``args`` (into a fresh --out for ``run``) and assert the bad-input contract; the error
    line."""
    out = tmp_path / "out"
    before = _tree(tmp_path)
    assert main([*args, "--out", str(out)] if args[0] == "run" else args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fsas-bench: error:"), lines
    assert needle in lines[0] and "Traceback" not in err, lines[0]
    assert not out.exists()
    assert _tree(tmp_path) == before, "nothing may be written anywhere"
    return lines[0]


def _tree(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


def data_args(tmp_path: Path) -> list[str]:
    return [*BASE, "--data-root", str(tmp_path / "data"), "--datasets", "custom"]


# --- 1. names that become file names ----------------------------------------------------------------------


@pytest.mark.parametrize("category", ["../../x", "..", "a/b", "a\\b", "a\nb", "tab\there", "nul\x00"])
def test_meta_json_class_names_that_cannot_name_a_file(tmp_path, capsys, category):
    meta_dataset(tmp_path / "data", category)
    run_bad(tmp_path, capsys, data_args(tmp_path), "cannot be part of a file name")


def test_meta_json_class_name_check_happens_in_the_loader(tmp_path):
    from fsas_bench.data.formats import load_meta_json

    with pytest.raises(UserError, match="category of dataset 'custom'"):
        load_meta_json(meta_dataset(tmp_path, "../../x"), "custom")


def test_output_names_never_leave_their_folder(tmp_path):
    from fsas_bench.names import check_name, child_path
    from fsas_bench.runner.training import TrainJob, fit_relative_path

    assert child_path(tmp_path, "a", "b.json") == tmp_path / "a" / "b.json"
    for bad in ("", ".", "..", "../x", "x/..", "a\\b", "a\x7fb", "a\rb", 3):
        with pytest.raises(UserError, match="cannot be part of a file name"):
            check_name(bad)
        with pytest.raises(UserError):
            child_path(tmp_path, "ok", bad)  # type: ignore[arg-type]
    for dataset, category in (("../d", "c"), ("d", "../c"), ("d", "c/x")):
        with pytest.raises(UserError, match="cannot be part of a file name"):
            fit_relative_path("m", "0" * 64, dataset, category, 1, 0)
    with pytest.raises(UserError, match="cannot be part of a file name"):
        TrainJob("m", "0" * 64, "../aux", 0, None).relative_path()
    with pytest.raises(UserError, match="cannot be part of a file name"):
        TrainJob("m", "0" * 64, "aux", 0, None, target="a/b").relative_path()


# --- 2. paths from users' files stay inside the dataset root -----------------------------------------------


@pytest.mark.parametrize("field", ["img", "mask"])
def test_meta_json_relative_path_escaping_the_root(tmp_path, capsys, field):
    _image(tmp_path / "data" / "outside.png")
    img, mask = ("../outside.png", "gt/bad.png") if field == "img" else ("test/bad.png", "../outside.png")
    record = _record(img, mask, 1)
    meta_dataset(tmp_path / "data", test1=record)
    run_bad(tmp_path, capsys, data_args(tmp_path), "leads outside")


def test_symlink_out_of_the_dataset_is_refused(tmp_path, capsys):
    root = meta_dataset(tmp_path / "data")
    _image(tmp_path / "elsewhere" / "0.png")
    (root / "train" / "0.png").unlink()
    (root / "train" / "0.png").symlink_to(tmp_path / "elsewhere" / "0.png")
    run_bad(tmp_path, capsys, data_args(tmp_path), "leads outside")


def test_symlink_inside_the_dataset_and_a_symlinked_root_are_followed(tmp_path):
    from fsas_bench.data.formats import load_meta_json

    root = meta_dataset(tmp_path / "data")
    (root / "train" / "0.png").unlink()
    (root / "train" / "0.png").symlink_to(root / "test" / "good.png")
    (tmp_path / "link").symlink_to(root)
    index = load_meta_json(tmp_path / "link", "custom")
    assert len(index.samples) == 4


def test_folder_tree_symlink_out_of_the_dataset_is_refused(tmp_path):
    from fsas_bench.data.formats import load_mvtec_tree

    root = tmp_path / "mpdd"
    for rel in ("part/train/good/0.png", "part/test/good/0.png"):
        _image(root / rel)
    _image(tmp_path / "elsewhere.png")
    (root / "part/train/good/1.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(UserError, match="leads outside"):
        load_mvtec_tree(root, "mpdd")


def test_visa_csv_path_escaping_the_root(tmp_path):
    from fsas_bench.data.formats import load_visa_csv

    root = tmp_path / "visa"
    _image(tmp_path / "outside.png")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("object,split,label,image,mask\nc,train,normal,../outside.png,\n")
    with pytest.raises(UserError, match="leads outside") as error:
        load_visa_csv(root)
    assert "line 2" in str(error.value)


def test_reference_fits_paths_stay_in_their_folder(tmp_path):
    from fsas_bench.runner.training import ReferenceFits

    (tmp_path / "fits").mkdir()
    (tmp_path / "secret").write_text("x")
    for pins in ({"../../secret": "0"}, ["not", "a", "mapping"], {"a": 3}):
        (tmp_path / "fits" / "fits.json").write_text(json.dumps({"files": pins}))
        with pytest.raises(UserError, match="fits"):
            ReferenceFits(tmp_path / "fits")


# --- 3. 16-bit, 32-bit integer and float images and masks -------------------------------------------------


def _gray_u8() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, SIZE[::-1], dtype=np.uint8)


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B"])
def test_sixteen_bit_images_read_like_their_eight_bit_copy(tmp_path, mode):
    """v = u · 257 maps [0, 255] onto [0, 65535]: the 16-bit image must read exactly as the 8-bit one."""
    from fsas_bench.data.formats import read_image_rgb

    gray = _gray_u8()
    wide = gray.astype(np.uint16) * 257
    dtype = {"I;16B": ">u2", "I;16N": "=u2"}.get(mode, "<u2")
    Image.frombytes(mode, SIZE, wide.astype(dtype).tobytes()).save(tmp_path / "wide.tif")
    Image.fromarray(gray).convert("RGB").save(tmp_path / "rgb.png")
    expected = read_image_rgb(tmp_path / "rgb.png")
    got = read_image_rgb(tmp_path / "wide.tif")
    assert got.dtype == np.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    # in-between values are rounded, not truncated: 65535 · 100.6 / 255 → 101
    Image.fromarray(np.full(SIZE[::-1], round(100.6 * 257), dtype=np.uint16)).save(tmp_path / "mid.png")
    assert (read_image_rgb(tmp_path / "mid.png") == 101).all()


def test_sixteen_bit_image_features_match_the_eight_bit_copy(tmp_path, tiny_backbone):
    from fsas_bench.data.formats import read_image_rgb

    gray = _gray_u8()
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "wide.png")
    Image.fromarray(gray).convert("RGB").save(tmp_path / "rgb.png")
    wide, rgb = (tiny_backbone.preprocess(read_image_rgb(tmp_path / n)) for n in ("wide.png", "rgb.png"))
    assert (wide == rgb).all()


@pytest.mark.parametrize(("mode", "needle"), [("I", "32-bit integer pixels (mode I)"),
                                              ("F", "floating-point pixels (mode F)")])  # fmt: skip
def test_wide_images_are_refused_in_one_line(tmp_path, capsys, mode, needle):
    root = meta_dataset(tmp_path / "data", test0=_record("test/good.tif"))
    Image.fromarray(_gray_u8().astype(np.int32 if mode == "I" else np.float32), mode).save(root / "test/good.tif")
    run_bad(tmp_path, capsys, data_args(tmp_path), needle)


def test_unsupported_image_mode_is_refused(tmp_path):
    from fsas_bench.data.formats import read_image_rgb

    Image.new("LAB", SIZE).save(tmp_path / "lab.tif")
    with pytest.raises(UserError, match="pixel mode LAB, which fsas-bench does not read"):
        read_image_rgb(tmp_path / "lab.tif")


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_wide_masks_read_like_their_eight_bit_copy(tmp_path, mode):
    from fsas_bench.data.formats import read_mask

    values = np.zeros(SIZE[::-1], dtype=np.uint8)
    values[2:5, 3:7] = 255
    values[7, 1] = 1  # a faint defect pixel stays a defect
    Image.fromarray(values).save(tmp_path / "mask.png")
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    Image.fromarray(values.astype(dtype) * (257 if mode == "I;16" else 1)).save(tmp_path / "wide.tif")
    assert Image.open(tmp_path / "wide.tif").mode == mode
    np.testing.assert_array_equal(read_mask(tmp_path / "wide.tif"), read_mask(tmp_path / "mask.png"))


# --- 4. palette masks ---------------------------------------------------------------------------------------


def _palette_mask(path: Path, palette: list[int], indices: np.ndarray) -> None:
    image = Image.new("P", SIZE)
    image.putdata(indices.ravel().tolist())
    image.putpalette(palette)
    image.save(path)


def test_palette_mask_is_decoded_through_its_palette(tmp_path):
    """Index 0 renders white, index 1 black: the white pixels are the defect (their indices are 0)."""
    from fsas_bench.data.formats import read_mask

    indices = np.ones(SIZE[::-1], dtype=np.uint8)
    indices[2:5, 3:7] = 0
    _palette_mask(tmp_path / "inverted.png", [255, 255, 255, 0, 0, 0], indices)
    decoded = np.asarray(Image.open(tmp_path / "inverted.png").convert("L")) > 0  # the clean baseline
    assert decoded.sum() == 12
    np.testing.assert_array_equal(read_mask(tmp_path / "inverted.png"), decoded)


@pytest.mark.parametrize("palette", ["black", "gray", "colours"])
def test_class_index_palette_masks_keep_reading_as_index_not_zero(tmp_path, palette):
    """VisA-style class indices 0 … 9 give defect = index ≠ 0 whether the palette is all black (no colours),
    the gray ramp Pillow gives P images, or one with distinct colours and black at 0."""
    from fsas_bench.data.formats import read_mask

    indices = np.zeros(SIZE[::-1], dtype=np.uint8)
    indices[1, 2], indices[3:5, 4:6], indices[8, 9] = 1, 7, 9
    colours = {"black": [0, 0, 0] * 256, "gray": [v for i in range(256) for v in (i, i, i)],
               "colours": [0, 0, 0] + [v for i in range(1, 256) for v in (i, 255 - i, 40)]}[palette]  # fmt: skip
    _palette_mask(tmp_path / "visa.png", colours, indices)
    np.testing.assert_array_equal(read_mask(tmp_path / "visa.png"), indices != 0)


# --- 5. two shot lists for one (k, seed) ------------------------------------------------------------------


@pytest.mark.parametrize("same_file", [False, True])
def test_two_shot_lists_for_one_k_and_seed_are_refused(tmp_path, capsys, same_file):
    from fsas_bench.data.manifests import ShotManifest, write_manifest

    meta_dataset(tmp_path / "data")
    lists = []
    for n, rel in enumerate(("train/0.png", "train/1.png")):  # different references, same k and seed
        manifest = ShotManifest("mine", 1, "custom", 1, 0, "seeded", "n/a", (("part", rel),))
        write_manifest(manifest, tmp_path / "lists" / f"list{n}.txt")
        lists.append(tmp_path / "lists" / f"list{0 if same_file else n}.txt")
    args = ["run", "--methods", "patchknn", "--shots", "1", "--data-root", str(tmp_path / "data"), "--datasets",
            "custom", "--shot-list", str(lists[0]), "--shot-list", str(lists[1])]  # fmt: skip
    line = run_bad(tmp_path, capsys, args, "both give k=1 seed=0")
    assert str(lists[0]) in line and str(lists[1]) in line


# --- 6. malformed JSON of users' files -------------------------------------------------------------------

DEEP = "[" * 200_000 + "]" * 200_000  # RecursionError in json.loads


@pytest.mark.parametrize(("field", "value"), [("img_path", 123), ("mask_path", 5), ("img_path", ["a.png"]),
                                              ("mask_path", {"p": 1}), ("specie_name", 7)])  # fmt: skip
def test_meta_json_non_string_paths(tmp_path, capsys, field, value):
    meta_dataset(tmp_path / "data", test1=_record("test/bad.png", "gt/bad.png", 1) | {field: value})
    run_bad(tmp_path, capsys, data_args(tmp_path), f"'{field}' of record 1 of test/part")


def test_meta_json_nested_too_deeply(tmp_path, capsys):
    root = meta_dataset(tmp_path / "data")
    (root / "meta.json").write_text(DEEP)
    run_bad(tmp_path, capsys, data_args(tmp_path), "nested too deeply")


def test_regress_sidecar_nested_too_deeply(tmp_path, capsys):
    (tmp_path / "snap.csv").write_text("x\n")
    (tmp_path / "snap.json").write_text(DEEP)
    run_bad(tmp_path, capsys, ["regress", "--against", str(tmp_path / "snap.csv")], "is not valid JSON")


def test_visa_csv_short_line(tmp_path):
    from fsas_bench.data.formats import load_visa_csv

    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("object,split,label,image,mask\nc,train\n")
    with pytest.raises(UserError, match="line 2 of .* is malformed"):
        load_visa_csv(tmp_path)


def test_other_json_files_nested_too_deeply(tmp_path):
    from fsas_bench.methods.finegrainedad.captions import load_caption_file
    from fsas_bench.runner.training import ReferenceFits

    (tmp_path / "captions.json").write_text(DEEP)
    with pytest.raises(UserError, match="not valid JSON"):
        load_caption_file(str(tmp_path / "captions.json"))
    (tmp_path / "fits").mkdir()
    (tmp_path / "fits" / "fits.json").write_text(DEEP)
    with pytest.raises(UserError, match="no readable fits.json"):
        ReferenceFits(tmp_path / "fits")


# --- 7. config ranges ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["patchknn.output_size=0", "patchknn.sigma=nan", "patchknn.sigma=-1",
                                     "patchknn.sigma=inf", "patchknn.blocks=-1,2"])  # fmt: skip
def test_set_values_out_of_range(tmp_path, capsys, setting):
    meta_dataset(tmp_path / "data")
    field, value = setting.removeprefix("patchknn.").split("=")
    run_bad(tmp_path, capsys, [*data_args(tmp_path), "--set", setting], f"PatchKNNConfig.{field} = ")


def _bad_values(limit) -> list[object]:
    from fsas_bench.methods import base

    by_rule = {base.POSITIVE_INT: [0, -3, 2.5, True], base.NON_NEGATIVE_INT: [-1, 1.5],
               base.NON_NEGATIVE: [-1.0, float("nan"), float("inf"), "1"], base.POSITIVE: [0.0, float("nan")],
               base.FRACTION: [1.5, -0.1, float("nan")], base.BELOW_ONE: [1.0, -0.5, float("nan")],
               base.SEED: [-2, 2**32, 1.0]}  # fmt: skip
    return by_rule.get(limit, [(-1,), (float("nan"),), 3])  # the others are per-item rules of tuple fields


def test_every_limited_field_of_every_method_rejects_out_of_range_values():
    from dataclasses import replace

    from fsas_bench.methods import get_method, list_methods

    checked = 0
    for name in list_methods():
        config = get_method(name).config_cls()
        assert config.limits, f"{name} declares no limits"
        for field, limit in config.limits.items():
            assert limit.check(getattr(config, field)), (name, field)
            for value in _bad_values(limit):
                with pytest.raises(UserError, match=rf"\.{field} = .* is invalid: use "):
                    replace(config, **{field: value})
                checked += 1
    assert checked > 100


def test_every_preset_still_constructs():
    from fsas_bench.data.synthetic import SYNTHETIC_DATASETS
    from fsas_bench.methods import get_method, list_methods
    from fsas_bench.methods.dictas.config import DictASConfig
    from fsas_bench.methods.dictas.overrides import OFFICIAL_DATASETS, OFFICIAL_MODES

    datasets = [*SYNTHETIC_DATASETS, "mvtec", "visa", "btad", "mpdd", "dtd-synthetic", "elpv", "textile", "custom"]
    for name in list_methods():
        cls = get_method(name).config_cls
        for dataset in datasets:
            for mode in ("benchmark", "faithful"):
                cls.for_run(dataset, mode)
            cls.for_dataset(dataset)
            cls.faithful_preset(dataset)
    for dataset in [*OFFICIAL_DATASETS, "other"]:
        for official_mode in OFFICIAL_MODES:
            DictASConfig.faithful(dataset, official_mode=official_mode)


# --- 8. strict integers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "needle"), [
    (["--shots", "²"], "--shots '²' is malformed"),
    (["--shots", "1_0"], "--shots '1_0' is malformed"),
    (["--shots", "١"], "--shots '١' is malformed"),  # an Arabic-Indic digit: int() would read 1
    (["--seeds", "4294967296"], "--seeds '4294967296' is out of range: give integers from 0 to 4294967295"),
    (["--seeds", "0,²"], "--seeds '0,²' is malformed"),
    (["--batch-size", "²"], "argument --batch-size: '²' is not an integer"),
    (["--batch-size", "1_6"], "argument --batch-size: '1_6' is not an integer"),
    (["--eval-size", "²"], "--eval-size '²' is invalid"),
    (["--eval-size", "2_56"], "--eval-size '2_56' is invalid"),
])  # fmt: skip
def test_strict_integers_on_the_command_line(tmp_path, capsys, args, needle):
    meta_dataset(tmp_path / "data")
    run_bad(tmp_path, capsys, [*data_args(tmp_path), *args], needle)


def test_largest_seed_is_accepted_and_strict_integers_elsewhere(tmp_path, capsys):
    from fsas_bench.cli import _int_list
    from fsas_bench.methods.dictas.config import DictASConfig
    from fsas_bench.numbers import MAX_SEED

    assert _int_list(f"0, {MAX_SEED}", "seeds", 0, MAX_SEED) == (0, MAX_SEED)
    run_bad(tmp_path, capsys, ["regress", "--against", "x.csv", "--seeds", "4294967296"], "out of range")
    run_bad(tmp_path, capsys, ["pretrain-tiny-clip", "--out", "w.st", "--seed", "4294967296"], "not an integer in")
    with pytest.raises(UserError, match="vgen_freeze 'epoch:²' is invalid"):
        DictASConfig(vgen_freeze="epoch:²")


@pytest.mark.parametrize("header", ["k: ²", "seed: ²", "version: ²", "seed: 4294967296", "k: 1_0"])
def test_manifest_header_integers_are_strict(tmp_path, header):
    from fsas_bench.data.manifests import read_manifest

    key, value = header.split(": ")
    fields = {"manifest": "mine", "version": "1", "dataset": "custom", "k": "1", "seed": "0", "source": "seeded",
              "index_interpretation": "n/a"} | {key: value}  # fmt: skip
    path = tmp_path / "m.txt"
    path.write_text("".join(f"# {k}: {v}\n" for k, v in fields.items()) + "part\ttrain/0.png\n")
    with pytest.raises(UserError, match="non-integer|outside"):
        read_manifest(path)


def test_result_sort_key_reads_only_ascii_integers():
    from fsas_bench.runner.results import _sort_key

    assert _sort_key("10") == (0, 10) and _sort_key("-2") == (0, -2)
    assert _sort_key("²") == (1, "²") and _sort_key("official") == (1, "official")


@pytest.mark.parametrize("sweep", [{"shots": ["1"]}, {"seeds": [0, True]}, {"methods": [3]},
                                   {"overrides": {"patchknn": {"sigma": 4}}}, {"overrides": {"patchknn": 1}}])  # fmt: skip
def test_regress_sidecar_item_types(tmp_path, sweep):
    from fsas_bench.runner.regress import SnapshotConfig

    (tmp_path / "snap.json").write_text(json.dumps({"sweep": sweep}))
    with pytest.raises(UserError, match=f"sweep.{next(iter(sweep))} = .* should hold JSON"):
        SnapshotConfig.load(tmp_path / "snap.json")


# Item 15: bad arguments are refused before torch, lightning or open_clip are imported.
_HEAVY = ("torch", "lightning", "open_clip", "torchmetrics")
_EARLY_ARGS = [
    ["run", "--shots", "²"], ["run", "--seeds", "4294967296"], ["run", "--methods", "nope"],
    ["run", "--set", "x"], ["run", "--set", "nope.sigma=1"], ["run", "--eval-size", "abc"],
    ["run", "--eval-size", "64", "--mask-resize", "cubic"], ["run", "--batch-size", "0"],
    ["run", "--device", "tpu"], ["run", "--device", "cuda:x"], ["run", "--datasets", "nope"],
    ["run", "--shot-list", "a.txt", "--seeds", "0"], ["report", "{tmp}/missing"], ["run", "--save-examples", "-1"],
    ["report", "{tmp}/missing", "--html"],
    ["regress", "--against", "x.csv", "--shots", "a"], ["regress", "--against", "x.csv", "--atol", "nan"],
]  # fmt: skip


@pytest.mark.parametrize("args", _EARLY_ARGS, ids=lambda a: " ".join(a))
def test_bad_arguments_are_refused_before_heavy_imports(tmp_path, args):
    import subprocess
    import sys

    argv = [a.replace("{tmp}", str(tmp_path)) for a in args] + (["--out", str(tmp_path / "out")]
                                                                 if args[0] == "run" else [])  # fmt: skip
    probe = (
        "import sys\nfrom fsas_bench.cli import main\nstatus = main(sys.argv[1:])\n"
        f"print(sorted(m for m in {_HEAVY!r} if m in sys.modules), status)"
    )
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[] 2", done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("fsas-bench: error: ")
    assert not (tmp_path / "out").exists()


# --- preflight: problems a sweep used to find only after it started (issue 16) -------------------------------


def test_truncated_jpeg_is_found_before_anything_is_written(tmp_path, capsys):
    root = meta_dataset(tmp_path / "data")
    noise = np.random.default_rng(0).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "test/cut.jpg", quality=95)
    data = (root / "test/cut.jpg").read_bytes()
    (root / "test/cut.jpg").write_bytes(data[:-40])  # headers intact: passes Pillow's verify(), fails decoding
    meta_dataset(tmp_path / "data", test0=_record("test/cut.jpg"))
    run_bad(tmp_path, capsys, data_args(tmp_path), "unreadable image")


def test_mixed_image_sizes_in_a_category_are_found_before_anything_is_written(tmp_path, capsys):
    root = meta_dataset(tmp_path / "data")
    Image.new("RGB", (SIZE[0] * 2, SIZE[1]), (1, 2, 3)).save(root / "test/wide.png")
    meta_dataset(tmp_path / "data", test0=_record("test/wide.png"))
    run_bad(tmp_path, capsys, data_args(tmp_path), "have different sizes")


def test_blocks_beyond_the_backbone_depth_are_found_before_anything_is_written(tmp_path, capsys):
    run_bad(tmp_path, capsys, ["run", "--methods", "dictas", "--shots", "1", "--seeds", "0", "--categories", "tile",
                               "--set", "dictas.blocks=2,40"], "do not exist in fsas-tiny")  # fmt: skip


@pytest.mark.parametrize("scales", ["99", "2,15"])
def test_window_sides_beyond_the_patch_grid_are_found_before_anything_is_written(tmp_path, capsys, scales):
    line = run_bad(tmp_path, capsys, ["run", "--methods", "winclip", "--shots", "1", "--seeds", "0", "--categories",
                                      "tile", "--set", f"winclip.scales={scales}"], "patch grid of fsas-tiny")
    assert "winclip.scales" in line
