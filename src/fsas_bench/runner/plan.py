"""The plan of a sweep: everything its tasks need, computed once by the driver, picklable, no model inside.

A :class:`SweepPlan` lists the cells with their job ids, the method configs and shot manifests, the auxiliary
training jobs (each trained by exactly one task, before the units that need it) and the **units** of evaluation
work: one (dataset, category) with all its cells, so that every image of a unit is encoded once whatever the
number of methods, shots and seeds. Executors (``runner/executors.py``) run the plan's tasks in-process or on
a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.manifests import ShotManifest, support_samples
from fsas_bench.data.sample import Sample
from fsas_bench.methods.base import MethodConfig
from fsas_bench.runner.grid import Cell
from fsas_bench.runner.training import TrainJob

if TYPE_CHECKING:
    from fsas_bench.runner.sweep import SweepSpec


@dataclass(frozen=True)
class Unit:
    """One (dataset, category): the unit of evaluation work; its cells share one feature cache."""

    dataset: str
    category: str
    cells: tuple[Cell, ...]

    @property
    def name(self) -> str:
        """``dataset/category``."""
        return f"{self.dataset}/{self.category}"

    @property
    def manifest_keys(self) -> tuple[tuple[str, int, int | str], ...]:
        """The (dataset, k, seed) of each shot manifest the unit's cells read, once each, in cell order."""
        return tuple(dict.fromkeys((c.dataset, c.shot, c.seed) for c in self.cells))


def category_samples(index: DatasetIndex, category: str, manifests: Iterable[ShotManifest]) -> list[Sample]:
    """Every image a unit of ``category`` reads, once, in a fixed order: the test split, then the references of
    each manifest in turn (what is decoded in preflight and encoded ahead)."""
    found = {s.image_path: s for s in index.split(category, "test")}
    for manifest in manifests:
        for sample in support_samples(manifest, index, category):
            found.setdefault(sample.image_path, sample)
    return list(found.values())


@dataclass(frozen=True)
class BackboneInfo:
    """What rows and job ids say of the backbone (the model itself is loaded by each worker)."""

    arch: str
    pretrained: str
    image_size: int
    identity: str
    precision: str


@dataclass(frozen=True)
class Training:
    """One auxiliary checkpoint to train, and the cells that evaluate it.

    Attributes:
        job: what determines the checkpoint.
        dataset: the evaluation dataset whose method config trains it (the first that needs it).
        users: job ids of the cells that evaluate the checkpoint.
    """

    job: TrainJob
    dataset: str
    users: tuple[str, ...]

    @property
    def task_id(self) -> str:
        """``train:<checkpoint path>``."""
        return f"train:{self.job.relative_path().as_posix()}"


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep as data: what to train, what to evaluate, in which units.

    Attributes:
        spec: the sweep options.
        cells: every cell, in execution order (dataset → category → method → shot → seed).
        job_ids: cell → job id (a hash of everything that determines its numbers).
        run_id: hash of all job ids.
        indexes / auxiliary_indexes: dataset name → index (evaluation and auxiliary training sets).
        manifests: (dataset, k, seed) → shot manifest.
        configs: (method, dataset) → the method config of the run.
        trainings: the auxiliary checkpoints to train, in order of first use.
        cell_jobs: job id → the training job whose checkpoint that cell evaluates.
        units: the units of evaluation work, in execution order.
        prefetch: the features each unit encodes ahead and any miss encodes together (the union every method
            of the sweep reads).
        backbone: arch, weights label, input size and identity of the backbone.
        threads: torch intra-op threads of every task (the same in every executor, so numbers are too).
    """

    spec: SweepSpec
    cells: tuple[Cell, ...]
    job_ids: dict[Cell, str]
    run_id: str
    indexes: dict[str, DatasetIndex]
    auxiliary_indexes: dict[str, DatasetIndex]
    manifests: dict[tuple[str, int, int | str], ShotManifest]
    configs: dict[tuple[str, str], MethodConfig]
    trainings: tuple[Training, ...]
    cell_jobs: dict[str, TrainJob]
    units: tuple[Unit, ...]
    prefetch: frozenset[str]
    backbone: BackboneInfo
    threads: int

    def unit_samples(self, unit: Unit) -> list[Sample]:
        """Every image ``unit`` reads (:func:`category_samples` of its cells' manifests)."""
        manifests = [self.manifests[key] for key in unit.manifest_keys]
        return category_samples(self.indexes[unit.dataset], unit.category, manifests)

    def unit_trainings(self, unit: Unit) -> list[Training]:
        """The trainings whose checkpoints the unit's cells evaluate (its dependencies)."""
        jobs = {self.cell_jobs.get(self.job_ids[c]) for c in unit.cells}
        return [t for t in self.trainings if t.job in jobs]

    def graph(self) -> dict[str, Any]:
        """The task graph as plain data (``fsas-bench plan --json``): every task with its dependencies and size,
        the width (most tasks that can run at once) and the depth (longest chain of dependent tasks)."""
        train = [
            {"id": t.task_id, "kind": "train", "method": t.job.method, "dataset": t.job.train_dataset,
             "seed": t.job.seed, "shot": t.job.shot, "images": len(self.auxiliary_indexes[t.job.train_dataset].samples),
             "cells": len(t.users), "after": []}
            for t in self.trainings
        ]  # fmt: skip
        units = [
            {"id": f"unit:{unit.name}", "kind": "unit", "method": "", "dataset": unit.dataset,
             "category": unit.category, "images": len(self.unit_samples(unit)), "cells": len(unit.cells),
             "after": [t.task_id for t in self.unit_trainings(unit)]}
            for unit in self.units
        ]  # fmt: skip
        return {
            "run_id": self.run_id,
            "cells": len(self.cells),
            "tasks": train + units,
            "width": max(len(train), len(units)),
            "depth": int(bool(train)) + int(bool(units)),
        }
