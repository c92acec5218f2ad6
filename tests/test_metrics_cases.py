"""Hand-checkable vectors (spec metrics.md §11), edge cases (§6), input handling and AUPRO-legacy (§3.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.test_metrics_references import sklearn_metrics, synthetic_category

from fsas_bench.metrics import (
    IMAGE_METRICS,
    LEGACY_AUPRO,
    PIXEL_METRICS,
    REGION_METRICS,
    GroundTruthRegions,
    MetricResults,
    evaluate,
)
from fsas_bench.metrics.legacy import aupro_legacy
from fsas_bench.metrics.ranking import partial_area, rank_scores

ALL = IMAGE_METRICS + PIXEL_METRICS + REGION_METRICS


def _f64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _assert_reasons_explain_exactly_the_nans(result: MetricResults) -> None:
    assert set(result.reasons) == {name for name, value in result.items() if math.isnan(value)}
    assert all(result.reasons.values())


# --- hand-checkable vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("fpr_limit", "expected"), [(0.3, 0.5), (0.6, 0.35 / 0.6), (1.0, 0.75)])
def test_one_image_of_four_pixels(fpr_limit: float, expected: float) -> None:
    maps, masks = np.array([[[0.9, 0.8, 0.3, 0.1]]]), np.array([[[1, 0, 1, 0]]])
    result = evaluate([0.5], [1], maps, masks, fpr_limit=fpr_limit)
    assert result["AUPRO"] == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(("limit", "expected"), [(0.3, 0.09), (1.0, 0.70), (0.2, 0.04), (0.1, 0.01)])
def test_trapezoid_with_interpolation_at_the_limit(limit: float, expected: float) -> None:
    x, y = _f64([0.0, 0.2, 0.4, 1.0]), _f64([0.0, 0.4, 0.8, 1.0])
    assert partial_area(x, y, limit) == pytest.approx(expected, abs=1e-15)


def test_vertical_segments_at_the_limit_add_nothing() -> None:
    x, y = _f64([0.0, 0.5, 0.5, 1.0]), _f64([0.0, 0.5, 1.0, 1.0])
    assert partial_area(x, y, 0.5) == pytest.approx(0.125, abs=1e-15)


@pytest.mark.parametrize(
    ("make_map", "expected"), [(lambda m: np.full(m.shape, 7.0), 0.15), (lambda m: m, 1.0), (lambda m: 1.0 - m, 0.0)]
)
def test_degenerate_maps(make_map, expected: float) -> None:  # noqa: ANN001
    scores, labels, _, masks = synthetic_category(4, n_images=6)
    maps = make_map((masks > 0).astype(np.float32))
    assert evaluate(scores, labels, maps, masks)["AUPRO"] == pytest.approx(expected, abs=1e-15)


def test_constant_map_gives_chance_auroc_prevalence_ap_and_its_f1() -> None:
    scores, labels, _, masks = synthetic_category(6, n_images=6)
    p = np.mean(masks > 0)
    result = evaluate(np.zeros(len(labels)), labels, np.full(masks.shape, -2.5, dtype=np.float32), masks)
    assert [result[m] for m in PIXEL_METRICS] == pytest.approx([0.5, p, 2 * p / (1 + p)], abs=1e-15)
    q = labels.mean()
    assert [result[m] for m in IMAGE_METRICS] == pytest.approx([0.5, q, 2 * q / (1 + q)], abs=1e-15)


def test_diagonal_pixels_are_one_region_under_8_and_two_under_4_connectivity() -> None:
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[1, 1, 1] = masks[1, 2, 2] = 255
    assert GroundTruthRegions.from_masks(masks).num_regions == 1
    assert GroundTruthRegions.from_masks(masks, connectivity=4).num_regions == 2
    regions = GroundTruthRegions.from_masks(masks)
    assert regions.defect_index.tolist() == [16 + 5, 16 + 10]
    assert regions.sizes.tolist() == [2]
    assert regions.num_normal_pixels == 30
    with pytest.raises(ValueError, match="connectivity must be 8 or 4"):
        GroundTruthRegions.from_masks(masks, connectivity=6)
    with pytest.raises(ValueError, match=r"N×H×W.*\(4, 4\)"):
        GroundTruthRegions.from_masks(masks[1])


def test_regions_are_numbered_across_images() -> None:
    masks = np.zeros((3, 3, 5), dtype=bool)
    masks[0, 0, 0] = masks[0, 2, 4] = True
    masks[2, 1, 1:4] = True
    regions = GroundTruthRegions.from_masks(torch.from_numpy(masks))
    assert regions.defect_region.tolist() == [0, 1, 2, 2, 2]
    assert regions.sizes.tolist() == [1, 1, 3]
    assert regions.pro_weights().tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 9, 1 / 9, 1 / 9], abs=1e-16)


# --- undefined and absent values --------------------------------------------------------------------------


def test_category_without_defects_is_nan_with_reasons() -> None:
    maps = np.random.default_rng(0).normal(size=(3, 5, 5)).astype(np.float32)
    result = evaluate([0.1, 0.4, 0.2], [0, 1, 0], maps, np.zeros((3, 5, 5)), legacy_aupro=True)
    assert list(result) == [*ALL, LEGACY_AUPRO]
    assert all(math.isnan(result[m]) for m in (*PIXEL_METRICS, *REGION_METRICS, LEGACY_AUPRO))
    assert "0 defect" in result.reasons["AUPRO"]
    _assert_reasons_explain_exactly_the_nans(result)


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_image_labels_are_nan_never_zero(label: int) -> None:
    scores, _, maps, masks = synthetic_category(1)
    result = evaluate(scores, np.full(len(scores), label), maps, masks)
    assert all(math.isnan(result[m]) for m in IMAGE_METRICS)
    assert not any(math.isnan(result[m]) for m in PIXEL_METRICS + REGION_METRICS)
    assert "single-class image labels" in result.reasons["I-AUROC"]
    _assert_reasons_explain_exactly_the_nans(result)


def test_dataset_without_masks_has_no_pixel_keys() -> None:
    scores, labels, *_ = synthetic_category(2)
    result = evaluate(scores, labels)
    assert list(result) == list(IMAGE_METRICS)
    assert result.reasons == {}
    assert result.metric_impl == dict.fromkeys(IMAGE_METRICS, "exact")


# --- inputs -----------------------------------------------------------------------------------------------


def test_masks_of_any_dtype_are_binarised_above_zero() -> None:
    scores, labels, maps, masks = synthetic_category(7, levels=16)
    reference = evaluate(scores, labels, maps, masks)
    variants = (masks > 0, (masks > 0) * 3, masks / 255.0, masks.astype(np.uint16) * 257, torch.from_numpy(masks))
    for variant in variants:
        assert evaluate(scores, labels, maps, variant) == reference


def test_torch_and_numpy_inputs_agree_and_nothing_is_squashed() -> None:
    scores, labels, maps, masks = synthetic_category(8)
    reference = evaluate(scores, labels, maps, masks)
    as_torch = evaluate(*(torch.from_numpy(a) for a in (scores, labels, maps, masks)))
    shifted = evaluate(scores * 1024 - 5e4, labels, maps.astype(np.float64) * 1024 + 1e6, masks)  # exact, increasing
    assert as_torch == reference
    assert list(shifted.values()) == pytest.approx(list(reference.values()), abs=1e-15)


def test_float16_maps_are_ranked_without_loss() -> None:
    scores, labels, maps, masks = synthetic_category(9)
    half = maps.astype(np.float16)
    result = evaluate(scores, labels, half, masks)
    assert result == evaluate(scores, labels, half.astype(np.float32), masks)
    expected = sklearn_metrics(half.ravel(), masks.ravel() > 0)
    assert [result[m] for m in PIXEL_METRICS] == pytest.approx(expected, abs=1e-12)


def test_cached_regions_replace_the_masks() -> None:
    scores, labels, maps, masks = synthetic_category(10)
    regions = GroundTruthRegions.from_masks(masks)
    reference = evaluate(scores, labels, maps, masks)
    assert evaluate(scores, labels, maps, masks, regions=regions) == reference
    assert evaluate(scores, labels, maps, regions=regions) == reference


def _bad_inputs() -> dict[str, tuple[dict, str]]:
    scores, labels, maps, masks = synthetic_category(0)
    nan_map, inf_score, bad_label = maps.copy(), scores.copy(), labels.copy()
    nan_map[3, 2, 1] = np.nan
    inf_score[2] = np.inf
    bad_label[1] = 2
    ok = {"image_scores": scores, "image_labels": labels, "anomaly_maps": maps, "masks": masks}
    return {
        "fewer masks": ({**ok, "masks": masks[:4]}, r"sample 4 has no mask.*\(5, 10, 12\).*\(4, 10, 12\)"),
        "mask size": ({**ok, "masks": masks[:, :, :11]}, r"sample 0.*\(10, 12\).*\(10, 11\)"),
        "NaN in a map": ({**ok, "anomaly_maps": nan_map}, r"anomaly_maps\[3\] contains NaN or inf.*\(5, 10, 12\)"),
        "inf score": ({**ok, "image_scores": inf_score}, r"image_scores\[2\] contains NaN or inf"),
        "label 2": ({**ok, "image_labels": bad_label}, r"image_labels\[1\] = 2 is not 0 or 1"),
        "fewer scores": ({**ok, "image_scores": scores[:4], "image_labels": labels[:4]}, "sample 4 has no image score"),
        "score/label length": ({**ok, "image_labels": labels[:4]}, r"shapes \(5,\) and \(4,\)"),
        "2-D maps": ({**ok, "anomaly_maps": maps[0]}, r"N×H×W.*\(10, 12\)"),
        "maps only": ({**ok, "masks": None}, "without masks"),
        "masks only": ({**ok, "anomaly_maps": None}, "without anomaly_maps"),
        "regions shape": (
            {**ok, "regions": GroundTruthRegions.from_masks(masks[:, :9])}, r"regions.*\(5, 9, 12\).*\(5, 10, 12\)"
        ),
        "fpr_limit": ({**ok, "fpr_limit": 0.0}, r"fpr_limit must be in \(0, 1\]"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_inputs_raise_value_errors_naming_sample_and_shapes(case: str) -> None:
    kwargs, message = _bad_inputs()[case]
    with pytest.raises(ValueError, match=message):
        evaluate(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_agrees_with_cpu() -> None:
    scores, labels, maps, masks = synthetic_category(12, n_images=8, shape=(32, 32))
    reference = evaluate(scores, labels, maps, masks, legacy_aupro=True)
    cuda = evaluate(
        torch.from_numpy(scores).cuda(), torch.from_numpy(labels).cuda(), torch.from_numpy(maps).cuda(),
        torch.from_numpy(masks).cuda(), legacy_aupro=True,
    )  # fmt: skip
    assert list(cuda.values()) == pytest.approx(list(reference.values()), abs=1e-12)


# --- AUPRO-legacy -----------------------------------------------------------------------------------------

# One row: pixel p scores p; regions {7, 8} and {3}; the six other pixels are defect-free.
LEGACY_MAPS = np.arange(9, dtype=np.float32).reshape(1, 1, 9)
LEGACY_MASKS = np.array([[[0, 0, 0, 1, 0, 0, 0, 1, 1]]])


def _ranked_legacy_case():  # noqa: ANN202
    regions = GroundTruthRegions.from_masks(LEGACY_MASKS)
    return rank_scores(torch.from_numpy(LEGACY_MAPS).reshape(-1), regions.defect_index, regions.pro_weights())


@pytest.mark.parametrize(("fpr_limit", "expected"), [(0.6, 7 / 12), (1.0, 0.75)])
def test_legacy_by_hand_with_four_steps(fpr_limit: float, expected: float) -> None:
    # thresholds 0, 2, 4, 6 (score > t): (FPR, PRO) = (5/6, 1), (1/2, 1), (1/3, 1/2), (0, 1/2)
    value, reason = aupro_legacy(_ranked_legacy_case(), fpr_limit, steps=4)
    assert (value, reason) == (pytest.approx(expected, abs=1e-15), None)


def test_legacy_needs_two_points_below_the_limit() -> None:
    value, reason = aupro_legacy(_ranked_legacy_case(), 0.3, steps=4)
    assert math.isnan(value) and "fewer than two" in reason


@pytest.mark.parametrize(("fpr_limit", "expected"), [(0.3, 0.5), (0.6, 0.5), (1.0, 0.7)])
def test_legacy_by_hand_with_200_steps(fpr_limit: float, expected: float) -> None:
    result = evaluate([1.0], [1], LEGACY_MAPS, LEGACY_MASKS, fpr_limit=fpr_limit, legacy_aupro=True)
    assert result[LEGACY_AUPRO] == pytest.approx(expected, abs=1e-15)
    assert result.metric_impl[LEGACY_AUPRO] == "legacy_cflow" and result.metric_impl["AUPRO"] == "exact"


def test_legacy_is_nan_on_a_constant_map_where_exact_aupro_is_defined() -> None:
    scores, labels, _, masks = synthetic_category(5)
    result = evaluate(scores, labels, np.ones(masks.shape, np.float32), masks, legacy_aupro=True)
    assert result["AUPRO"] == pytest.approx(0.15, abs=1e-15)
    assert math.isnan(result[LEGACY_AUPRO]) and "constant" in result.reasons[LEGACY_AUPRO]
    _assert_reasons_explain_exactly_the_nans(result)
