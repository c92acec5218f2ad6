"""The runner's auxiliary-training DAG: one checkpoint per (config, auxiliary set, seed[, shot]), reused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
import torch

from fsas_bench.errors import UserError
from fsas_bench.methods.base import FewShotMethod, MethodConfig, MethodOutput
from fsas_bench.methods.registry import _REGISTRY, register_method
from fsas_bench.runner.sweep import Sweep, SweepSpec

TRAINED: list[tuple[str, str, int]] = []


@dataclass(frozen=True)
class ToyConfig(MethodConfig):
    epochs: int = 30

    @classmethod
    def for_dataset(cls, dataset: str) -> MethodConfig:
        return cls(epochs=1) if dataset.startswith("synthetic") else cls()


class ToyAuxiliary(FewShotMethod):
    """Scores every pixel with a constant learnt from the auxiliary set (enough to test the plumbing)."""

    name = "toy-aux"
    fit_scope = "auxiliary"
    config_cls = ToyConfig
    auxiliary_datasets = {"synthetic": "synthetic-aux"}

    @classmethod
    def feature_names(cls, config: ToyConfig, depth: int) -> list[str]:
        return ["embedding"]

    def __init__(self, config: ToyConfig, cache: Any) -> None:
        super().__init__(config, cache)
        self.level = torch.nn.Parameter(torch.zeros(()))

    def fit_auxiliary(self, auxiliary, target, shot) -> None:  # noqa: ANN001
        TRAINED.append((auxiliary.name, target.name, shot))
        with torch.no_grad():
            self.level.fill_(len(auxiliary.categories) + torch.rand(()).item())

    def set_support(self, batches: list[dict[str, Any]], category: str) -> None:
        pass

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> MethodOutput:
        n = len(batch["sha"])
        maps = self.level.detach().expand(n, 8, 8).clone() + torch.arange(n).view(n, 1, 1)
        return MethodOutput(anomaly_maps=maps, image_scores=maps.flatten(1).amax(1))


@pytest.fixture
def toy_method():
    register_method(ToyAuxiliary)
    TRAINED.clear()
    yield "toy-aux"
    del _REGISTRY["toy-aux"]


@pytest.mark.slow
def test_one_checkpoint_per_seed_reused_across_categories_and_shots(tmp_path, toy_method):
    spec = SweepSpec(out=tmp_path, methods=(toy_method,), categories=("tile", "fabric"), shots=(1, 2), seeds=(0, 1))
    Sweep(spec).run()
    assert TRAINED == [("synthetic-aux", "synthetic", 0), ("synthetic-aux", "synthetic", 0)]  # seeds 0, 1
    rows = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert set(rows["train_dataset"]) == {"synthetic-aux"} and set(rows["train_seed"]) == {"0", "1"}
    assert set(rows["flags"]) == {"epochs=1"}  # the embedded schedule is recorded
    assert rows.groupby("train_seed")["checkpoint_sha"].nunique().eq(1).all()
    assert rows["checkpoint_sha"].nunique() == 2
    assert len(list((tmp_path / "checkpoints").rglob("*.safetensors"))) == 2
    Sweep(SweepSpec(out=tmp_path, methods=(toy_method,), categories=("hex_nut",), shots=(1,), seeds=(0,))).run()
    assert len(TRAINED) == 2  # the existing checkpoint is reused, not retrained
    again = tmp_path / "again"
    Sweep(SweepSpec(out=again, methods=(toy_method,), categories=("tile",), shots=(1,), seeds=(0, 1))).run()
    assert (again / "results.csv").read_text().count(rows["checkpoint_sha"].iloc[0]) > 0  # same weights, same sha


def test_per_shot_training(tmp_path, toy_method, monkeypatch):
    monkeypatch.setattr(ToyAuxiliary, "trains_per_shot", True)
    Sweep(SweepSpec(out=tmp_path, methods=(toy_method,), categories=("tile",), shots=(1, 2), seeds=(0,))).run()
    assert sorted(shot for _, _, shot in TRAINED) == [1, 2]


def test_training_on_the_evaluation_set_is_refused(tmp_path, toy_method, monkeypatch):
    monkeypatch.setattr(ToyAuxiliary, "auxiliary_datasets", {"*": "synthetic"})
    with pytest.raises(UserError, match="other than itself"):
        Sweep(SweepSpec(out=tmp_path, methods=(toy_method,), shots=(1,), seeds=(0,)))
    monkeypatch.setattr(ToyAuxiliary, "auxiliary_datasets", {"*": "visa"})
    with pytest.raises(UserError, match="dataset 'visa' is not available"):
        Sweep(SweepSpec(out=tmp_path, methods=(toy_method,), shots=(1,), seeds=(0,)))
    assert not tmp_path.joinpath("results.csv").exists()
