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

from fsas_bench.backbones import DEFAULT_PREPROCESS, Preprocess
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.manifests import ShotManifest, support_samples
from fsas_bench.data.sample import Sample
from fsas_bench.methods.base import QUERY, SUPPORT, MethodConfig
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


@dataclass(frozen=True)
class AheadEncode:
    """Features every unit encodes ahead in one preprocessing variant, for the images of the given roles.

    Attributes:
        variant: the preprocessing.
        names: the union of the features the sweep's methods read in it.
        roles: ``query`` (the test split) and/or ``support`` (the references).
    """

    variant: Preprocess
    names: frozenset[str]
    roles: frozenset[str]


def unit_samples(
    unit: Unit,
    indexes: dict[str, DatasetIndex],
    manifests: dict[tuple[str, int, int | str], ShotManifest],
    roles: Iterable[str] = (QUERY, SUPPORT),
) -> list[Sample]:
    """Every image of ``roles`` that ``unit`` reads, once, in a fixed order: the test split (queries), then the
    references of each of its cells' manifests in turn (what is decoded in preflight and encoded ahead)."""
    roles, index = set(roles), indexes[unit.dataset]
    found = {s.image_path: s for s in index.split(unit.category, "test")} if QUERY in roles else {}
    for key in unit.manifest_keys if SUPPORT in roles else ():
        for sample in support_samples(manifests[key], index, unit.category):
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
        ahead: the features each unit encodes ahead, per preprocessing variant (the default variant's names are
            also what any miss encodes together).
        backbone: arch, weights label, input size and identity of the backbone.
        threads: torch intra-op threads of every task (the same in every executor, so numbers are too).
        node_tasks: the most tasks one machine runs at once (1 locally; the Ray executor sets it from the
            cluster's nodes): the default feature memory budget is shared among them.
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
    ahead: tuple[AheadEncode, ...]
    backbone: BackboneInfo
    threads: int
    node_tasks: int = 1

    @property
    def prefetch(self) -> frozenset[str]:
        """The default variant's features: what a miss encodes together, so that each image goes through the
        backbone once per run however many methods read it."""
        return next((a.names for a in self.ahead if a.variant == DEFAULT_PREPROCESS), frozenset())

    def unit_samples(self, unit: Unit, roles: Iterable[str] = (QUERY, SUPPORT)) -> list[Sample]:
        """Every image of ``roles`` that ``unit`` reads (:func:`unit_samples`)."""
        return unit_samples(unit, self.indexes, self.manifests, roles)

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
