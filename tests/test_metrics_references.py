"""Independent references for the metric tests: a fixture generator and definition-level AUPRO / sklearn metrics.

Nothing here uses ``fsas_bench.metrics``: the AUPRO reference loops over every distinct threshold,
labels regions with scipy and integrates the (FPR, PRO) points literally (spec metrics.md §2.6).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

EIGHT = np.ones((3, 3), dtype=int)
FOUR = ndimage.generate_binary_structure(2, 1)


def synthetic_category(
    seed: int, n_images: int = 5, shape: tuple[int, int] = (10, 12), levels: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image scores, labels, float32 maps and 0/255 uint8 masks of a small random category.

    Image 0 is normal and image 1 defective; the others are defective with probability 0.6. Defects are
    ellipses, rectangles, single pixels and diagonal pixel pairs. Maps are smoothed noise plus a smoothed
    mask × strength, shifted and scaled outside [0, 1]; ``levels`` quantises maps and scores (heavy ties).
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n_images, h, w), dtype=np.uint8)
    for i in range(1, n_images):
        if i > 1 and rng.random() < 0.4:
            continue
        for _ in range(rng.integers(1, 3)):
            cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, h / 3), rng.uniform(0.5, w / 3)
            kind = rng.integers(4)
            if kind == 0:
                masks[i][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 255
            elif kind == 1:
                masks[i][(abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)] = 255
            elif kind == 2:
                masks[i, int(cy), int(cx)] = 255
            else:
                y, x = int(cy) % (h - 1), int(cx) % (w - 1)
                masks[i, y, x] = masks[i, y + 1, x + 1] = 255
    noise = ndimage.gaussian_filter(rng.standard_normal((n_images, h, w)), (0, 1, 1))
    signal = ndimage.gaussian_filter(masks / 255.0, (0, 1, 1)) * rng.uniform(0.2, 1.5)
    maps = (noise + signal) * 7 - 3
    scores = maps.reshape(n_images, -1).max(axis=1) + rng.normal(0, 0.5, n_images)
    if levels is not None:
        lo, hi = maps.min(), maps.max()
        maps = np.round((maps - lo) / (hi - lo) * (levels - 1)) - 2
        scores = np.round(scores * levels / (scores.max() - scores.min()))
    labels = masks.reshape(n_images, -1).any(axis=1).astype(np.int64)
    return scores, labels, maps.astype(np.float32), masks


def brute_force_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float, structure: np.ndarray = EIGHT) -> float:
    """AUPRO by its definition: every distinct score a threshold (score >= t), regions counted equally."""
    regions = []
    for i, mask in enumerate(masks):
        labelled, n = ndimage.label(mask > 0, structure=structure)
        regions += [(i, labelled == r) for r in range(1, n + 1)]
    normal = masks == 0
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        predicted = maps >= t
        fpr = np.sum(predicted & normal) / np.sum(normal)
        pro = np.mean([np.sum(predicted[i] & region) / np.sum(region) for i, region in regions])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_limit) / 2
    return area / fpr_limit


def sklearn_metrics(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """AUROC, AP and F1-max (max of 2PR/(P+R) over the PR curve, NaN dropped) by scikit-learn."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return roc_auc_score(labels, scores), average_precision_score(labels, scores), float(np.nanmax(f1))


@pytest.mark.parametrize(("fpr_limit", "expected"), [(0.3, 0.5), (0.6, 0.35 / 0.6), (1.0, 0.75)])
def test_brute_force_reproduces_the_spec_vector(fpr_limit: float, expected: float) -> None:
    maps = np.array([[[0.9, 0.8, 0.3, 0.1]]])
    masks = np.array([[[1, 0, 1, 0]]])
    assert brute_force_aupro(maps, masks, fpr_limit) == pytest.approx(expected, abs=1e-15)


def test_synthetic_category_has_both_classes_ties_and_tiny_regions() -> None:
    scores, labels, maps, masks = synthetic_category(3, n_images=12, levels=8)
    assert labels[0] == 0 and labels[1] == 1
    assert len(np.unique(maps)) <= 8 and len(np.unique(scores)) < len(scores)
    assert maps.min() < 0 and maps.max() > 1
    sizes = [np.bincount(ndimage.label(m > 0, structure=EIGHT)[0].ravel())[1:] for m in masks]
    assert min(s.min() for s in sizes if s.size) <= 2
