"""The mvtec-scale preset: MVTec AD's counts and sides, pixel-pinned output, readable as an MVTec tree."""

from __future__ import annotations

import json

import pytest

from fsas_bench.cli import main
from fsas_bench.data.formats import read_image_rgb, read_mask
from fsas_bench.data.registry import load_dataset
from fsas_bench.data.synthetic import tree_digest
from fsas_bench.data.synthetic.scale import MVTEC_SCALE, write_scale_preset
from fsas_bench.errors import UserError

PINNED = {  # tree_digest (decoded pixels, independent of the PNG encoder) of each category at --limit 1
    "toothbrush": "053a47cc2c56f3d447bffc9b6f37c04f7ea822c8c8a26304fa7effc1d042f6cc",
    "metal_nut": "b0b919a988bb7159c062ef66cf19ac1ad22fa8278f0624d4f5477d0ac1fd8873",
}


def test_counts_are_mvtec_ad_s():
    assert len(MVTEC_SCALE) == 15
    train = sum(c.train_good for c in MVTEC_SCALE.values())
    test = sum(c.test_good + c.test_anomalous for c in MVTEC_SCALE.values())
    assert (train, test) == (3629, 1725)
    for spec in MVTEC_SCALE.values():  # the anomalous images are all assigned to a defect folder
        assert sum(n for split, defect, n in spec.groups() if defect != "good") == spec.test_anomalous


@pytest.fixture(scope="module")
def scale_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    assert main(["synth", "--preset", "mvtec-scale", "--out", str(out), "--categories", ",".join(PINNED),
                 "--limit", "1"]) == 0  # fmt: skip
    return out


def test_output_is_pinned_pixel_for_pixel(scale_root):
    assert {c: tree_digest(scale_root / "mvtec" / c) for c in PINNED} == PINNED


def test_output_reads_as_an_mvtec_tree(scale_root):
    index = load_dataset("mvtec", scale_root)
    assert list(index.categories) == sorted(PINNED) and index.has_masks
    for category in PINNED:
        side = MVTEC_SCALE[category].side
        test = index.split(category, "test")
        assert len(index.split(category, "train")) == 1 and len(test) == 4 and sum(s.label for s in test) == 3
        for sample in test:
            assert read_image_rgb(sample.image_path).shape == (side, side, 3)
            if sample.label:
                mask = read_mask(sample.mask_path)
                assert mask.shape == (side, side) and 0 < mask.mean() < 0.5


def test_bad_synth_arguments_are_one_line(tmp_path, capsys):
    assert main(["synth", "--preset", "mvtec-scale", "--out", str(tmp_path / "x"), "--categories", "bottel"]) == 2
    assert main(["synth", "--preset", "mvtec-scale", "--out", str(tmp_path / "x"), "--limit", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "category 'bottel' is not in mvtec-scale" in err[0] and "--limit 0 is invalid" in err[1]
    assert not (tmp_path / "x").exists()


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rerun_of_the_same_request_is_a_no_op_and_other_contents_are_refused(tmp_path, capsys):
    args = ["synth", "--preset", "mvtec-scale", "--out", str(tmp_path), "--categories", "metal_nut", "--limit", "1"]
    assert main(args) == 0
    written = _files(tmp_path)
    assert sorted(p for p in written if not p.startswith("mvtec/metal_nut/")) == ["mvtec/.fsas-synth.json"]
    assert json.loads(written["mvtec/.fsas-synth.json"]) == {"preset": "mvtec-scale", "categories": ["metal_nut"],
                                                             "limit": 1}  # fmt: skip
    assert main(args) == 0 and "already written" in capsys.readouterr().out
    assert _files(tmp_path) == written  # nothing rewritten, no stale staging folder
    for other in (["--limit", "2"], ["--categories", "metal_nut,tile"]):  # another request: refused, untouched
        assert main([*args, *other]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "already holds another synth request: pass a new or empty --out" in err[0], err
        assert _files(tmp_path) == written
    real = tmp_path / "real"
    (real / "mvtec" / "bottle" / "train" / "good").mkdir(parents=True)
    (real / "mvtec" / "bottle" / "train" / "good" / "000.png").write_bytes(b"a real image")
    assert main(["synth", "--preset", "mvtec-scale", "--out", str(real), "--categories", "bottle"]) == 2
    assert "holds files that fsas-bench synth did not write" in capsys.readouterr().err
    assert _files(real) == {"mvtec/bottle/train/good/000.png": b"a real image"}


def test_tree_appears_whole_and_does_not_depend_on_processes(tmp_path, monkeypatch):
    from fsas_bench.data.synthetic import scale

    seen = []

    def progress(done: int, total: int) -> None:  # the tree is not in place before its last image is written
        seen.append(done)
        assert not (tmp_path / "one" / "mvtec").exists()

    count = len(MVTEC_SCALE["metal_nut"].groups())  # --limit 1: one image per (split, defect) group
    assert write_scale_preset("mvtec-scale", tmp_path / "one", ["metal_nut"], 1, progress) == count
    assert seen == list(range(1, count + 1))
    assert write_scale_preset("mvtec-scale", tmp_path / "two", ["metal_nut"], 1, processes=2) == count
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert tree_digest(tmp_path / "two" / "mvtec" / "metal_nut") == PINNED["metal_nut"]

    def fail(root, job):  # a write that fails halfway leaves no mvtec folder and no staging folder
        if job[3] == 0 and job[2] != "good":
            raise OSError(28, "No space left on device")
        return None

    monkeypatch.setattr(scale, "_write_image", fail)
    with pytest.raises(UserError, match="no space left on device"):
        write_scale_preset("mvtec-scale", tmp_path / "three", ["metal_nut"], 1)
    assert list((tmp_path / "three").iterdir()) == []
