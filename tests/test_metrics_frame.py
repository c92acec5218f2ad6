"""The shared evaluation frame: map resizing and the recorded mask-resize rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError
from fsas_bench.evaluation import EvalFrame


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
