"""The two kinds of task of a sweep, run by any executor: train one auxiliary checkpoint; evaluate one unit.

Tasks take the :class:`~fsas_bench.runner.plan.SweepPlan` and return values (no out-parameters). They write only
what they own, atomically: a training task its checkpoint (under a file lock, so that concurrent runs into one
``--out`` train each checkpoint once), a unit task its cells' files (and per-category fits). A per-task
:func:`task_scope` owns the process-wide state: torch threads, warning filters, CUDA peak statistics.
"""

from __future__ import annotations

import fcntl
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file

from fsas_bench.backbones import CacheStats, ClipBackbone, FeatureCache, default_memory_budget, load_backbone
from fsas_bench.data.datamodule import FSASDataModule, image_sha
from fsas_bench.data.formats import read_image_rgb
from fsas_bench.data.index import DatasetIndex
from fsas_bench.data.manifests import support_samples
from fsas_bench.hashing import sha256_file
from fsas_bench.methods import get_method
from fsas_bench.methods.base import FewShotMethod, MethodOutput
from fsas_bench.metrics import AUPRO_FPR_LIMIT, IMAGE_METRICS, PIXEL_METRICS, REGION_METRICS
from fsas_bench.metrics.category import CategoryTruth, score_category, score_maps
from fsas_bench.names import child_path
from fsas_bench.progress import PhaseReporter, PhaseUpdate
from fsas_bench.runner.grid import Cell, numeric_seed
from fsas_bench.runner.pictures import save_pictures
from fsas_bench.runner.plan import SweepPlan, Training, Unit
from fsas_bench.runner.provenance import provenance
from fsas_bench.runner.results import ResultStore
from fsas_bench.runner.training import (
    CHECKPOINTS, ReferenceFits, TrainJob, fit_relative_path, load_checkpoint, save_state,
)  # fmt: skip
from fsas_bench.trainer import quiet_trainer, quiet_warnings

LEVELS = {**dict.fromkeys(IMAGE_METRICS, "image"), **dict.fromkeys(PIXEL_METRICS, "pixel"), "AUPRO": "region"}
LOCKS = ".locks"
SPILL = ".spill"
"""Folder under ``--out`` holding each feature cache's spill folder (when there is no ``--feature-cache``)."""


@dataclass(frozen=True)
class CellOutcome:
    """What a unit task returns for one cell (rows and timing are also in the cell's files)."""

    cell: Cell
    job_id: str
    skipped: bool
    values: dict[str, float]
    timing: dict[str, object]


@dataclass(frozen=True)
class TrainOutcome:
    """What a training task returns: the checkpoint and the seconds spent training it now (0: it existed)."""

    job: TrainJob
    path: Path
    sha256: str
    seconds: float


class Worker:
    """What tasks of one plan share in one process: the backbone (loaded once) and the reference fits.

    Args:
        plan: the sweep plan.
        backbone: the plan's backbone when this process has it loaded already (the local executor).
    """

    def __init__(self, plan: SweepPlan, backbone: ClipBackbone | None = None) -> None:
        spec = plan.spec
        self.backbone = backbone or load_backbone(spec.backbone, spec.pretrained, device=spec.device,
                                                  allow_random=spec.allow_random_weights,
                                                  precision=spec.precision)  # fmt: skip
        budget = default_memory_budget(plan.node_tasks) if spec.cache_memory is None else spec.cache_memory
        self.cache = FeatureCache(self.backbone, spec.feature_cache_dir, budget, spec.encode_settings, spec.out / SPILL)
        self.cache.prefetch.update(plan.prefetch)
        self.reference = None if spec.reference_fits is None else ReferenceFits(spec.reference_fits)
        self.key = _worker_key(plan)


_WORKER: Worker | None = None  # one entry: the worker of the last plan this process ran tasks of


def worker_for(plan: SweepPlan, backbone: ClipBackbone | None = None) -> Worker:
    """The process's :class:`Worker` for ``plan`` (a bounded, one-entry cache: never grows with the sweep)."""
    global _WORKER
    if _WORKER is None or _WORKER.key != _worker_key(plan):
        _WORKER = None  # the previous plan's backbone is freed before the next one loads
        _WORKER = Worker(plan, backbone)
    return _WORKER


def _worker_key(plan: SweepPlan) -> tuple[object, ...]:
    spec = plan.spec
    return (plan.backbone.identity, spec.device, spec.out, spec.feature_cache_dir, spec.cache_memory,
            spec.encode_settings, spec.reference_fits, plan.ahead, plan.node_tasks)


@contextmanager
def task_scope(plan: SweepPlan) -> Iterator[None]:
    """Process-wide state owned by one task: torch threads, warning filters, CUDA peak statistics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    with quiet_warnings():
        if plan.spec.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def train(plan: SweepPlan, training: Training, on_phase: PhaseReporter = lambda update: None) -> TrainOutcome:
    """Train ``training``'s checkpoint unless it exists (or the reference fits hold it): the exclusive writer of
    that file, also across processes sharing ``--out`` (a file lock)."""
    worker, job = worker_for(plan), training.job
    if worker.reference is not None:
        return TrainOutcome(job, *worker.reference.path(job.relative_path()), 0.0)
    path = job.path(plan.spec.out)
    lock = child_path(plan.spec.out, CHECKPOINTS, LOCKS, job.relative_path().as_posix().replace("/", "__") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle, task_scope(plan), _task_memory(worker.cache):
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
        if path.is_file():
            return TrainOutcome(job, path, sha256_file(path), 0.0)
        start = time.perf_counter()
        phase = f"training {job.method} on {job.train_dataset}, seed {job.seed}"
        phase += "" if job.shot is None else f", k={job.shot}"
        on_phase(PhaseUpdate(phase))
        L.seed_everything(job.seed, verbose=False)
        method = get_method(job.method)(plan.configs[(job.method, training.dataset)], worker.cache)
        method.report_phase, method.phase, method.map_scorer = on_phase, phase, score_maps
        method.fit_auxiliary(plan.auxiliary_indexes[job.train_dataset], plan.indexes[training.dataset], job.shot or 0)
        digest = save_state(method.state_dict(), method.loss_history, path)
        on_phase(None)
        return TrainOutcome(job, path, digest, time.perf_counter() - start)


def evaluate_unit(
    plan: SweepPlan,
    unit: Unit,
    trained: dict[TrainJob, TrainOutcome],
    on_cell: Callable[[CellOutcome], None] = lambda outcome: None,
    on_phase: PhaseReporter = lambda update: None,
) -> list[CellOutcome]:
    """Evaluate every unfinished cell of ``unit`` (``trained``: the checkpoints its cells need), writing each
    cell's files as it finishes; the outcomes in cell order. The unit's images are encoded ahead first
    (:func:`encode_unit_ahead`)."""
    worker = worker_for(plan)
    evaluator = _UnitEvaluator(plan, unit, worker, trained, on_phase)
    outcomes = []
    with task_scope(plan), _task_memory(worker.cache):
        if evaluator.pending():
            evaluator.ahead = replace(worker.cache.stats)
            encode_unit_ahead(plan, unit, worker.cache, on_phase)
            on_phase(None)
        for cell in unit.cells:
            outcome = evaluator.run_cell(cell)
            on_cell(outcome)
            outcomes.append(outcome)
    return outcomes


@contextmanager
def _task_memory(cache: FeatureCache) -> Iterator[None]:
    """Features of one task in memory at a time: the cache's memory (and spill) is emptied before and after."""
    cache.clear_memory()
    try:
        yield
    finally:
        cache.clear_memory()


def encode_unit_ahead(
    plan: SweepPlan, unit: Unit, cache: FeatureCache, on_phase: PhaseReporter = lambda update: None
) -> None:
    """Fill ``cache`` with the features the sweep's methods read of every image of ``unit``, one pass per
    preprocessing variant (decode workers, fixed-size encode batches), reporting ``encoding <unit>`` with a
    count of images."""
    phase = f"encoding {unit.name}"
    on_phase(PhaseUpdate(phase))
    for number, ahead in enumerate(plan.ahead, 1):
        label = f" (variant {number}/{len(plan.ahead)})" if len(plan.ahead) > 1 else ""

        def progress(done: int, total: int) -> None:
            on_phase(PhaseUpdate(phase + label, f"{done}/{total} images", done, total))  # a phase per pass

        paths = [s.image_path for s in plan.unit_samples(unit, ahead.roles)]
        cache.encode_ahead([image_sha(p) for p in paths], paths, read_image_rgb, sorted(ahead.names), ahead.variant,
                           progress)  # fmt: skip


class _UnitEvaluator:
    """Evaluates the cells of one unit (ground truth computed once for the unit)."""

    def __init__(self, plan: SweepPlan, unit: Unit, worker: Worker, trained: dict[TrainJob, TrainOutcome],
                 on_phase: PhaseReporter) -> None:  # fmt: skip
        self.plan, self.unit, self.worker, self.on_phase = plan, unit, worker, on_phase
        self.store = ResultStore(plan.spec.out)
        self.index = plan.indexes[unit.dataset]
        self.query = self.index.split(unit.category, "test")
        self.trained = trained
        first_users = {t.users[0]: t.job for t in plan.trainings}
        self.train_seconds = {jid: trained[job].seconds for jid, job in first_users.items() if job in trained}
        """Training seconds spent in this run, attributed to the first cell (in plan order) using the checkpoint."""
        self._truth: CategoryTruth | None = None
        self.ahead: CacheStats | None = None
        """Cache counters before the unit encoded ahead: its first evaluated cell reports the encoding (seconds,
        misses, forwards, GPU memory peak) as its own."""

    def pending(self) -> bool:
        """Whether any cell of the unit is still to be evaluated."""
        metrics = metric_names(self.index)
        return not self.plan.spec.resume or not all(self.store.is_done(self.plan.job_ids[c], metrics)
                                                     for c in self.unit.cells)  # fmt: skip

    def run_cell(self, cell: Cell) -> CellOutcome:
        plan, jid = self.plan, self.plan.job_ids[cell]
        if plan.spec.resume and self.store.is_done(jid, metric_names(self.index)):
            return CellOutcome(cell, jid, True, {}, {})
        method_cls = get_method(cell.method)
        base = self._base_row(cell, jid, method_cls)
        timing: dict[str, object] = {"job_id": jid, "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if cell.shot == 0 and not method_cls.supports_zero_shot:
            reason = f"{cell.method} does not support zero-shot (k=0); cell skipped"
            rows = [{**base, **_metric_fields(m), "value": math.nan, "status": "skipped", "reason": reason}
                    for m in metric_names(self.index)]  # fmt: skip
            self.store.write_cell(jid, rows, timing)
            return CellOutcome(cell, jid, True, {}, timing)
        rows, values = self._evaluate(cell, method_cls, base, timing)
        self.store.write_cell(jid, rows, timing)
        return CellOutcome(cell, jid, False, values, timing)

    def _evaluate(
        self, cell: Cell, method_cls: type[FewShotMethod], base: dict[str, object], timing: dict[str, object]
    ) -> tuple[list[dict[str, object]], dict[str, float]]:
        """Fit (or load) the method, predict the category's test split, score it: rows and metric values."""
        plan, spec, cache = self.plan, self.plan.spec, self.worker.cache
        manifest = plan.manifests[(cell.dataset, cell.shot, cell.seed)]
        data = FSASDataModule(self.query, support_samples(manifest, self.index, cell.category), spec.batch_size)
        config = plan.configs[(cell.method, cell.dataset)]
        method: FewShotMethod = method_cls(config, cache)
        reference = self.worker.reference
        if method_cls.fit_scope == "per_category":  # prompts/logs of the per-category fit go to the run dir
            method.artifact_dir = child_path(spec.out, "artifacts", cell.method)
            method.report_phase = self.on_phase
            method.phase = f"fitting {cell.method} on {cell.dataset}/{cell.category}, k={cell.shot}, seed {cell.seed}"
            if reference is None:
                self.on_phase(PhaseUpdate(method.phase))
        if (job := plan.cell_jobs.get(plan.job_ids[cell])) is not None:
            trained = self.trained[job]
            load_checkpoint(method, trained.path)
            if self.train_seconds.get(plan.job_ids[cell], 0.0) > 0:
                timing["time_train_s"] = self.train_seconds[plan.job_ids[cell]]
            base.update(train_dataset=job.train_dataset, train_seed=job.seed, checkpoint_sha=trained.sha256)
        L.seed_everything(numeric_seed(cell.seed), verbose=False)
        ahead, self.ahead = self.ahead, None
        before = ahead or replace(cache.stats)
        if spec.device.startswith("cuda") and ahead is None:
            torch.cuda.reset_peak_memory_stats()
        fit = None
        if method_cls.fit_scope == "per_category":
            fit = fit_relative_path(cell.method, config.sha256(), cell.dataset, cell.category, cell.shot, cell.seed)
            if reference is not None:
                path, digest = reference.path(fit)
                method.reference_fit = load_file(path)
                base.update(checkpoint_sha=digest)
        start = time.perf_counter()
        method.set_support(list(data.support_dataloader()), cell.category)
        method.set_queries(data.predict_dataloader())  # a loader of its own, not the predict loop's
        fitted = time.perf_counter()
        self.on_phase(None)
        if fit is not None:
            if reference is None:
                digest = save_state(method.fitted_state(), method.loss_history, spec.out / CHECKPOINTS / fit)
                base.update(checkpoint_sha=digest)
            base.update(train_seed=method.train_seed)
        fit_encode_s = cache.stats.encode_seconds - before.encode_seconds
        outputs: list[MethodOutput] = quiet_trainer(spec.device).predict(method, dataloaders=data.predict_dataloader())
        inferred = time.perf_counter()
        truth = self._category_truth()
        height, width = truth.masks.shape[1:]
        maps = torch.cat([spec.frame.maps(o.anomaly_maps, height, width) for o in outputs])
        scores = torch.cat([o.image_scores for o in outputs])
        result = score_category(truth, scores, maps)
        done = time.perf_counter()
        # Pictures for `fsas-bench report --html`: the examples' maps and the cell's curves (no metric).
        save_pictures(spec.out, spec.save_examples, cell, str(base["job_id"]), self.query, scores, truth.labels,
                      maps, truth.masks, truth.regions)  # fmt: skip
        rows = []
        for metric in metric_names(self.index):
            value = float(result[metric])
            status = "ok" if math.isfinite(value) else "undefined"
            rows.append({**base, **_metric_fields(metric), "value": value, "status": status,
                         "reason": result.reasons.get(metric, "")})  # fmt: skip
        stats = cache.stats
        encode_s = stats.encode_seconds - before.encode_seconds
        timing.update(
            time_fit_s=fitted - start,
            time_encode_s=encode_s,
            time_infer_s=inferred - fitted,
            time_metric_s=done - inferred,
            ms_per_image=1000 * (inferred - fitted - (encode_s - fit_encode_s)) / max(len(self.query), 1),
            peak_gpu_mem_mb=torch.cuda.max_memory_allocated() / 2**20 if spec.device.startswith("cuda") else None,
            cache_hits=stats.hits - before.hits,
            cache_misses=stats.misses - before.misses,
            backbone_forwards=stats.forwards - before.forwards,
        )
        return rows, dict(result)

    def _category_truth(self) -> CategoryTruth:
        """The unit's test-split ground truth in the evaluation frame (computed once)."""
        if self._truth is None:
            self._truth = CategoryTruth.load(self.plan.spec.frame, self.query, self.index.has_masks)
        return self._truth

    def _base_row(self, cell: Cell, jid: str, method_cls: type[FewShotMethod]) -> dict[str, object]:
        plan = self.plan
        config = plan.configs[(cell.method, cell.dataset)]
        manifest = plan.manifests[(cell.dataset, cell.shot, cell.seed)]
        frame = plan.spec.frame
        return {
            "run_id": plan.run_id,
            "job_id": jid,
            **provenance(plan.spec.device),
            "method": cell.method,
            "mode": config.mode,
            "method_cfg_hash": config.sha256(),
            "flags": config.flags(),
            "backbone": plan.backbone.arch,
            "pretrained": plan.backbone.pretrained,
            "image_size": plan.backbone.image_size,
            "precision": plan.backbone.precision,
            "fit_scope": method_cls.fit_scope,
            "train_dataset": "",
            "train_seed": "",
            "checkpoint_sha": "",
            "transductive": config.transductive,
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
            "n_test": len(self.query),
            "n_anomalous": sum(s.label for s in self.query),
        }


def cache_totals(outcomes: list[CellOutcome]) -> tuple[int, int, int]:
    """Feature-cache hits, misses and backbone forwards over the evaluated cells of ``outcomes``."""
    return tuple(sum(int(o.timing.get(k) or 0) for o in outcomes)  # type: ignore[return-value]
                 for k in ("cache_hits", "cache_misses", "backbone_forwards"))  # fmt: skip


def metric_names(index: DatasetIndex) -> tuple[str, ...]:
    """The metrics of a dataset's cells: image-level, plus pixel and region metrics when it has masks."""
    return IMAGE_METRICS + (PIXEL_METRICS + REGION_METRICS if index.has_masks else ())


def _metric_fields(metric: str) -> dict[str, object]:
    return {"level": LEVELS[metric], "metric": metric, "fpr_limit": AUPRO_FPR_LIMIT if metric == "AUPRO" else None}
