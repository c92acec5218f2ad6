"""Run a sweep: validate everything up front, then evaluate cell by cell into a resumable output dir."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import lightning as L
import numpy as np
import torch
from safetensors.torch import load_file

from fsas_bench.backbones import TINY_ARCH, FeatureCache, load_backbone
from fsas_bench.data.datamodule import FSASDataModule
from fsas_bench.data.formats import verify_samples
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.manifests import ShotManifest, draw_manifest, import_shot_list, support_samples
from fsas_bench.data.registry import default_datasets, load_dataset
from fsas_bench.data.sample import Sample
from fsas_bench.errors import UserError
from fsas_bench.evaluation import EvalFrame
from fsas_bench.files import check_writable_dir
from fsas_bench.hashing import canonical_json, sha256_json
from fsas_bench.methods import get_method, list_methods
from fsas_bench.methods.base import FewShotMethod, MethodOutput, with_overrides
from fsas_bench.metrics import IMAGE_METRICS, PIXEL_METRICS, REGION_METRICS, GroundTruthRegions, evaluate
from fsas_bench.names import child_path
from fsas_bench.options import check_device_name
from fsas_bench.progress import PhaseReporter, PhaseUpdate
from fsas_bench.runner.grid import Cell, expand_grid, job_id, numeric_seed
from fsas_bench.runner.pictures import DEFAULT_EXAMPLES, save_pictures
from fsas_bench.runner.provenance import provenance
from fsas_bench.runner.results import ResultStore, atomic_write_text
from fsas_bench.runner.training import (
    CHECKPOINTS, ReferenceFits, TrainJob, ensure_checkpoint, fit_relative_path, load_checkpoint, save_state,
)  # fmt: skip

LEVELS = {**dict.fromkeys(IMAGE_METRICS, "image"), **dict.fromkeys(PIXEL_METRICS, "pixel"), "AUPRO": "region"}
FPR_LIMIT = 0.3


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
    save_examples: int = DEFAULT_EXAMPLES  # example images per category kept for the HTML report (0: no pictures)


@dataclass
class CellReport:
    """What one finished (or skipped) cell reports to the progress display."""

    cell: Cell
    skipped: bool
    values: dict[str, float]


class Sweep:
    """A validated sweep. Construction does all checks (UserError on bad input) and writes nothing.

    Args:
        spec: the sweep options.
    """

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.methods = {name: get_method(name) for name in (spec.methods or tuple(list_methods()))}
        if spec.batch_size < 1:
            raise UserError(f"--batch-size {spec.batch_size} is invalid: use a positive integer")
        if spec.save_examples < 0:  # pictures (issue 18)
            raise UserError(f"--save-examples {spec.save_examples} is invalid: use 0 (no pictures) or more")
        names = spec.datasets or tuple(default_datasets(spec.data_root))
        self.indexes = {name: load_dataset(name, spec.data_root) for name in names}
        self.manifests = self._manifests()
        seeds = list(dict.fromkeys(seed for _, _, seed in self.manifests))
        self.cells = expand_grid(list(self.methods), list(self.indexes.values()), spec.categories, spec.shots, seeds)
        verify_samples(self._used_samples())
        _check_device(spec.device)
        self.backbone = load_backbone(
            spec.backbone, spec.pretrained, device=spec.device, allow_random=spec.allow_random_weights
        )
        self.cache = FeatureCache(self.backbone, spec.feature_cache_dir)
        self.configs = {
            (name, dataset): with_overrides(cls.config_cls.for_run(dataset, spec.mode), spec.overrides.get(name, {}))
            for name, cls in self.methods.items()
            for dataset in self.indexes
        }
        self.benchmark_only = sorted({name for (name, _), c in self.configs.items() if c.mode != spec.mode})
        """Methods without a preset of the requested mode (they run in benchmark mode; rows say so)."""
        for (name, _), config in self.configs.items():
            self.cache.prefetch.update(self.methods[name](config, self.cache).feature_names)
        self.auxiliary = {
            (name, dataset): cls.auxiliary_dataset(dataset)
            for name, cls in self.methods.items()
            if cls.fit_scope == "auxiliary"
            for dataset in self.indexes
        }
        self.auxiliary_indexes = {aux: load_dataset(aux, spec.data_root) for aux in set(self.auxiliary.values())}
        self.reference = None if spec.reference_fits is None else ReferenceFits(spec.reference_fits)
        self.job_ids = {cell: job_id(cell, **self._identity(cell)) for cell in self.cells}
        self.run_id = sha256_json(sorted(self.job_ids.values()))[:12]  # what is computed, not where or how batched
        self.store = ResultStore(spec.out)
        check_writable_dir(spec.out, "--out")
        if spec.feature_cache_dir is not None:
            check_writable_dir(spec.feature_cache_dir, "--feature-cache")
        self._ground_truth: dict[tuple[str, str], tuple[np.ndarray, GroundTruthRegions | None]] = {}
        self._on_phase: PhaseReporter = lambda update: None

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

    def _used_samples(self) -> list[Sample]:
        used = {}
        for (name, _, _), manifest in self.manifests.items():
            for category in {c.category for c in self.cells if c.dataset == name}:
                index = self.indexes[name]
                for sample in support_samples(manifest, index, category) + index.split(category, "test"):
                    used[sample.image_path] = sample
        return list(used.values())

    def run(self, on_cell: Callable[[CellReport], None] = lambda report: None,
            on_phase: PhaseReporter = lambda update: None) -> None:  # fmt: skip
        """Evaluate every unfinished cell; ``on_cell`` is called after each one, ``on_phase`` with the progress
        of the training inside a cell (auxiliary or per-category; ``None`` when it is over)."""
        self._on_phase = on_phase
        self._write_sidecars()
        current = None
        for cell in self.cells:
            if (cell.dataset, cell.category) != current:
                current = (cell.dataset, cell.category)
                self.cache.clear_memory()
                self._ground_truth.clear()
            on_cell(self._run_cell(cell))

    def _write_sidecars(self) -> None:
        for (name, _), config in self.configs.items():
            path = child_path(self.spec.out, "configs", f"{config.sha256()}.json")
            atomic_write_text(path, canonical_json({"method": name, **config.to_dict()}) + "\n")
        for (name, k, seed), manifest in self.manifests.items():
            atomic_write_text(child_path(self.spec.out, "manifests", name, f"k{k}_seed{seed}.txt"), manifest.text())

    def _train_job(self, cell: Cell) -> TrainJob | None:
        """The auxiliary training a cell's method needs (train seed i pairs with manifest seed i)."""
        if (cell.method, cell.dataset) not in self.auxiliary:
            return None
        per_shot = self.methods[cell.method].trains_per_shot
        config = self.configs[(cell.method, cell.dataset)]
        return TrainJob(
            cell.method, config.sha256(), self.auxiliary[(cell.method, cell.dataset)], numeric_seed(cell.seed),
            cell.shot if per_shot else None, cell.dataset if getattr(config, "target_leakage", False) else "",
        )  # fmt: skip

    def _identity(self, cell: Cell) -> dict[str, object]:
        config = self.configs[(cell.method, cell.dataset)]
        job = self._train_job(cell)
        return {
            "method_cfg_hash": config.sha256(),
            "train": None if job is None else job.__dict__,
            "mode": config.mode,
            "backbone": self.backbone.identity,
            "manifest": self.manifests[(cell.dataset, cell.shot, cell.seed)].sha,
            "frame": self.spec.frame.__dict__,
            "fpr_limit": FPR_LIMIT,
        } | ({} if self.reference is None else {"reference_fits": self.reference.pins})

    def _run_cell(self, cell: Cell) -> CellReport:
        jid = self.job_ids[cell]
        if self.spec.resume and self.store.is_done(jid):
            return CellReport(cell, skipped=True, values={})
        method_cls = self.methods[cell.method]
        index = self.indexes[cell.dataset]
        query = index.split(cell.category, "test")
        base = self._base_row(cell, jid, method_cls, index, query)
        timing: dict[str, object] = {"job_id": jid, "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if cell.shot == 0 and not method_cls.supports_zero_shot:
            reason = f"{cell.method} does not support zero-shot (k=0); cell skipped"
            rows = [{**base, **_metric_fields(m), "value": math.nan, "status": "skipped", "reason": reason}
                    for m in self._metric_names(index)]  # fmt: skip
            self.store.write_cell(jid, rows, timing)
            return CellReport(cell, skipped=True, values={})
        rows, values = self._evaluate(cell, method_cls, index, query, base, timing)
        self.store.write_cell(jid, rows, timing)
        return CellReport(cell, skipped=False, values=values)

    def _evaluate(
        self,
        cell: Cell,
        method_cls: type[FewShotMethod],
        index: DatasetIndex,
        query: list[Sample],
        base: dict[str, object],
        timing: dict[str, object],
    ) -> tuple[list[dict[str, object]], dict[str, float]]:
        """Fit (or load) the method, predict the category's test split, score it: rows and metric values."""
        manifest = self.manifests[(cell.dataset, cell.shot, cell.seed)]
        data = FSASDataModule(query, support_samples(manifest, index, cell.category), self.spec.batch_size)
        config = self.configs[(cell.method, cell.dataset)]
        method: FewShotMethod = method_cls(config, self.cache)
        if method_cls.fit_scope == "per_category":  # prompts/logs of the per-category fit go to the run dir
            method.artifact_dir = child_path(self.spec.out, "artifacts", cell.method)
            self._report_training(method, f"fitting {cell.method} on {cell.dataset}/{cell.category}, "
                                          f"k={cell.shot}, seed {cell.seed}", start=self.reference is None)  # fmt: skip
        if (job := self._train_job(cell)) is not None:
            shot = "" if job.shot is None else f", k={job.shot}"
            phase = f"training {cell.method} on {job.train_dataset}, seed {job.seed}{shot}"
            path, digest, timing["time_train_s"] = ensure_checkpoint(
                job, self.spec.out, lambda: self._report_training(method_cls(config, self.cache), phase, start=True),
                self.auxiliary_indexes[job.train_dataset], index, self.reference,
            )  # fmt: skip
            self._on_phase(None)
            load_checkpoint(method, path)
            base.update(train_dataset=job.train_dataset, train_seed=job.seed, checkpoint_sha=digest)
        L.seed_everything(numeric_seed(cell.seed), verbose=False)
        before = dataclasses.replace(self.cache.stats)
        if self.spec.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        fit = None
        if method_cls.fit_scope == "per_category":
            fit = fit_relative_path(cell.method, config.sha256(), cell.dataset, cell.category, cell.shot, cell.seed)
            if self.reference is not None:
                path, digest = self.reference.path(fit)
                method.reference_fit = load_file(path)
                base.update(checkpoint_sha=digest)
        start = time.perf_counter()
        method.set_support(list(data.support_dataloader()), cell.category)
        method.set_queries(data.predict_dataloader())  # a loader of its own, not the predict loop's
        fitted = time.perf_counter()
        self._on_phase(None)
        if fit is not None:
            if self.reference is None:
                digest = save_state(method.fitted_state(), method.loss_history, self.spec.out / CHECKPOINTS / fit)
                base.update(checkpoint_sha=digest)
            base.update(train_seed=method.train_seed)
        fit_encode_s = self.cache.stats.encode_seconds - before.encode_seconds
        outputs: list[MethodOutput] = _trainer(self.spec.device).predict(method, dataloaders=data.predict_dataloader())
        inferred = time.perf_counter()
        masks, regions = self._category_ground_truth(index, cell.category, query)
        height, width = masks.shape[1:]
        maps = torch.cat([self.spec.frame.maps(o.anomaly_maps, height, width) for o in outputs])
        scores = torch.cat([o.image_scores for o in outputs])
        labels = np.array([s.label for s in query])
        if index.has_masks:
            result = evaluate(scores, labels, maps, masks, fpr_limit=FPR_LIMIT, regions=regions)
        else:
            result = evaluate(scores, labels, fpr_limit=FPR_LIMIT)
        done = time.perf_counter()
        # Pictures for `fsas-bench report --html` (issue 18): the examples' maps and the cell's curves; no metric.
        save_pictures(self.spec.out, self.spec.save_examples, cell, str(base["job_id"]), query, scores, labels, maps,
                      masks, regions)  # fmt: skip
        rows = []
        for metric in self._metric_names(index):
            value = float(result[metric])
            status = "ok" if math.isfinite(value) else "undefined"
            rows.append({**base, **_metric_fields(metric), "value": value, "status": status,
                         "reason": result.reasons.get(metric, "")})  # fmt: skip
        stats = self.cache.stats
        encode_s = stats.encode_seconds - before.encode_seconds
        timing.update(
            time_fit_s=fitted - start,
            time_encode_s=encode_s,
            time_infer_s=inferred - fitted,
            time_metric_s=done - inferred,
            ms_per_image=1000 * (inferred - fitted - (encode_s - fit_encode_s)) / max(len(query), 1),
            peak_gpu_mem_mb=torch.cuda.max_memory_allocated() / 2**20 if self.spec.device.startswith("cuda") else None,
            cache_hits=stats.hits - before.hits,
            cache_misses=stats.misses - before.misses,
            backbone_forwards=stats.forwards - before.forwards,
        )
        return rows, dict(result)

    def _report_training(self, method: FewShotMethod, phase: str, start: bool = False) -> FewShotMethod:
        """``method`` reporting its training steps as ``phase`` (announced at once when ``start``)."""
        method.report_phase, method.phase = self._on_phase, phase
        if start:
            self._on_phase(PhaseUpdate(phase))
        return method

    def _category_ground_truth(
        self, index: DatasetIndex, category: str, query: list[Sample]
    ) -> tuple[np.ndarray, GroundTruthRegions | None]:
        """Masks and AUPRO regions of a category's test split in the evaluation frame (computed once)."""
        key = (index.name, category)
        if key not in self._ground_truth:
            masks = self.spec.frame.masks(query)
            regions = (
                GroundTruthRegions.from_masks(masks, connectivity=self.spec.frame.connectivity)
                if index.has_masks
                else None
            )
            self._ground_truth[key] = (masks, regions)
        return self._ground_truth[key]

    @staticmethod
    def _metric_names(index: DatasetIndex) -> tuple[str, ...]:
        return IMAGE_METRICS + (PIXEL_METRICS + REGION_METRICS if index.has_masks else ())

    def _base_row(
        self, cell: Cell, jid: str, method_cls: type[FewShotMethod], index: DatasetIndex, query: list[Sample]
    ) -> dict[str, object]:
        config = self.configs[(cell.method, cell.dataset)]
        manifest = self.manifests[(cell.dataset, cell.shot, cell.seed)]
        frame = self.spec.frame
        return {
            "run_id": self.run_id,
            "job_id": jid,
            **provenance(self.spec.device),
            "method": cell.method,
            "mode": config.mode,
            "method_cfg_hash": config.sha256(),
            "flags": config.flags(),
            "backbone": self.backbone.arch,
            "pretrained": self.backbone.pretrained,
            "image_size": self.backbone.image_size,
            "fit_scope": method_cls.fit_scope,
            "train_dataset": "",
            "train_seed": "",
            "checkpoint_sha": "",
            "transductive": getattr(config, "transductive", method_cls.transductive),
            "dataset": cell.dataset,
            "category": cell.category,
            "shot": cell.shot,
            "seed": cell.seed,
            "shot_manifest": f"{manifest.name}@v{manifest.version}",
            "shot_manifest_sha": manifest.sha,
            "metric_impl": "exact",
            "eval_size": frame.label,
            "mask_resize": frame.mask_resize,
            "connectivity": frame.connectivity,
            "n_test": len(query),
            "n_anomalous": sum(s.label for s in query),
        }


def _metric_fields(metric: str) -> dict[str, object]:
    return {"level": LEVELS[metric], "metric": metric, "fpr_limit": FPR_LIMIT if metric == "AUPRO" else None}


def _trainer(device: str) -> L.Trainer:
    """A quiet single-device Lightning Trainer for inference (exact metrics need one device)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    return L.Trainer(
        accelerator="gpu" if device.startswith("cuda") else "cpu",
        devices=[int(device.split(":")[1])] if device.startswith("cuda:") else 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _check_device(device: str) -> None:
    check_device_name(device)
    if device == "cpu":
        return
    if not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA GPU is visible: use --device cpu")
