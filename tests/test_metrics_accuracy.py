"""Exactness against independent references: scikit-learn, the pairwise AUROC, a per-threshold AUPRO."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from tests.test_metrics_references import FOUR, brute_force_aupro, sklearn_metrics, synthetic_category

from fsas_bench.metrics import IMAGE_METRICS, PIXEL_METRICS, GroundTruthRegions, evaluate

TOL = 1e-12


def _random_scores(seed: int, n: int, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores far outside [0, 1] (optionally quantised to ``levels`` values) and ~30 % positive labels."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    labels[:2] = (0, 1)
    scores = rng.normal(labels * 0.8, 1.0) * 50 - 20
    if levels is not None:
        scores = np.floor((scores - scores.min()) / np.ptp(scores) * (levels - 0.5))
    return scores, labels


@pytest.mark.parametrize(("seed", "levels"), list(itertools.product(range(4), [None, 8, 64])))
def test_image_metrics_match_sklearn(seed: int, levels: int | None) -> None:
    scores, labels = _random_scores(seed, 300, levels)
    result = evaluate(scores, labels)
    assert [result[m] for m in IMAGE_METRICS] == pytest.approx(sklearn_metrics(scores, labels), abs=TOL)
    assert result.reasons == {}


@pytest.mark.parametrize(("seed", "levels"), list(itertools.product(range(3), [None, 8, 64])))
def test_pixel_metrics_match_sklearn(seed: int, levels: int | None) -> None:
    scores, labels, maps, masks = synthetic_category(seed, n_images=8, shape=(16, 20), levels=levels)
    result = evaluate(scores, labels, maps, masks)
    expected = sklearn_metrics(maps.ravel(), masks.ravel() > 0)
    assert [result[m] for m in PIXEL_METRICS] == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_and_signed_zero_ties(dtype: type) -> None:
    scores = np.array([0.0, -0.0, 0.0, -0.0, 1e-30, -1e-30, 3.0, -3.0], dtype=dtype)
    labels = np.array([1, 0, 0, 1, 1, 0, 1, 0])
    result = evaluate(scores, labels)
    assert [result[m] for m in IMAGE_METRICS] == pytest.approx(sklearn_metrics(scores, labels), abs=TOL)


@pytest.mark.parametrize("seed", range(3))
def test_auroc_is_the_pairwise_probability(seed: int) -> None:
    scores, labels = _random_scores(seed, 60, 6)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert evaluate(scores, labels)["I-AUROC"] == pytest.approx(pairwise, abs=1e-15)


@pytest.mark.parametrize(
    ("seed", "levels", "fpr_limit"), list(itertools.product(range(4), [None, 8], [0.05, 0.3, 1.0]))
)
def test_aupro_matches_the_per_threshold_definition(seed: int, levels: int | None, fpr_limit: float) -> None:
    scores, labels, maps, masks = synthetic_category(seed, levels=levels)
    result = evaluate(scores, labels, maps, masks, fpr_limit=fpr_limit)
    assert result["AUPRO"] == pytest.approx(brute_force_aupro(maps, masks, fpr_limit), abs=TOL)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_with_four_connectivity_matches_the_definition(fpr_limit: float) -> None:
    scores, labels, maps, masks = synthetic_category(11, levels=16)
    regions = GroundTruthRegions.from_masks(masks, connectivity=4)
    result = evaluate(scores, labels, maps, masks, fpr_limit=fpr_limit, regions=regions)
    assert result["AUPRO"] == pytest.approx(brute_force_aupro(maps, masks, fpr_limit, FOUR), abs=TOL)


@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_of_tiny_and_diagonal_regions_with_constant_and_defect_free_images(fpr_limit: float) -> None:
    rng = np.random.default_rng(5)
    masks = np.zeros((4, 6, 6), dtype=bool)
    masks[1, 0, 0] = masks[1, 1, 1] = masks[1, 2, 2] = True  # one diagonal region under 8-connectivity
    masks[1, 4, 5] = True  # a single pixel
    masks[2, 3, 1:5] = True  # a 1-pixel line
    maps = rng.integers(0, 5, masks.shape).astype(np.float32) + masks
    maps[3] = 2.0  # a constant, defect-free image
    labels = masks.any(axis=(1, 2)).astype(int)
    result = evaluate(labels + 0.5, labels, maps, masks, fpr_limit=fpr_limit)
    assert result["AUPRO"] == pytest.approx(brute_force_aupro(maps, masks, fpr_limit), abs=TOL)


def test_pixel_metrics_reach_the_curve_chunk_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts are read in chunks of thresholds; tiny chunks must give the same exact values."""
    import fsas_bench.metrics.functional as functional

    scores, labels, maps, masks = synthetic_category(2, n_images=6, shape=(12, 12))
    expected = evaluate(scores, labels, maps, masks, fpr_limit=0.3)
    monkeypatch.setattr(functional, "_CHUNK", 3)
    chunked = evaluate(scores, labels, maps, masks, fpr_limit=0.3)
    assert list(chunked.values()) == pytest.approx(list(expected.values()), abs=TOL)
    assert chunked["AUPRO"] == pytest.approx(brute_force_aupro(maps, masks, 0.3), abs=TOL)
