"""Executors: who runs a plan's tasks. ``local`` runs them in this process; ``ray`` on a Ray cluster.

Both run every training task before the unit tasks that evaluate its checkpoint, report each finished cell
(``on_cell``) and the phase of long steps (``on_phase``) to the driver, and leave ``results.csv`` to the store's
merge. Tasks write only their own files, atomically, so any executor gives byte-identical results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from fsas_bench.errors import UserError
from fsas_bench.progress import PhaseReporter, PhaseUpdate
from fsas_bench.runner.plan import SweepPlan, Training, Unit
from fsas_bench.runner.identity import run_marker
from fsas_bench.runner.results import ResultStore
from fsas_bench.runner.tasks import CellOutcome, TrainOutcome, evaluate_unit, train, worker_for

if TYPE_CHECKING:
    from fsas_bench.backbones import ClipBackbone

EXECUTORS = ("local", "ray")
CellReporter = Callable[[CellOutcome], None]
RAY_RETRIES = 3
"""Times a Ray task is retried when its worker process or node dies."""


class Executor(Protocol):
    """Runs a plan's tasks: trainings first, then units; the outcomes of every cell, in any order."""

    def run(self, plan: SweepPlan, on_cell: CellReporter, on_phase: PhaseReporter) -> list[CellOutcome]: ...


@dataclass
class LocalExecutor:
    """Every task in this process, in plan order (the backbone the driver loaded is reused)."""

    backbone: ClipBackbone | None = None

    def run(self, plan: SweepPlan, on_cell: CellReporter, on_phase: PhaseReporter) -> list[CellOutcome]:
        """Train what the plan needs, then evaluate unit by unit."""
        worker_for(plan, self.backbone)
        trained = {t.job: train(plan, t, on_phase) for t in plan.trainings}
        outcomes = []
        for unit in plan.units:
            needed = {t.job: trained[t.job] for t in plan.unit_trainings(unit)}
            outcomes += evaluate_unit(plan, unit, needed, on_cell, on_phase)
        return outcomes


@dataclass
class RayExecutor:
    """Tasks on a Ray cluster: ``address`` None starts a local instance (shut down at the end).

    Training tasks and unit tasks request one GPU each with ``--device cuda`` and otherwise the CPUs their
    threads use (:func:`task_resources`); the plan learns how many such tasks a node runs at once
    (:func:`node_tasks`, which shares the default feature memory budget); a unit task depends on the training
    tasks of its checkpoints; a task whose worker dies is retried (:data:`RAY_RETRIES`). The driver polls the
    cell files for progress (workers write them into ``--out``, which all nodes must share).
    """

    address: str | None = None
    poll_seconds: float = 0.5

    def run(self, plan: SweepPlan, on_cell: CellReporter, on_phase: PhaseReporter) -> list[CellOutcome]:
        """Submit every task, show progress until all finished, return the outcomes."""
        ray = _import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            _init_ray(ray, self.address)
        try:
            return self._run(ray, plan, on_cell, on_phase)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray: Any, plan: SweepPlan, on_cell: CellReporter, on_phase: PhaseReporter) -> list[CellOutcome]:
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        largest_node = max((n.get("CPU", 0) for n in nodes), default=1)
        resources = task_resources(plan, int(largest_node))
        plan = replace(plan, node_tasks=node_tasks(resources, nodes))
        options = {**resources, "max_retries": RAY_RETRIES, "retry_exceptions": False}
        plan_ref = ray.put(plan)
        train_task = ray.remote(_train_task).options(name="fsas-train", **options)
        unit_task = ray.remote(_unit_task).options(name="fsas-unit", **options)
        training_refs = {t.job: train_task.remote(plan_ref, t) for t in plan.trainings}
        pending = [
            unit_task.remote(plan_ref, unit, *(training_refs[t.job] for t in plan.unit_trainings(unit)))
            for unit in plan.units
        ]
        store, started = ResultStore(plan.spec.out), time.time()
        waiting = {plan.job_ids[c]: c for c in plan.cells}
        outcomes: list[CellOutcome] = []
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=self.poll_seconds)
            for jid in [jid for jid in waiting if store.written_since(jid, started)]:  # finished meanwhile
                on_cell(CellOutcome(waiting.pop(jid), jid, False, {}, {}))
            for ref in ready:
                for outcome in _result(ray, ref):
                    if waiting.pop(outcome.job_id, None) is not None:
                        on_cell(outcome)
                    outcomes.append(outcome)
            refs = list(training_refs.values())
            trainings = len(ray.wait(refs, num_returns=len(refs), timeout=0)[1]) if refs else 0
            status = f"ray: {trainings} training and {len(pending)} unit tasks to finish"
            on_phase(PhaseUpdate(status) if pending else None)
        return outcomes


def task_resources(plan: SweepPlan, largest_node_cpus: int) -> dict[str, int]:
    """What one task requests: a GPU with ``--device cuda``; otherwise the CPUs its torch threads use
    (:attr:`SweepPlan.threads`, the driver's, so numbers equal the local executor's), at most a whole node's.

    Asking for fewer CPUs than threads would put several multi-threaded tasks on the same cores: on the 2-core
    CI machine two 2-thread tasks at once made the embedded sweep 3.2× slower than one process."""
    if plan.spec.device.startswith("cuda"):
        return {"num_gpus": 1}
    return {"num_cpus": max(1, min(plan.threads, largest_node_cpus))}


def node_tasks(resources: dict[str, int], nodes: list[dict[str, float]]) -> int:
    """The most tasks requesting ``resources`` that one of ``nodes`` (Ray resource dicts) can run at once: one
    per GPU, or one per ``num_cpus`` CPUs."""
    kind, each = ("GPU", resources["num_gpus"]) if "num_gpus" in resources else ("CPU", resources["num_cpus"])
    return max([1, *(int(node.get(kind, 0) // each) for node in nodes)])


def _train_task(plan: SweepPlan, training: Training) -> TrainOutcome:
    _check_shared_out(plan)
    return train(plan, training)


def _unit_task(plan: SweepPlan, unit: Unit, *trained: TrainOutcome) -> list[CellOutcome]:
    _check_shared_out(plan)
    return evaluate_unit(plan, unit, {t.job: t for t in trained})


def _check_shared_out(plan: SweepPlan) -> None:
    """UserError when this node does not see the driver's ``--out`` (it must be on a shared filesystem)."""
    if not run_marker(plan.spec.out, plan.run_id).is_file():
        import socket

        raise UserError(
            f"--out '{plan.spec.out}' is not visible from Ray node {socket.gethostname()}: put --out on a "
            "filesystem every node mounts at the same path"
        )


def _result(ray: Any, ref: Any) -> list[CellOutcome]:
    """A finished task's value; a UserError raised inside the task is raised here as itself."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, UserError):
            raise err.cause from None
        raise


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'fsas-bench[ray]'") from None
    return ray


def _init_ray(ray: Any, address: str | None) -> None:
    """Connect to ``address`` or start a local instance (no dashboard, quiet, loopback only)."""
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, logging_level="ERROR",
                     _node_ip_address="127.0.0.1")  # fmt: skip
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = "a local Ray instance" if address is None else f"the Ray cluster at '{address}'"
        raise UserError(f"could not start or reach {where} ({str(err).splitlines()[0]}): check --ray-address "
                        "or run 'ray start --head' first") from None  # fmt: skip


def executor(name: str, backbone: ClipBackbone | None = None, address: str | None = None) -> Executor:
    """The executor called ``name`` (``local`` reuses the driver's ``backbone``)."""
    if name == "ray":
        return RayExecutor(address)
    return LocalExecutor(backbone)

