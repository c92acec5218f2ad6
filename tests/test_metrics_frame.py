"""The shared evaluation frame (map resizing, the recorded mask-resize rules) and scoring one category in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
import torch
from PIL import Image

from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError
from fsas_bench.metrics import IMAGE_METRICS, PIXEL_METRICS, REGION_METRICS, evaluate
from fsas_bench.metrics.category import CategoryTruth, score_category, score_maps
from fsas_bench.metrics.frame import EvalFrame


def _sample(tmp_path: Path, name: str, height: int, width: int, mask: np.ndarray | None) -> Sample:
    image_path = tmp_path / f"{name}.png"
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(image_path)
    mask_path = None
    if mask is not None:
        mask_path = tmp_path / f"{name}_mask.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
    return Sample(image_path, image_path.name, int(mask is not None), "cat", "test", "", mask_path)


def test_native_frame_keeps_masks_and_uses_h_by_w(tmp_path):
    mask = np.zeros((6, 10), bool)
    mask[1:3, 7:9] = True
    samples = [_sample(tmp_path, "a", 6, 10, mask), _sample(tmp_path, "b", 6, 10, None)]
    frame = EvalFrame()
    masks = frame.masks(samples)
    assert masks.shape == (2, 6, 10) and masks.dtype == bool
    assert np.array_equal(masks[0], mask) and not masks[1].any()
    maps = frame.maps(torch.rand(2, 4, 4), 6, 10)
    assert maps.shape == (2, 6, 10) and maps.dtype == torch.float32
    assert frame.label == "native" and frame.mask_resize == "none"


def test_native_frame_rejects_mixed_sizes(tmp_path):
    samples = [_sample(tmp_path, "a", 6, 10, None), _sample(tmp_path, "b", 8, 8, None)]
    with pytest.raises(UserError, match="--eval-size"):
        EvalFrame().masks(samples)


def test_map_resize_is_bilinear_without_corner_alignment():
    maps = torch.arange(4.0).view(1, 2, 2)
    out = EvalFrame().maps(maps, 4, 4)
    expected = torch.nn.functional.interpolate(maps[None], size=(4, 4), mode="bilinear", align_corners=False)[0]
    assert torch.equal(out, expected)
    assert torch.equal(EvalFrame().maps(maps, 2, 2), maps)  # already in frame: untouched


@pytest.mark.parametrize(
    ("rule", "expected_pixels"),
    [("area>0.5", 1), ("area>0", 4), ("nearest", 1), ("bilinear>0.5", 1)],
)
def test_mask_resize_rules(tmp_path, rule, expected_pixels):
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True  # 3×3 block → at 4×4: one cell fully covered, three partially
    frame = EvalFrame.parse("4", rule)
    out = frame.masks([_sample(tmp_path, "a", 8, 8, mask)])
    assert out.shape == (1, 4, 4) and int(out.sum()) == expected_pixels
    assert frame.label == "4" and frame.mask_resize == rule


@pytest.mark.parametrize("bad", ["0", "-3", "big", "12.5"])
def test_bad_eval_size(bad):
    with pytest.raises(UserError, match="--eval-size"):
        EvalFrame.parse(bad)


def test_bad_mask_rule():
    with pytest.raises(UserError, match="--mask-resize"):
        EvalFrame.parse("64", "cubic")


def _category(tmp_path: Path, side: int) -> list[Sample]:
    """Two anomalous images (one region each) and two normal ones, ``side`` px square."""
    masks = [np.zeros((side, side), bool) for _ in range(2)]
    masks[0][1:4, 2:6] = True
    masks[1][5:, :3] = True
    samples = [_sample(tmp_path, f"d{i}", side, side, m) for i, m in enumerate(masks)]
    return samples + [_sample(tmp_path, f"n{i}", side, side, None) for i in range(2)]


def test_score_category_scores_pixels_only_with_pixel_ground_truth(tmp_path):
    samples = _category(tmp_path, 8)
    scores, maps = torch.tensor([0.9, 0.2, 0.4, 0.1]), torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(0))
    with_masks = CategoryTruth.load(EvalFrame(), samples, has_masks=True)
    assert with_masks.labels.tolist() == [1, 1, 0, 0] and with_masks.regions.num_regions == 2
    result = score_category(with_masks, scores, maps)
    assert tuple(result) == IMAGE_METRICS + PIXEL_METRICS + REGION_METRICS
    reference = evaluate(scores, with_masks.labels, maps, with_masks.masks)  # regions labelled inside evaluate
    assert dict(result) == dict(reference)
    assert result["I-AUROC"] == roc_auc_score([1, 1, 0, 0], scores.numpy()) == 0.75
    without = CategoryTruth.load(EvalFrame(), samples, has_masks=False)
    assert without.regions is None and tuple(score_category(without, scores, maps)) == IMAGE_METRICS


def test_score_maps_is_pixel_ap_against_resized_masks(tmp_path):
    samples = _category(tmp_path, 8)
    maps = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(1))  # continuous: no tied pixels
    masks = EvalFrame().masks(samples)
    values = score_maps(samples, maps, "bilinear>0.5")
    assert set(values) == set(PIXEL_METRICS + REGION_METRICS)
    assert values["P-AP"] == pytest.approx(average_precision_score(masks.ravel(), maps.numpy().ravel()), abs=1e-12)
    assert values["P-AUROC"] == pytest.approx(roc_auc_score(masks.ravel(), maps.numpy().ravel()), abs=1e-12)
    small = torch.rand(4, 4, 4, generator=torch.Generator().manual_seed(2))  # masks follow the maps' size
    want = EvalFrame(size=4, mask_resize="bilinear>0.5").masks(samples)
    got = score_maps(samples, small, "bilinear>0.5")["P-AP"]
    assert got == pytest.approx(average_precision_score(want.ravel(), small.numpy().ravel()), abs=1e-12)
