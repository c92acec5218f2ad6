"""ROC and PRO curves for drawing: exact vertices checked against scikit-learn and a brute-force PRO, then the
downsampling's properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score, roc_curve

from fsas_bench.metrics import GroundTruthRegions, evaluate
from fsas_bench.metrics.curves import curves, downsample
from fsas_bench.metrics.ranking import partial_area


def _points(x: np.ndarray, y: np.ndarray) -> set[tuple[float, float]]:
    return {(round(a, 12), round(b, 12)) for a, b in zip(x, y)}


def _category(seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scores, labels, maps and masks of 12 images of 16×16 with blob defects (rounded scores give ties)."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 6 + [1] * 6)
    masks = np.zeros((12, 16, 16), dtype=bool)
    for i in range(6, 12):
        for _ in range(rng.integers(1, 3)):
            r, c = rng.integers(0, 12, size=2)
            masks[i, r : r + rng.integers(1, 5), c : c + rng.integers(1, 5)] = True
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    scores = rng.normal(size=12) + labels
    if ties:
        maps, scores = maps.round(1), scores.round(1)
    return scores, labels, maps.astype(np.float32), masks


@pytest.mark.parametrize("ties", [False, True])
def test_roc_vertices_are_sklearn_points_with_its_area(ties: bool) -> None:
    scores, labels, maps, masks = _category(0, ties)
    found = curves(scores, labels, maps, GroundTruthRegions.from_masks(masks), max_points=None)
    for name, (s, y) in {"I-ROC": (scores, labels), "P-ROC": (maps.ravel(), masks.ravel())}.items():
        x, tpr = found[name]
        fpr_ref, tpr_ref, _ = roc_curve(y, s, drop_intermediate=False)
        assert _points(x, tpr) <= _points(fpr_ref, tpr_ref) | {(0.0, 0.0), (1.0, 1.0)}
        assert _on_polyline(x, tpr, fpr_ref, tpr_ref)  # every threshold's point is on the drawn curve
        assert np.trapezoid(tpr, x) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def _brute_force_pro(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct score, from the definition: mean overlap of the labelled regions."""
    labelled = [ndimage.label(m, structure=np.ones((3, 3)))[0] for m in masks]
    regions = [(i, lab == r) for i, lab in enumerate(labelled) for r in range(1, lab.max() + 1)]
    fpr, pro = [], []
    for t in np.unique(maps)[::-1]:
        hot = maps >= t
        fpr.append((hot & ~masks).sum() / (~masks).sum())
        pro.append(np.mean([(hot[i] & region).sum() / region.sum() for i, region in regions]))
    return np.array(fpr), np.array(pro)


@pytest.mark.parametrize("ties", [False, True])
def test_pro_curve_matches_brute_force_and_aupro(ties: bool) -> None:
    scores, labels, maps, masks = _category(1, ties)
    regions = GroundTruthRegions.from_masks(masks)
    x, pro = curves(scores, labels, maps, regions, max_points=None)["PRO"]
    fpr_ref, pro_ref = _brute_force_pro(maps, masks)
    assert np.all(np.diff(x) >= 0)
    # Every threshold's point lies on the drawn polyline, and every vertex is such a point (or an end).
    assert _on_polyline(x, pro, fpr_ref, pro_ref)
    assert _points(x, pro) <= _points(fpr_ref, pro_ref) | {(0.0, 0.0), (1.0, 1.0)}
    area = partial_area(torch.from_numpy(x), torch.from_numpy(pro), 0.3) / 0.3
    assert area == pytest.approx(evaluate(scores, labels, maps, masks)["AUPRO"], abs=1e-12)


def _on_polyline(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray) -> bool:
    """Points on a polyline with vertical steps (several y at one x): each lies between the y values at its x."""
    for a, b in zip(px, py):
        at = y[np.isclose(x, a)]
        if at.size == 0:
            if not np.isclose(np.interp(a, x, y), b):
                return False
        elif not at.min() - 1e-9 <= b <= at.max() + 1e-9:
            return False
    return True


def test_single_class_gives_no_curve() -> None:
    scores, _, maps, masks = _category(2, False)
    found = curves(scores, np.ones(12, dtype=int), maps, GroundTruthRegions.from_masks(np.zeros_like(masks)))
    assert found == {}
    assert set(curves(scores, np.arange(12) % 2)) == {"I-ROC"}  # no maps: image level only


def test_downsample_keeps_ends_and_own_vertices() -> None:
    rng = np.random.default_rng(3)
    scores, labels = rng.normal(size=20000), rng.integers(0, 2, size=20000)
    x, y = curves(scores + labels, labels, max_points=None)["I-ROC"]
    dx, dy = downsample(x, y, 300)
    assert len(dx) == 300 and len(x) > 300
    assert (dx[0], dy[0], dx[-1], dy[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert _points(dx, dy) <= _points(x, y)
    assert np.all(np.diff(dx) >= 0) and np.all(np.diff(dy) >= 0)
    assert np.trapezoid(dy, dx) == pytest.approx(np.trapezoid(y, x), abs=2e-3)
    assert downsample(x[:10], y[:10], 300)[0].tolist() == x[:10].tolist()
    drawn = curves(scores + labels, labels)["I-ROC"]  # default: a few thousand thresholds, then 300 vertices
    fpr_ref, tpr_ref, _ = roc_curve(labels, scores + labels, drop_intermediate=False)
    assert len(drawn[0]) == 300 and _points(*drawn) <= _points(fpr_ref, tpr_ref) | {(0.0, 0.0)}  # exact points
    assert np.trapezoid(drawn[1], drawn[0]) == pytest.approx(np.trapezoid(y, x), abs=2e-3)
    with pytest.raises(ValueError, match="at least 2"):
        downsample(x, y, 1)
