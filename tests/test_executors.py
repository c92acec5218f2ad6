"""Plan → train → evaluate → merge: the task graph, executors (local and a real local Ray instance), run
identity, cell validation and the one merge at the end."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fsas_bench.cli import main
from fsas_bench.data.manifests import support_samples
from fsas_bench.errors import UserError
from fsas_bench.hashing import sha256_file
from fsas_bench.metrics.frame import EvalFrame
from fsas_bench.runner.leaderboard import write_leaderboards
from fsas_bench.runner.plan import SweepPlan
from fsas_bench.runner.results import ResultStore
from fsas_bench.runner.sweep import Sweep, SweepSpec
from fsas_bench.runner.tasks import train

SMALL = {"methods": ("patchknn", "dictas"), "categories": ("tile", "hex_nut"), "shots": (1,), "seeds": (0,),
         "overrides": {"dictas": {"epochs": "1"}}}  # fmt: skip
"""Two units (categories), one auxiliary training (dictas) that both units depend on."""


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The small sweep run by the local executor (the reference of every comparison here)."""
    out = tmp_path_factory.mktemp("local") / "out"
    Sweep(SweepSpec(out=out, **SMALL)).run()
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    return out


def _cell_files(out: Path) -> list[Path]:
    return sorted(p for p in (out / "cells").glob("*.csv") if not p.name.endswith(".timing.csv"))


def _tree(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime for p in out.rglob("*")}


def test_plan_lists_trainings_before_the_units_that_need_them_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never-written"
    sweep = Sweep(SweepSpec(out=out, **SMALL))
    plan = pickle.loads(pickle.dumps(sweep.plan))  # what a Ray worker receives
    graph = plan.graph()
    assert graph == sweep.plan.graph()
    train_ids = [t["id"] for t in graph["tasks"] if t["kind"] == "train"]
    units = {t["id"]: t for t in graph["tasks"] if t["kind"] == "unit"}
    assert len(train_ids) == 1 and set(units) == {"unit:synthetic/tile", "unit:synthetic/hex_nut"}
    assert all(u["after"] == train_ids and u["cells"] == 2 for u in units.values())
    index = sweep.indexes["synthetic"]
    for unit in plan.units:  # images per unit: its test split and its references, each once
        manifest = sweep.manifests[("synthetic", 1, 0)]
        expected = {s.image_path for s in index.split(unit.category, "test")}
        expected |= {s.image_path for s in support_samples(manifest, index, unit.category)}
        assert units[f"unit:{unit.name}"]["images"] == len(expected)
    args = ["plan", "--methods", "patchknn,dictas", "--categories", "tile,hex_nut", "--shots", "1", "--seeds", "0",
            "--set", "dictas.epochs=1", "--pretrained", "none", "--out", str(out), "--json"]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == graph
    assert not out.exists()


def _kill_first_unit_task(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker process seen running a unit task (its title is ``ray::fsas-unit``)."""
    while not stop.is_set() and not killed:
        for proc in Path("/proc").iterdir():
            try:
                title = (proc / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if proc.name.isdigit() and title.startswith(b"ray::fsas-unit"):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
                return
        time.sleep(0.02)


@pytest.mark.slow
def test_ray_executor_gives_the_local_bytes_and_retries_a_killed_worker(tmp_path, local_run):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_unit_task, args=(killed, stop))
    killer.start()
    try:
        out = tmp_path / "ray"
        outcomes = Sweep(SweepSpec(out=out, executor="ray", **SMALL)).run()
    finally:
        stop.set()
        killer.join()
        ray.shutdown()
    assert killed, "no unit task was seen running"
    assert len(outcomes) == 4 and not any(o.skipped for o in outcomes)
    assert (out / "results.csv").read_bytes() == (local_run / "results.csv").read_bytes()
    ckpt = sorted((out / "checkpoints").rglob("*.safetensors"))
    assert [p.read_bytes() for p in ckpt] == [p.read_bytes() for p in sorted((local_run / "checkpoints").rglob("*.safetensors"))]


def test_bad_or_truncated_cells_are_recomputed_and_results_csv_rebuilt(tmp_path, local_run):
    out = _copy(local_run, tmp_path)
    garbage, truncated = _cell_files(out)[:2]
    garbage.write_text("this is not a cell\n")
    lines = truncated.read_text().splitlines(keepends=True)
    truncated.write_text("".join(lines[:-1]))  # cut at a row boundary: one metric missing
    (out / "results.csv").unlink()
    outcomes = Sweep(SweepSpec(out=out, **SMALL)).run()
    recomputed = {o.job_id for o in outcomes if not o.skipped}
    assert recomputed == {garbage.stem, truncated.stem}
    assert (out / "results.csv").read_bytes() == (local_run / "results.csv").read_bytes()


def test_results_csv_is_rebuilt_when_every_cell_resumes(tmp_path, local_run):
    out = _copy(local_run, tmp_path)
    (out / "results.csv").write_text("run_id,job_id\ntorn")
    assert all(o.skipped for o in Sweep(SweepSpec(out=out, **SMALL)).run())
    assert (out / "results.csv").read_bytes() == (local_run / "results.csv").read_bytes()


def test_another_protocol_is_refused_before_writing_and_a_grid_extension_merges(tmp_path, local_run):
    out = _copy(local_run, tmp_path)
    before = _tree(out)
    with pytest.raises(UserError, match="holds results of another sweep \\(frame differ\\): use another --out"):
        Sweep(SweepSpec(out=out, frame=EvalFrame(size=64, mask_resize="area>0.5"), **SMALL))
    assert _tree(out) == before
    extension = {**SMALL, "methods": ("patchknn",), "seeds": (0, 1)}
    outcomes = Sweep(SweepSpec(out=out, **extension)).run()
    assert sum(not o.skipped for o in outcomes) == 2  # seed 1 of both categories; seed 0 resumed
    merged = ResultStore(out).results_csv.read_text().splitlines()
    original = (local_run / "results.csv").read_text().splitlines()
    assert len(merged) == len(original) + 2 * 7 and set(original) <= set(merged)


def test_ablations_in_one_out_give_labelled_leaderboard_rows(tmp_path, local_run):
    out = _copy(local_run, tmp_path)
    ablation = {**SMALL, "methods": ("patchknn",), "overrides": {"patchknn": {"sigma": "2"}}}
    Sweep(SweepSpec(out=out, **ablation)).run()
    text = write_leaderboards(out)[0].read_text()
    assert "| patchknn {defaults} (1-shot) |" in text and "| patchknn {sigma=2.0} (1-shot) |" in text
    assert "| dictas (1-shot) |" in text  # one config of dictas: no label


def _train_and_report(plan: SweepPlan, report: Path) -> None:
    """Run the plan's first training task; write its outcome to ``report``."""
    outcome = train(plan, plan.trainings[0])
    report.write_text(json.dumps({"seconds": outcome.seconds, "sha256": outcome.sha256}))


@pytest.mark.slow
def test_concurrent_runs_into_one_out_train_each_checkpoint_once(tmp_path, local_run):
    plan = Sweep(SweepSpec(out=tmp_path / "shared", **SMALL)).plan
    spawn = multiprocessing.get_context("spawn")  # two processes, as two runs or two Ray nodes sharing --out
    reports = [tmp_path / f"report{i}.json" for i in range(2)]
    processes = [spawn.Process(target=_train_and_report, args=(plan, r)) for r in reports]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert [p.exitcode for p in processes] == [0, 0]
    outcomes = [json.loads(r.read_text()) for r in reports]
    assert sum(o["seconds"] > 0 for o in outcomes) == 1, "the second process must wait and reuse the checkpoint"
    reference = next((local_run / "checkpoints").rglob("*.safetensors"))
    assert outcomes[0]["sha256"] == outcomes[1]["sha256"] == sha256_file(reference)


@pytest.mark.slow
def test_two_concurrent_runs_into_one_out_lose_and_duplicate_no_row(tmp_path, local_run):
    out = tmp_path / "shared"
    command = [sys.executable, "-m", "fsas_bench.cli", "run", "--methods", "patchknn,dictas", "--categories",
               "tile,hex_nut", "--shots", "1", "--seeds", "0", "--set", "dictas.epochs=1", "--pretrained", "none",
               "--out", str(out)]  # fmt: skip
    runs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=600) == 0, run.stderr.read().decode()[-2000:]
    assert (out / "results.csv").read_bytes() == (local_run / "results.csv").read_bytes()
    assert len(list((out / "checkpoints").rglob("*.safetensors"))) == 1


def test_job_ids_do_not_depend_on_where_or_how_a_sweep_runs(tmp_path):
    local = Sweep(SweepSpec(out=tmp_path / "a", **SMALL)).plan
    ray = Sweep(SweepSpec(out=tmp_path / "b", executor="ray", batch_size=3, **SMALL)).plan
    assert local.job_ids == ray.job_ids and local.run_id == ray.run_id


def test_training_seconds_are_counted_once_per_checkpoint(local_run):
    """Two units use one checkpoint: its training time is in the timing of one cell only (the first user)."""
    import csv

    with (local_run / "timings.csv").open(encoding="utf-8") as fh:
        trained = [row for row in csv.DictReader(fh) if row["time_train_s"]]
    assert len(trained) == 1 and float(trained[0]["time_train_s"]) > 0


def test_ray_tasks_request_the_cpus_their_threads_use(tmp_path):
    """Never more busy threads than cores: a CPU task asks for the plan's torch threads (at most a node's CPUs)."""
    from dataclasses import replace

    from fsas_bench.runner.executors import task_resources

    plan = replace(Sweep(SweepSpec(out=tmp_path / "a", executor="ray", **SMALL)).plan, threads=4)
    assert task_resources(plan, largest_node_cpus=16) == {"num_cpus": 4}
    assert task_resources(plan, largest_node_cpus=2) == {"num_cpus": 2}
    assert task_resources(replace(plan, spec=replace(plan.spec, device="cuda")), 16) == {"num_gpus": 1}


def test_the_default_memory_budget_is_shared_by_the_tasks_a_node_runs_at_once(tmp_path):
    from dataclasses import replace

    from fsas_bench.backbones import default_memory_budget
    from fsas_bench.runner.executors import node_tasks
    from fsas_bench.runner.tasks import Worker

    nodes = [{"CPU": 16.0, "GPU": 4.0, "memory": 1e11}, {"CPU": 2.0}]
    assert node_tasks({"num_cpus": 4}, nodes) == 4 and node_tasks({"num_gpus": 1}, nodes) == 4
    assert node_tasks({"num_cpus": 4}, [{"CPU": 2.0}]) == 1  # at least one
    quarter = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    assert default_memory_budget() <= quarter and default_memory_budget(4) == default_memory_budget() // 4
    plan = Sweep(SweepSpec(out=tmp_path, **SMALL)).plan
    assert Worker(replace(plan, node_tasks=3)).cache.memory_budget == default_memory_budget() // 3
