"""The plan of a sweep: everything its tasks need, computed once by the driver, picklable, no model inside.

A :class:`SweepPlan` lists the cells with their job ids, the method configs and shot manifests, the auxiliary
training jobs (each trained by exactly one task, before the units that need it) and the **units** of evaluation
work: one (dataset, category) with all its cells, so that every image of a unit is encoded once whatever the
number of methods, shots and seeds. Executors (``runner/executors.py``) run the plan's tasks in-process or on
a Ray cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.manifests import ShotManifest, support_samples
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
        prefetch: features encoded together on any miss (the union every method of the sweep reads).
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

    def images(self, unit: Unit) -> int:
        """Distinct images a unit reads (its test split and every reference of its manifests)."""
        index = self.indexes[unit.dataset]
        paths = {s.image_path for s in index.split(unit.category, "test")}
        for (dataset, _, _), manifest in self.manifests.items():
            if dataset == unit.dataset:
                paths.update(s.image_path for s in support_samples(manifest, index, unit.category))
        return len(paths)

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
             "category": unit.category, "images": self.images(unit), "cells": len(unit.cells),
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
