"""Run a sweep: plan → preflight → train → evaluate → merge.

:class:`Sweep` validates a :class:`SweepSpec` completely before anything is written (datasets, manifests, every
used image decoded, frame shapes, the backbone and every feature its methods read, the ``--out`` protocol),
and turns it into a :class:`~fsas_bench.runner.plan.SweepPlan`. :meth:`Sweep.run` records the run, hands the
plan to an executor (``local`` or ``ray``: training tasks first, then one task per (dataset, category) unit)
and merges the cell files into ``results.csv`` at the end, resumed runs included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fsas_bench.backbones import TINY_ARCH, load_backbone
from fsas_bench.backbones.clip import DEFAULT_PRECISION, check_device_precision
from fsas_bench.backbones.pipeline import EncodeSettings, default_encode_batch, default_workers
from fsas_bench.data.formats import verify_samples
from fsas_bench.data.manifests import ShotManifest, draw_manifest, import_shot_list, write_manifest
from fsas_bench.data.registry import default_datasets, load_dataset
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError
from fsas_bench.files import atomic_write_text, check_writable_dir
from fsas_bench.hashing import canonical_json, sha256_json
from fsas_bench.methods import get_method, list_methods
from fsas_bench.methods.base import with_overrides
from fsas_bench.metrics import AUPRO_FPR_LIMIT
from fsas_bench.metrics.frame import EvalFrame
from fsas_bench.names import child_path
from fsas_bench.options import check_device_name
from fsas_bench.progress import PhaseReporter
from fsas_bench.runner.executors import EXECUTORS, CellReporter, executor
from fsas_bench.runner.grid import Cell, expand_grid, job_id, numeric_seed
from fsas_bench.runner.identity import check_protocol, record_run
from fsas_bench.runner.plan import AheadEncode, BackboneInfo, SweepPlan, Training, Unit, unit_samples
from fsas_bench.runner.pictures import DEFAULT_EXAMPLES
from fsas_bench.runner.results import ResultStore
from fsas_bench.runner.tasks import CellOutcome
from fsas_bench.runner.training import ReferenceFits, TrainJob

PreflightReporter = Callable[[str, int, int], None]
"""Receives (what is checked, done, total) while a sweep is prepared."""


@dataclass(frozen=True)
class SweepSpec:
    """Everything a sweep depends on (the CLI's ``run`` options)."""

    out: Path
    methods: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    shots: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0, 1, 2)
    data_root: Path | None = None
    backbone: str = TINY_ARCH
    pretrained: str | None = None
    device: str = "cpu"
    batch_size: int = 8
    frame: EvalFrame = field(default_factory=EvalFrame)
    resume: bool = True
    feature_cache_dir: Path | None = None
    shot_lists: tuple[Path, ...] = ()  # fixed reference lists replacing the seeded draws
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # method → {config field: value text}
    mode: str = "benchmark"  # ``faithful``: each method's faithful preset where it has one
    allow_random_weights: bool = False  # Python API only: random weights for an upstream architecture
    reference_fits: Path | None = None  # committed checkpoints evaluated instead of any training (regress)
    executor: str = "local"  # or "ray" (see runner/executors.py)
    ray_address: str | None = None  # None: a local Ray instance
    save_examples: int = DEFAULT_EXAMPLES  # example images per category kept for the HTML report (0: no pictures)
    precision: str = DEFAULT_PRECISION  # autocast precision of the frozen backbone (fp32, bf16, fp16)
    encode_batch: int | None = None  # images per backbone forward when a unit is encoded ahead (None: by device)
    workers: int | None = None  # decode workers of the encode pipeline (None: from the CPU count)
    cache_memory: int | None = None  # most feature bytes in memory (None: a quarter of each node's); the rest spills

    @property
    def encode_settings(self) -> EncodeSettings:
        """The encode pipeline's settings, defaults resolved (see :mod:`fsas_bench.backbones.pipeline`)."""
        return EncodeSettings(self.encode_batch if self.encode_batch is not None else default_encode_batch(self.device),
                              self.workers if self.workers is not None else default_workers())  # fmt: skip


class Sweep:
    """A validated sweep. Construction does every check (UserError on bad input) and writes nothing.

    Args:
        spec: the sweep options.
        on_preflight: progress of the checks that take time (images decoded so far).
    """

    def __init__(self, spec: SweepSpec, on_preflight: PreflightReporter = lambda what, done, total: None) -> None:
        self.spec = spec
        if spec.batch_size < 1:
            raise UserError(f"--batch-size {spec.batch_size} is invalid: use a positive integer")
        if spec.executor not in EXECUTORS:
            raise UserError(f"--executor '{spec.executor}' is unknown: use one of {', '.join(EXECUTORS)}")
        if spec.save_examples < 0:
            raise UserError(f"--save-examples {spec.save_examples} is invalid: use 0 (no pictures) or more")
        if spec.cache_memory is not None and spec.cache_memory < 1:
            raise UserError(f"--cache-memory {spec.cache_memory} is invalid: use a positive number of bytes")
        spec.encode_settings  # noqa: B018  (checks --encode-batch and --workers)
        self.methods = {name: get_method(name) for name in (spec.methods or tuple(list_methods()))}
        names = spec.datasets or tuple(default_datasets(spec.data_root))
        self.indexes = {name: load_dataset(name, spec.data_root) for name in names}
        self.manifests = self._manifests()
        seeds = list(dict.fromkeys(seed for _, _, seed in self.manifests))
        self.cells = expand_grid(list(self.methods), list(self.indexes.values()), spec.categories, spec.shots, seeds)
        units = self._units()
        used = self._used_samples(units)
        verify_samples(used, on_checked=lambda done: on_preflight("decoding images", done, len(used)))
        for unit in units:  # native evaluation needs one image size per category
            spec.frame.frame_shape(self.indexes[unit.dataset].split(unit.category, "test"))
        _check_device(spec.device)
        check_device_precision(spec.device, spec.precision)
        self.backbone = load_backbone(
            spec.backbone, spec.pretrained, device=spec.device, allow_random=spec.allow_random_weights,
            precision=spec.precision,
        )
        self.configs = {
            (name, dataset): with_overrides(cls.config_cls.for_run(dataset, spec.mode), spec.overrides.get(name, {}))
            for name, cls in self.methods.items()
            for dataset in self.indexes
        }
        self.benchmark_only = sorted({name for (name, _), c in self.configs.items() if c.mode != spec.mode})
        """Methods without a preset of the requested mode (they run in benchmark mode; rows say so)."""
        ahead = self._ahead()
        self.auxiliary = {
            (name, dataset): cls.auxiliary_dataset(dataset)
            for name, cls in self.methods.items()
            if cls.fit_scope == "auxiliary"
            for dataset in self.indexes
        }
        auxiliary_indexes = {aux: load_dataset(aux, spec.data_root) for aux in set(self.auxiliary.values())}
        self.reference = None if spec.reference_fits is None else ReferenceFits(spec.reference_fits)
        cell_jobs = {cell: job for cell in self.cells if (job := self._train_job(cell)) is not None}
        job_ids = {cell: job_id(cell, **self._identity(cell, cell_jobs.get(cell))) for cell in self.cells}
        check_writable_dir(spec.out, "--out")
        if spec.feature_cache_dir is not None:
            check_writable_dir(spec.feature_cache_dir, "--feature-cache")
        check_protocol(spec.out, self.protocol)
        self.plan = SweepPlan(
            spec=spec,
            cells=tuple(self.cells),
            job_ids=job_ids,
            run_id=sha256_json(sorted(job_ids.values()))[:12],  # what is computed, not where or how batched
            indexes=self.indexes,
            auxiliary_indexes=auxiliary_indexes,
            manifests=self.manifests,
            configs=self.configs,
            trainings=_trainings(self.cells, cell_jobs, job_ids),
            cell_jobs={job_ids[cell]: job for cell, job in cell_jobs.items()},
            units=units,
            ahead=ahead,
            backbone=BackboneInfo(self.backbone.arch, self.backbone.pretrained, self.backbone.image_size,
                                  self.backbone.identity, self.backbone.precision),  # fmt: skip
            threads=torch.get_num_threads(),
        )

    @property
    def protocol(self) -> dict[str, object]:
        """What every run into one ``--out`` must share (see :mod:`fsas_bench.runner.identity`)."""
        return {"backbone": self.backbone.identity, "frame": asdict(self.spec.frame), "fpr_limit": AUPRO_FPR_LIMIT}

    def _manifests(self) -> dict[tuple[str, int, int | str], ShotManifest]:
        """(dataset, k, seed) → manifest: seeded draws, or the user's fixed lists (seed ``official``)."""
        spec = self.spec
        if not spec.shot_lists:
            return {
                (name, k, seed): draw_manifest(index, k, seed)
                for name, index in self.indexes.items()
                for k in spec.shots
                for seed in spec.seeds
            }
        if len(self.indexes) != 1:
            raise UserError("--shot-list applies to one dataset: pass exactly one name with --datasets")
        (name, index), = self.indexes.items()
        manifests: dict[tuple[str, int, int | str], ShotManifest] = {}
        given: dict[tuple[str, int, int | str], Path] = {}
        for path in spec.shot_lists:
            for manifest in import_shot_list(path, index, spec.shots):
                if manifest.k not in spec.shots:
                    continue
                key = (name, manifest.k, manifest.seed)
                if key in manifests:
                    raise UserError(f"--shot-list '{given[key]}' and '{path}' both give k={manifest.k} seed="
                                    f"{manifest.seed}: pass one list per shot count and seed")  # fmt: skip
                manifests[key], given[key] = manifest, path
        missing = sorted(set(spec.shots) - {k for _, k, _ in manifests})
        if missing:
            raise UserError(f"no --shot-list covers k={missing[0]}: pass a list for it or drop it from --shots")
        return manifests

    def _used_samples(self, units: tuple[Unit, ...]) -> list[Sample]:
        """Every image the units read, once."""
        used: dict[Path, Sample] = {}
        for unit in units:
            for sample in unit_samples(unit, self.indexes, self.manifests):
                used.setdefault(sample.image_path, sample)
        return list(used.values())

    def _units(self) -> tuple[Unit, ...]:
        """The cells grouped by (dataset, category), in cell order."""
        groups: dict[tuple[str, str], list[Cell]] = {}
        for cell in self.cells:
            groups.setdefault((cell.dataset, cell.category), []).append(cell)
        return tuple(Unit(dataset, category, tuple(cells)) for (dataset, category), cells in groups.items())

    def _ahead(self) -> tuple[AheadEncode, ...]:
        """Per preprocessing variant, the union of the features every (method, dataset) config reads in it from
        the backbone itself and the roles of the images; every name checked against the backbone."""
        depth, wanted, every = self.backbone.depth, {}, set()
        for (method, _), config in self.configs.items():
            cls = self.methods[method]
            every.update(cls.feature_names(config, depth))
            if not cls.reads_backbone(config, self.backbone):  # a modified copy: encoded as it is read
                continue
            for role, variant in cls.input_variants(config).items():
                names, roles = wanted.setdefault(variant, (set(), set()))
                names.update(cls.feature_names(config, depth))
                roles.add(role)
        self.backbone.check_features(sorted(every))
        return tuple(AheadEncode(v, frozenset(names), frozenset(roles)) for v, (names, roles) in wanted.items())

    def _train_job(self, cell: Cell) -> TrainJob | None:
        """The auxiliary training a cell's method needs (train seed i pairs with manifest seed i)."""
        if (cell.method, cell.dataset) not in self.auxiliary:
            return None
        per_shot = self.methods[cell.method].trains_per_shot
        config = self.configs[(cell.method, cell.dataset)]
        return TrainJob(
            cell.method, config.sha256(), self.auxiliary[(cell.method, cell.dataset)], numeric_seed(cell.seed),
            cell.shot if per_shot else None, cell.dataset if config.target_leakage else "",
        )  # fmt: skip

    def _identity(self, cell: Cell, job: TrainJob | None) -> dict[str, object]:
        config = self.configs[(cell.method, cell.dataset)]
        return {
            "method_cfg_hash": config.sha256(),
            "train": None if job is None else job.__dict__,
            "mode": config.mode,
            "backbone": self.backbone.identity,
            "manifest": self.manifests[(cell.dataset, cell.shot, cell.seed)].sha,
            "frame": self.spec.frame.__dict__,
            "fpr_limit": AUPRO_FPR_LIMIT,
        } | ({} if self.reference is None else {"reference_fits": self.reference.pins})

    def run(self, on_cell: CellReporter = lambda outcome: None,
            on_phase: PhaseReporter = lambda update: None) -> list[CellOutcome]:  # fmt: skip
        """Run every unfinished cell, then merge ``results.csv``; ``on_cell`` is called after each cell,
        ``on_phase`` with the progress of long steps (training; ``None`` when it is over). The outcomes of
        this run's cells (resumed ones marked skipped)."""
        spec = self.spec
        self._write_sidecars()
        record_run(spec.out, self.protocol, self.plan.run_id, {"methods": list(self.methods),
                   "datasets": list(self.indexes), "cells": len(self.cells), "device": spec.device,
                   "precision": spec.precision, "encode_batch": spec.encode_settings.encode_batch,
                   "workers": spec.workers})  # fmt: skip  (workers null: each machine's default)
        try:
            return executor(spec.executor, self.backbone, spec.ray_address).run(self.plan, on_cell, on_phase)
        finally:
            ResultStore(spec.out).merge()  # always: also after a resume, an interrupt or a failed task

    def _write_sidecars(self) -> None:
        for (name, _), config in self.configs.items():
            path = child_path(self.spec.out, "configs", f"{config.sha256()}.json")
            atomic_write_text(path, canonical_json({"method": name, **config.to_dict()}) + "\n")
        for (name, k, seed), manifest in self.manifests.items():
            write_manifest(manifest, child_path(self.spec.out, "manifests", name, f"k{k}_seed{seed}.txt"))


def _trainings(cells: list[Cell], cell_jobs: dict[Cell, TrainJob], job_ids: dict[Cell, str]) -> tuple[Training, ...]:
    """One training per distinct job, in order of first use, with the dataset of its first cell."""
    users: dict[TrainJob, list[str]] = {}
    first: dict[TrainJob, str] = {}
    for cell in cells:
        if (job := cell_jobs.get(cell)) is not None:
            users.setdefault(job, []).append(job_ids[cell])
            first.setdefault(job, cell.dataset)
    return tuple(Training(job, first[job], tuple(ids)) for job, ids in users.items())


def _check_device(device: str) -> None:
    check_device_name(device)
    if device == "cpu":
        return
    if not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA GPU is visible: use --device cpu")
