"""``fsas-bench`` command line: run a sweep, regenerate leaderboards, list what is available."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from fsas_bench.errors import UserError
from fsas_bench.numbers import MAX_SEED, strict_int
from fsas_bench.trainer import quiet_warnings

if TYPE_CHECKING:
    from fsas_bench.progress import PhaseUpdate
    from fsas_bench.runner.regress import Selection, SnapshotConfig
    from fsas_bench.runner.sweep import Sweep, SweepSpec
    from fsas_bench.runner.tasks import CellOutcome

EMBEDDED_RUN_NAME = "embedded"
DEFAULT_OUT_ROOT = "fsas-results"
"""Where runs write without --out: an untracked folder (the committed example lives in results/embedded/)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as a one-line UserError instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message}: see '{self.prog} --help'")


def _int_list(text: str, what: str, minimum: int, maximum: int | None = None) -> tuple[int, ...]:
    """Comma-separated ASCII integers in [minimum, maximum], each once."""
    parsed = [strict_int(p.strip()) for p in text.split(",")]
    if any(v is None or v < minimum for v in parsed):
        raise UserError(f"--{what} '{text}' is malformed: give comma-separated integers >= {minimum}, e.g. 0,1,2")
    values = tuple(v for v in parsed if v is not None)
    if maximum is not None and max(values) > maximum:
        raise UserError(f"--{what} '{text}' is out of range: give integers from {minimum} to {maximum}")
    if len(set(values)) != len(values):
        raise UserError(f"--{what} '{text}' repeats a value: list each value once")
    return values


def _strict_int(bounds: tuple[int, int] | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an ASCII integer, within ``bounds`` (inclusive) when given (other range checks stay
    with the options' users)."""
    wants = "" if bounds is None else f" in [{bounds[0]}, {bounds[1]}]"

    def parse(text: str) -> int:
        value = strict_int(text.strip())
        if value is None or (bounds is not None and not bounds[0] <= value <= bounds[1]):
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer{wants}")
        return value

    return parse


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip()) if text else ()


def _set_items(items: list[str]) -> dict[str, dict[str, str]]:
    """``--set method.field=value`` items as method → {field: text} (syntax and method names; imports nothing)."""
    from fsas_bench.methods import check_method_name

    result: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        method, dot, name = target.partition(".")
        if not sep or not dot or not name:
            raise UserError(f"--set '{item}' is malformed: write METHOD.FIELD=VALUE, e.g. dictas.epochs=10")
        check_method_name(method)
        result.setdefault(method, {})[name] = value
    return result


def _with_textures(
    overrides: dict[str, dict[str, str]], textures: Path | None, methods: tuple[str, ...]
) -> dict[str, dict[str, str]]:
    """``overrides`` plus ``anomaly_textures`` for every selected method whose config has that field."""
    from fsas_bench.methods import get_method, list_methods

    if textures is None:
        return overrides
    result = {method: dict(fields) for method, fields in overrides.items()}
    for method in methods or tuple(list_methods()):
        if "anomaly_textures" in get_method(method).config_cls().to_dict():
            result.setdefault(method, {})["anomaly_textures"] = str(textures)
    return result


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``run`` (and ``plan``, which checks and shows the same sweep)."""
    parser.add_argument("--methods", help="comma-separated method names (default: all registered)")
    parser.add_argument("--datasets", help="comma-separated dataset names (default: the embedded synthetic set)")
    parser.add_argument("--categories", help="comma-separated categories (default: all)")
    parser.add_argument("--shots", default="1,2,4", help="shot counts k (default 1,2,4; 0 = zero-shot)")
    parser.add_argument("--seeds", help="manifest seeds (default 0,1,2)")
    parser.add_argument("--shot-list", type=Path, action="append", default=[],
                        help="fixed references instead of seeded draws (repeatable): a DictAS fix_<k>-shot.txt, a "
                             "PromptAD seeds folder or an fsas-bench manifest; needs one --datasets")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="METHOD.FIELD=VALUE",
                        help="override a method config field, e.g. dictas.epochs=10 (repeatable; recorded in flags)")
    parser.add_argument("--mode", default="benchmark", choices=("benchmark", "faithful"),
                        help="benchmark (default) or faithful: each method's released-code preset where it has one "
                             "(see 'fsas-bench list'; the others run in benchmark mode; recorded in the mode column)")
    parser.add_argument("--anomaly-textures", type=Path,
                        help="texture folder (e.g. DTD images) for synthetic anomalies of methods that paste them")
    parser.add_argument("--data-root", type=Path, help="folder holding one sub-folder per dataset (mvtec/, visa/, ...)")
    parser.add_argument("--backbone", default="fsas-tiny", help="open_clip architecture (default fsas-tiny)")
    parser.add_argument("--pretrained", help="weights: shipped or open_clip tag, local checkpoint file, or 'none' for "
                        "seeded random weights (default: fsas-synthetic for fsas-tiny)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batch-size", type=_strict_int(), default=8, help="query batch size; never changes any number")
    parser.add_argument("--eval-size", default="native", help="'native' (default) or N for an N×N evaluation frame")
    parser.add_argument("--mask-resize", default="area>0.5", help="mask rule when --eval-size N (default area>0.5)")
    parser.add_argument("--out", type=Path, help="output directory (default fsas-results/<run-name>, untracked)")
    parser.add_argument("--no-resume", action="store_true", help="recompute cells already finished in --out")
    parser.add_argument("--feature-cache", type=Path, help="optional directory persisting backbone features")
    parser.add_argument("--executor", default="local", choices=("local", "ray"),
                        help="local (default): this process; ray: tasks on a Ray cluster (pip install "
                             "'fsas-bench[ray]'; --out must be on a filesystem every node shares)")  # fmt: skip
    parser.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray instance)")
    parser.add_argument("--save-examples", type=_strict_int(), metavar="N",
                        help="example test images per category whose maps (seed 0) are kept, with every cell's "
                             "ROC/PRO curves, for 'report --html' (default 4; 0 keeps no pictures)")  # fmt: skip
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="autocast precision of the frozen backbone (default fp32; recorded in every row)")
    parser.add_argument("--encode-batch", type=_strict_int((1, 4096)), metavar="N",
                        help="images per backbone forward when a category is encoded ahead (default 1 on CPU, 32 "
                             "on a GPU); never changes a feature on CPU")  # fmt: skip
    parser.add_argument("--workers", type=_strict_int((0, 256)), metavar="N",
                        help="image decode processes (default: the CPUs but one, at most 8; 0 = main process)")
    parser.add_argument("--cache-memory", metavar="BYTES",
                        help="most feature bytes held in memory, e.g. 2G (default: a quarter of the machine's "
                             "memory, shared by the tasks it runs at once); older features are read back from "
                             "the --feature-cache folder, or spilled under --out/.spill/")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    parser = _Parser(prog="fsas-bench", description="Few-shot anomaly segmentation benchmark.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="sweep methods × datasets × categories × shots × seeds")
    _add_sweep_arguments(run)
    plan = sub.add_parser("plan", help="check a sweep and print its task graph without running it")
    _add_sweep_arguments(plan)
    plan.add_argument("--json", action="store_true", help="print the task graph as JSON")
    reg = sub.add_parser("regress", help="compare a run with a committed regression snapshot (exit 1 on drift)")
    reg.add_argument("--against", type=Path, required=True, help="snapshot CSV; its sidecar is the same name .json")
    reg.add_argument("--results", type=Path, help="results.csv (or its run directory) to compare; default: rerun "
                     "the snapshot's sweep (resuming in the cache directory)")  # fmt: skip
    reg.add_argument("--atol", type=float, help="one absolute tolerance for every metric (overrides the sidecar)")
    reg.add_argument("--update", action="store_true",
                     help="rewrite snapshot, sidecar and reference fits from a training run (deliberate)")
    reg.add_argument("--training", action="store_true",
                     help="retrain everything and check trained methods statistically (default: evaluate the "
                          "snapshot's reference fits and compare every value)")  # fmt: skip
    reg.add_argument("--device", default="cpu", help="device of the rerun: cpu (default) or cuda[:N]")
    for name in ("methods", "datasets", "categories", "shots", "seeds"):
        reg.add_argument(f"--{name}", help=f"compare (and rerun) only these {name}, comma-separated")
    report = sub.add_parser("report", help="regenerate leaderboard.md/.csv from DIR/results.csv")
    report.add_argument("dir", type=Path)
    report.add_argument("--html", action="store_true",
                        help="also write DIR/report.html (+ DIR/report_assets/): tables, plots, curves, example maps")
    lst = sub.add_parser("list", help="show methods, datasets (and availability) and backbones")
    lst.add_argument("--data-root", type=Path, help="also look for datasets in this folder")
    pre = sub.add_parser("pretrain-tiny-clip", help="train fsas-tiny on captioned synthetic images (fsas-synthetic)")
    pre.add_argument("--out", type=Path, required=True, help="weights file to write (fp16 safetensors)")
    pre.add_argument("--seed", type=_strict_int((0, MAX_SEED)),
                     help="seed of the whole run (default 0, the shipped weights' seed)")
    pre.add_argument("--epochs", type=_strict_int(), help="passes over the pairs (default: the shipped recipe's)")
    pre.add_argument("--resume", action="store_true", help="continue from <out>.run/checkpoints/last.ckpt")
    syn = sub.add_parser("synth", help="write a synthetic dataset at real-data scale (an MVTec tree for --data-root)")
    syn.add_argument("--preset", required=True, choices=("mvtec-scale",),
                     help="mvtec-scale: MVTec AD's 15 categories, counts and image sides (5,354 PNGs)")
    syn.add_argument("--out", type=Path, required=True, help="folder to pass as --data-root (writes OUT/mvtec/)")
    syn.add_argument("--categories", help="comma-separated categories (default: all)")
    syn.add_argument("--limit", type=_strict_int(), metavar="N", help="at most N images per split and defect type")
    return parser


class _Interrupted(Exception):
    """Ctrl-C during a sweep, after ``done`` of ``total`` cells (finished cells are kept)."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done} of {total} cells; rerun the same command to resume")


def _is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, also as Lightning reports it: it catches KeyboardInterrupt inside fit/predict and calls
    ``sys.exit(1)``, leaving SIGINT ignored."""
    return isinstance(exc, KeyboardInterrupt) or (
        isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt)
    )


def _prepare(spec: SweepSpec) -> Sweep:
    """The validated sweep, with a spinner while datasets are indexed (generated on first use), every used
    image is decoded (with a count) and the backbone and methods are built."""
    from fsas_bench.runner.sweep import Sweep

    what = "preparing the sweep: datasets (generated on first use), images, backbone, methods"
    with Console(stderr=True).status(what) as status:
        return Sweep(spec, lambda step, done, total: status.update(f"preparing the sweep: {step} {done}/{total}"))


def _run_with_progress(sweep: Sweep) -> list[CellOutcome]:
    """Run every cell of ``sweep`` with a progress bar on stderr (the outcomes); Ctrl-C raises
    :class:`_Interrupted`."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())  # fmt: skip
    finished = 0
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("cells", total=len(sweep.cells))
        phase_task = progress.add_task("", total=None, visible=False)
        current_phase = ""

        def show_phase(update: PhaseUpdate | None) -> None:
            nonlocal current_phase
            if update is None:
                current_phase = ""
                progress.update(phase_task, visible=False)
                return
            if update.phase != current_phase:  # a new phase: its own ETA from its own speed
                current_phase = update.phase
                progress.reset(phase_task, total=update.total)
            progress.update(phase_task, description=f"  {update.description}", completed=update.completed,
                            total=update.total, visible=True)  # fmt: skip

        def advance(outcome: CellOutcome) -> None:
            nonlocal finished
            finished += 1
            cell = outcome.cell
            state = "resumed" if outcome.skipped else "done"
            progress.update(task, advance=1, description=f"{cell.method} {cell.dataset}/{cell.category} "
                            f"k={cell.shot} seed={cell.seed} {state}")  # fmt: skip

        try:
            return sweep.run(advance, show_phase)
        except (KeyboardInterrupt, SystemExit) as exc:
            if not _is_interrupt(exc):
                raise
            raise _Interrupted(finished, len(sweep.cells)) from None


@dataclass(frozen=True)
class _RunArgs:
    """The ``run`` options after the checks that need no heavy import (torch, lightning, open_clip)."""

    out: Path
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    overrides: dict[str, dict[str, str]]


def _check_run_args(args: argparse.Namespace) -> _RunArgs:
    """Every ``run`` check that is cheap, before torch is imported (a bad argument is refused at once)."""
    from fsas_bench.data.registry import check_dataset_name
    from fsas_bench.files import check_writable_dir
    from fsas_bench.methods import check_method_name
    from fsas_bench.options import check_device_name, parse_bytes, parse_eval_size

    methods, datasets = _names(args.methods), _names(args.datasets)
    for method in methods:
        check_method_name(method)
    if args.shot_list and args.seeds:
        raise UserError("--seeds and --shot-list exclude each other: fixed lists carry their own references")
    shots = _int_list(args.shots, "shots", 0)
    seeds = _int_list(args.seeds or "0,1,2", "seeds", 0, MAX_SEED)
    overrides = _set_items(args.set)
    if args.anomaly_textures is not None and not args.anomaly_textures.is_dir():
        raise UserError(f"--anomaly-textures '{args.anomaly_textures}' is not a directory: pass a folder of texture "
                        "images")  # fmt: skip
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} is invalid: use a positive integer")
    if args.save_examples is not None and args.save_examples < 0:
        raise UserError(f"--save-examples {args.save_examples} is invalid: use 0 (no pictures) or a positive integer")
    parse_eval_size(args.eval_size, args.mask_resize)
    check_device_name(args.device)
    if args.cache_memory is not None:
        parse_bytes(args.cache_memory, "--cache-memory")
    for name in datasets:
        check_dataset_name(name, args.data_root)
    out = args.out or Path(DEFAULT_OUT_ROOT) / (
        EMBEDDED_RUN_NAME if not datasets and args.data_root is None and args.backbone == "fsas-tiny"
        else "_".join([*(datasets or ("all",)), args.backbone])
    )  # fmt: skip
    check_writable_dir(out, "--out")
    if args.feature_cache is not None:
        check_writable_dir(args.feature_cache, "--feature-cache")
    return _RunArgs(out, methods, datasets, shots, seeds, overrides)


def _sweep_spec(args: argparse.Namespace) -> SweepSpec:
    """The sweep of the ``run``/``plan`` options (cheap checks first, then the heavy imports)."""
    checked = _check_run_args(args)
    from fsas_bench.backbones.registry import default_pretrained
    from fsas_bench.metrics.frame import EvalFrame
    from fsas_bench.options import parse_bytes
    from fsas_bench.runner.sweep import SweepSpec

    return SweepSpec(
        out=checked.out,
        methods=checked.methods,
        datasets=checked.datasets,
        categories=_names(args.categories),
        shots=checked.shots,
        seeds=checked.seeds,
        shot_lists=tuple(args.shot_list),
        overrides=_with_textures(checked.overrides, args.anomaly_textures, checked.methods),
        data_root=args.data_root,
        backbone=args.backbone,
        pretrained=args.pretrained or default_pretrained(args.backbone),
        device=args.device,
        batch_size=args.batch_size,
        frame=EvalFrame.parse(args.eval_size, args.mask_resize),
        resume=not args.no_resume,
        feature_cache_dir=args.feature_cache,
        mode=args.mode,
        executor=args.executor,
        ray_address=args.ray_address,
        **({} if args.save_examples is None else {"save_examples": args.save_examples}),
        precision=args.precision,
        encode_batch=args.encode_batch,
        workers=args.workers,
        cache_memory=None if args.cache_memory is None else parse_bytes(args.cache_memory, "--cache-memory"),
    )


def _run(args: argparse.Namespace, console: Console) -> None:
    spec = _sweep_spec(args)
    from fsas_bench.runner.leaderboard import aggregate, load_results, with_variants, write_leaderboards

    out = spec.out
    sweep = _prepare(spec)
    _report_benchmark_only(sweep, console)
    outcomes = _run_with_progress(sweep)
    md_path, csv_path = write_leaderboards(out)
    results = load_results(out / "results.csv")
    table = with_variants(aggregate(results), results)
    summary = Table(title=f"fsas-bench summary ({out})")
    for col in ("dataset", "method", "k", "I-AUROC", "P-AUROC", "AUPRO"):
        summary.add_column(col)
    wide = table.pivot_table(index=["dataset", "variant", "shot"], columns="metric", values="mean")
    for (dataset, variant, shot), row in wide.iterrows():
        summary.add_row(dataset, variant, str(shot),
                        *(f"{100 * row[m]:.1f}" if m in row and row[m] == row[m] else "—"
                          for m in ("I-AUROC", "P-AUROC", "AUPRO")))  # fmt: skip
    console.print(summary)
    from fsas_bench.runner.tasks import cache_totals

    hits, misses, forwards = cache_totals(outcomes)
    console.print(f"feature cache (cells of this run): {hits} hits, {misses} misses, {forwards} backbone forwards")
    console.print(f"results: {out / 'results.csv'}\nleaderboards: {md_path}, {csv_path}")


def _plan(args: argparse.Namespace, console: Console) -> None:
    """Check the sweep like ``run`` does (nothing is written) and print its task graph."""
    import json

    sweep = _prepare(_sweep_spec(args))
    graph = sweep.plan.graph()
    if args.json:
        print(json.dumps(graph, indent=1))
        return
    table = Table(title=f"task graph of run {graph['run_id']}: {graph['cells']} cells, {len(graph['tasks'])} tasks, "
                        f"width {graph['width']}, depth {graph['depth']}")  # fmt: skip
    for col in ("task", "images", "cells", "after"):
        table.add_column(col)
    for task in graph["tasks"]:
        table.add_row(task["id"], str(task["images"]), str(task["cells"]), ", ".join(task["after"]) or "—")
    console.print(table)


def _report_benchmark_only(sweep: Sweep, console: Console) -> None:
    """State which methods ``--mode faithful`` leaves in benchmark mode (no faithful preset)."""
    if sweep.benchmark_only:
        console.print(f"--mode {sweep.spec.mode}: no {sweep.spec.mode} preset for {', '.join(sweep.benchmark_only)}, "
                      "which run in benchmark mode (their rows say mode=benchmark)")  # fmt: skip


def _rerun(config: SnapshotConfig, selection: Selection, device: str, fits: Path | None, console: Console) -> Path:
    """Run (resuming) the snapshot's sweep restricted to ``selection``, evaluating the reference ``fits`` (None:
    training everything); the path of its results.csv."""
    from fsas_bench.runner.regress import sweep_spec

    sweep = _prepare(sweep_spec(config, selection, device, fits))
    what = "training every method" if fits is None else f"evaluating the reference fits in {fits}"
    console.print(f"running the snapshot's sweep ({len(sweep.cells)} cells, resumable; {what}) in {sweep.spec.out}")
    _report_benchmark_only(sweep, console)
    _run_with_progress(sweep)
    return sweep.spec.out / "results.csv"


def _regress(args: argparse.Namespace, console: Console) -> int:
    shots = _int_list(args.shots, "shots", 0) if args.shots else ()
    seeds = _int_list(args.seeds, "seeds", 0, MAX_SEED) if args.seeds else ()
    if args.atol is not None and not 0 <= args.atol < float("inf"):
        raise UserError(f"--atol {args.atol} is invalid: use a non-negative number such as 1e-6")
    from fsas_bench.runner import regress as rg
    from fsas_bench.runner.results import RESULT_COLUMNS

    selection = rg.Selection(
        methods=_names(args.methods), datasets=_names(args.datasets), categories=_names(args.categories),
        shots=shots, seeds=seeds,
    )  # fmt: skip
    sidecar = rg.sidecar_path(args.against)
    first_time = args.update and not sidecar.exists()
    config = rg.SnapshotConfig() if first_time else rg.SnapshotConfig.load(sidecar)
    if args.update:
        if selection != rg.Selection() or args.training:
            raise UserError(
                "--update rewrites the whole snapshot from a training run: drop --training and "
                "--methods/--datasets/--categories/--shots/--seeds"
            )
        results_csv = args.results or _rerun(config, selection, args.device, None, console)
        results = rg.read_tidy(results_csv, "results", RESULT_COLUMNS)
        rg.check_matches(config.sweep, results)
        run_dir = results_csv if results_csv.is_dir() else results_csv.parent
        n_fits = rg.write_snapshot(args.against, config, results, run_dir)
        console.print(f"wrote {args.against} ({len(results)} rows), {sidecar} and {n_fits} reference fits")
        return 0
    snapshot = rg.read_tidy(args.against, "snapshot", rg.KEY + ("value",) + rg.PROTOCOL)
    selection.check_within(snapshot)
    fits = rg.fits_dir(args.against, config)
    if args.training and fits is None:
        raise UserError(f"--training needs reference fits (their recorded losses): regenerate {args.against} "
                        "with --update")  # fmt: skip
    results_csv = args.results or _rerun(config, selection, args.device, None if args.training else fits, console)
    current = selection.apply(rg.read_tidy(results_csv, "results", rg.KEY + ("value", "device") + rg.PROTOCOL))
    if args.training:
        run_dir = results_csv if results_csv.is_dir() else results_csv.parent
        comparison = rg.compare_training(selection.apply(snapshot), current, config, args.atol, fits, run_dir)
    else:
        comparison = rg.compare(selection.apply(snapshot), current, rg.bounds_for(config, current, args.atol))
    rg.render(comparison, console)
    return 0 if comparison.holds else 1


def _report(args: argparse.Namespace, console: Console) -> None:
    if not (args.dir / "results.csv").is_file():
        raise UserError(f"'{args.dir / 'results.csv'}' not found: pass the --out directory of a run")
    from fsas_bench.runner.leaderboard import write_leaderboards

    for path in write_leaderboards(args.dir):
        console.print(f"wrote {path}")
    if args.html:
        from fsas_bench.runner.html_report import write_html_report

        console.print(f"wrote {write_html_report(args.dir)}")


def _synth(args: argparse.Namespace, console: Console) -> None:
    from fsas_bench.data.synthetic.scale import write_scale_preset

    with Progress(TextColumn("writing {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:  # fmt: skip
        task = progress.add_task(args.preset, total=None)
        count = write_scale_preset(args.preset, args.out, _names(args.categories), args.limit,
                                   lambda done, total: progress.update(task, completed=done, total=total))  # fmt: skip
    done = f"wrote {count} images to" if count else "already written (the same request):"
    console.print(f"{done} {args.out / 'mvtec'}: use --data-root {args.out} --datasets mvtec")


def _list(args: argparse.Namespace, console: Console) -> None:
    from fsas_bench.backbones import list_backbones
    from fsas_bench.backbones.registry import shipped_arches, shipped_tags
    from fsas_bench.data.registry import EMBEDDED_DATASET, catalog
    from fsas_bench.methods import get_method, list_methods

    methods = Table(title="methods")
    for col in ("name", "fit scope", "zero-shot", "transductive", "faithful preset"):
        methods.add_column(col)
    for name in list_methods():
        cls = get_method(name)
        preset = cls.config_cls.faithful_preset(EMBEDDED_DATASET)
        faithful = "yes" if preset is not None else "no (runs benchmark)"
        transductive = [mode for mode, config in (("benchmark", cls.config_cls()), ("faithful", preset))
                        if config is not None and config.transductive]  # fmt: skip
        methods.add_row(name, cls.fit_scope, "yes" if cls.supports_zero_shot else "no",
                        " and ".join(transductive) or "no", faithful)  # fmt: skip
    datasets = Table(title="datasets")
    for col in ("name", "source", "available", "note"):
        datasets.add_column(col)
    for entry in catalog(args.data_root):
        datasets.add_row(entry.name, entry.source, "yes" if entry.available else "no", entry.note)
    console.print(methods, datasets)
    shipped = sorted(shipped_arches())
    others = [a for a in list_backbones() if a not in shipped]
    described = [f"{arch} (weights: {', '.join([*shipped_tags(arch), 'none = random'])})" for arch in shipped]
    console.print(f"backbones: shipped {', '.join(described)}; open_clip: {', '.join(others)}")


def _pretrain_tiny_clip(args: argparse.Namespace, console: Console) -> None:
    from fsas_bench.pretrain import PretrainConfig, pretrain

    given = {"seed": args.seed, "epochs": args.epochs, "resume": args.resume}
    path = pretrain(PretrainConfig(out=args.out, **{k: v for k, v in given.items() if v is not None}))
    console.print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fsas-bench`` console script; returns the exit status."""
    console = Console()
    try:
        args = build_parser().parse_args(argv)
        handlers = {"run": _run, "plan": _plan, "regress": _regress, "report": _report, "list": _list,
                    "pretrain-tiny-clip": _pretrain_tiny_clip, "synth": _synth}  # fmt: skip
        with quiet_warnings():  # Lightning's warnings that no user can act on
            status = handlers[args.command](args, console)
    except UserError as err:
        print(f"fsas-bench: error: {err}", file=sys.stderr)
        return 2
    except _Interrupted as err:
        return _interrupted(str(err))
    except (KeyboardInterrupt, SystemExit) as exc:
        if not _is_interrupt(exc):
            raise
        return _interrupted("interrupted; rerun the same command to resume")
    return status or 0


def _interrupted(message: str) -> int:
    """Say ``message`` in one line, restore Ctrl-C (Lightning leaves it ignored) and give exit status 130."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"fsas-bench: {message}", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
