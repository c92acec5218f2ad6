"""The torchmetrics wrapper: batches, a simulated 2-process sync, and the same values as ``evaluate``."""

from __future__ import annotations

import math

import pytest
import torch
from tests.test_metrics_references import synthetic_category
from torchmetrics.utilities import dim_zero_cat

from fsas_bench.metrics import IMAGE_METRICS, LEGACY_AUPRO, AnomalyMetrics, MetricResults, evaluate


def _category(seed: int = 0) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a) for a in synthetic_category(seed, n_images=9, shape=(12, 12), levels=32))


def _feed(metric: AnomalyMetrics, data: tuple[torch.Tensor, ...], batch: int, pixels: bool = True) -> None:
    for start in range(0, len(data[0]), batch):
        chunk = [a[start : start + batch] for a in data]
        metric.update(*(chunk if pixels else chunk[:2]))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], abs=1e-15) for k in a
    )


@pytest.mark.parametrize("batch", [1, 4, 9])
def test_batches_give_the_values_of_one_evaluate_call(batch: int) -> None:
    data = _category()
    metric = AnomalyMetrics(fpr_limit=0.2, legacy_aupro=True)
    _feed(metric, data, batch)
    result = metric.compute()
    assert isinstance(result, MetricResults)
    assert _same(result, evaluate(*data, fpr_limit=0.2, legacy_aupro=True))
    assert LEGACY_AUPRO in result


def test_image_only_metric() -> None:
    data = _category(1)
    metric = AnomalyMetrics()
    _feed(metric, data, 4, pixels=False)
    assert _same(metric.compute(), evaluate(data[0], data[1]))
    assert list(metric.compute()) == list(IMAGE_METRICS)


def test_reasons_survive_compute() -> None:
    scores, labels, maps, masks = _category(2)
    metric = AnomalyMetrics()
    metric.update(scores, torch.ones_like(labels), maps, masks)
    result = metric.compute()
    assert math.isnan(result["I-AUROC"]) and "single-class" in result.reasons["I-AUROC"]


def test_states_are_concatenated_by_a_two_process_sync() -> None:
    """Run torchmetrics' own sync with an all-gather that returns this process's state and the other's."""
    data = _category(3)
    first, second = AnomalyMetrics(sync_on_compute=False), AnomalyMetrics(sync_on_compute=False)
    _feed(first, [a[:5] for a in data], 2)
    _feed(second, [a[5:] for a in data], 3)
    assert all(reduce is dim_zero_cat for reduce in first._reductions.values())
    other_states = iter([dim_zero_cat(state) for state in second.metric_state.values()])

    def all_gather(tensor: torch.Tensor, group: object = None) -> list[torch.Tensor]:
        return [tensor, next(other_states)]

    first.sync(dist_sync_fn=all_gather, distributed_available=lambda: True)
    assert next(other_states, None) is None
    assert isinstance(first.anomaly_maps, torch.Tensor) and len(first.anomaly_maps) == len(data[0])
    assert _same(first.compute(), evaluate(*data))


def test_merged_states_give_the_values_of_all_samples() -> None:
    data = _category(4)
    first, second = AnomalyMetrics(), AnomalyMetrics()
    _feed(first, [a[:4] for a in data], 3)
    _feed(second, [a[4:] for a in data], 2)
    first.merge_state(second)
    assert _same(first.compute(), evaluate(*data))


def test_update_validates_each_batch() -> None:
    scores, labels, maps, masks = _category(5)
    metric = AnomalyMetrics()
    with pytest.raises(ValueError, match=r"anomaly_maps\[0\] contains NaN"):
        metric.update(scores[:2], labels[:2], torch.full_like(maps[:2], float("nan")), masks[:2])
    with pytest.raises(ValueError, match="both anomaly_maps and masks"):
        metric.update(scores, labels, maps)
    with pytest.raises(ValueError, match="connectivity"):
        AnomalyMetrics(connectivity=6)


def test_states_hold_float_maps_and_bool_masks() -> None:
    scores, labels, maps, masks = _category(6)
    metric = AnomalyMetrics()
    metric.update(scores, labels, maps.half(), masks * 255)
    assert metric.anomaly_maps[0].dtype == torch.float32 and metric.masks[0].dtype == torch.bool
    assert _same(metric.compute(), evaluate(scores, labels, maps.half(), masks))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metric_on_cuda() -> None:
    data = _category(7)
    metric = AnomalyMetrics().cuda()
    _feed(metric, [a.cuda() for a in data], 4)
    result = metric.compute()
    assert list(result.values()) == pytest.approx(list(evaluate(*data).values()), abs=1e-12)


def test_numpy_batches_are_accepted() -> None:
    scores, labels, maps, masks = synthetic_category(8)
    metric = AnomalyMetrics()
    metric.update(scores, labels, maps, masks)
    assert isinstance(metric.image_scores[0], torch.Tensor)
    assert _same(metric.compute(), evaluate(scores, labels, maps, masks))
