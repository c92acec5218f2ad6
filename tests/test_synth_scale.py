"""The mvtec-scale preset: MVTec AD's counts and sides, pixel-pinned output, readable as an MVTec tree."""

from __future__ import annotations

import pytest

from fsas_bench.cli import main
from fsas_bench.data.formats import read_image_rgb, read_mask
from fsas_bench.data.registry import load_dataset
from fsas_bench.data.synthetic import tree_digest
from fsas_bench.data.synthetic.scale import MVTEC_SCALE

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
