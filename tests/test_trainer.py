"""The one quiet Lightning Trainer factory: device placement, the warning filter, the trainer's settings."""

from __future__ import annotations

import warnings

import pytest
import torch

from fsas_bench.trainer import QUIET_WARNINGS, device_placement, quiet_trainer, quiet_warnings


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cpu", {"accelerator": "cpu", "devices": 1}),
        (torch.device("cpu"), {"accelerator": "cpu", "devices": 1}),
        ("cuda", {"accelerator": "gpu", "devices": [0]}),
        ("cuda:3", {"accelerator": "gpu", "devices": [3]}),
        (torch.device("cuda", 2), {"accelerator": "gpu", "devices": [2]}),
        (torch.device("cuda"), {"accelerator": "gpu", "devices": [0]}),
    ],
)
def test_device_placement_one_rule_for_strings_and_devices(device: object, expected: dict) -> None:
    assert device_placement(device) == expected


def test_quiet_warnings_silences_only_the_listed_noise_and_restores_filters() -> None:
    noise = [
        "The 'train_dataloader' does not have many workers which may be a bottleneck.",
        "Your `IterableDataset` has `__len__` defined.",
        "`isinstance(treespec, LeafSpec)` is deprecated, use `treespec.is_leaf()`",
        "Found 2 module(s) in eval mode at the start of training.",
    ]
    assert len(noise) == len(QUIET_WARNINGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_warnings():
            for message in noise:
                warnings.warn(message, UserWarning, stacklevel=1)
            warnings.warn("a warning a user can act on", UserWarning, stacklevel=1)
        warnings.warn(noise[0], UserWarning, stacklevel=1)  # the filter ends with the block
    assert [str(w.message) for w in caught] == ["a warning a user can act on", noise[0]]


def test_quiet_trainer_is_single_device_silent_and_takes_options() -> None:
    trainer = quiet_trainer("cpu", max_epochs=3, limit_train_batches=2)
    assert trainer.max_epochs == 3 and trainer.limit_train_batches == 2
    assert trainer.num_devices == 1 and trainer.logger is None
    assert trainer.checkpoint_callback is None and trainer.progress_bar_callback is None
    assert not any(type(c).__name__ == "ModelSummary" for c in trainer.callbacks)
