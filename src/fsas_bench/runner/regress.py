"""Regression snapshots: compare a run's tidy results with a committed snapshot, value by value.

A snapshot is ``<name>.csv`` (the tidy results minus the volatile columns) plus a sidecar ``<name>.json``
holding the sweep that produced it (so ``fsas-bench regress`` can rerun it) and per-metric absolute
tolerances for CPU runs (bit-reproducible: 1e-6) and CUDA runs (cuDNN/TF32 nondeterminism: 5e-3, i.e. half a
point). Every (method, dataset, category, shot, seed, metric) value is compared; protocol columns (config
hash, backbone, weights, manifest, evaluation frame, status, ...) must match exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

import fsas_bench
from fsas_bench.backbones.registry import default_pretrained
from fsas_bench.data.registry import cache_dir
from fsas_bench.errors import UserError
from fsas_bench.evaluation import EvalFrame
from fsas_bench.hashing import sha256_json
from fsas_bench.runner.leaderboard import METRICS
from fsas_bench.runner.provenance import provenance
from fsas_bench.runner.results import RESULT_COLUMNS, atomic_write_text
from fsas_bench.runner.sweep import SweepSpec

KEY = ("method", "dataset", "category", "shot", "seed", "metric")
VOLATILE = ("run_id", "job_id", "git_sha", "fsas_version", "torch", "open_clip", "device")
SNAPSHOT_COLUMNS = tuple(c for c in RESULT_COLUMNS if c not in VOLATILE)
PROTOCOL = (
    "mode", "method_cfg_hash", "backbone", "pretrained", "image_size", "fit_scope", "train_dataset", "train_seed",
    "transductive", "shot_manifest_sha", "level", "metric_impl", "fpr_limit", "eval_size", "mask_resize",
    "connectivity", "n_test", "n_anomalous", "status",
)  # fmt: skip
DEFAULT_TOLERANCES = {"cpu": {"*": 1e-6}, "cuda": {"*": 5e-3}}
_SHOWN = 50  # rows per table before "... and N more"


@dataclass(frozen=True)
class SnapshotSweep:
    """The sweep a snapshot records (the ``sweep`` section of the sidecar; ``fsas-bench run`` option values).

    ``methods``/``categories`` empty = every registered method / every category; ``pretrained`` null = the
    weights ``fsas-bench run`` uses by default for the backbone, ``"none"`` = seeded random weights.
    """

    methods: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ("synthetic",)
    categories: tuple[str, ...] = ()
    shots: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0, 1, 2)
    backbone: str = "fsas-tiny"
    pretrained: str | None = None
    eval_size: str = "native"
    mask_resize: str = "area>0.5"
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # method → {field: value} (``--set``)
    mode: str = "benchmark"  # ``--mode`` (absent in older sidecars: benchmark)


@dataclass(frozen=True)
class Selection:
    """A slice of the snapshot (``--methods/--datasets/--categories/--shots/--seeds``); empty = all."""

    methods: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    shots: tuple[int, ...] = ()
    seeds: tuple[int, ...] = ()

    def items(self) -> list[tuple[str, tuple[str, ...]]]:
        """(column, allowed values as text) of each active filter."""
        columns = {"methods": "method", "datasets": "dataset", "categories": "category", "shots": "shot",
                   "seeds": "seed"}  # fmt: skip
        return [(column, tuple(map(str, getattr(self, name)))) for name, column in columns.items()
                if getattr(self, name)]  # fmt: skip

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` inside the slice."""
        keep = pd.Series(True, index=frame.index)
        for column, values in self.items():
            keep &= frame[column].isin(values)
        return frame[keep]

    def check_within(self, snapshot: pd.DataFrame) -> None:
        """Every filter value must occur in the snapshot (else the slice would silently compare nothing)."""
        for column, values in self.items():
            present = set(snapshot[column])
            for value in values:
                if value not in present:
                    raise UserError(
                        f"{column} '{value}' is not in the snapshot (it has {', '.join(sorted(present))}): "
                        f"pick from those or regenerate the snapshot with --update"
                    )


@dataclass(frozen=True)
class SnapshotConfig:
    """A snapshot's sidecar: the recorded sweep and the tolerances (``{"cpu"|"cuda": {metric|"*": atol}}``)."""

    sweep: SnapshotSweep = field(default_factory=SnapshotSweep)
    tolerances: dict[str, dict[str, float]] = field(default_factory=lambda: DEFAULT_TOLERANCES)

    @classmethod
    def load(cls, path: Path) -> SnapshotConfig:
        """Parse and validate a sidecar (UserError naming the file and the fix)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(
                f"snapshot sidecar '{path}' not found: restore it, or create snapshot and sidecar with --update"
            ) from None
        except json.JSONDecodeError as err:
            raise UserError(f"snapshot sidecar '{path}' is not valid JSON ({err}): fix or regenerate it") from None
        if not isinstance(data, dict) or not isinstance(data.get("sweep", {}), dict):
            raise UserError(f"snapshot sidecar '{path}' must be a JSON object with a 'sweep' object: fix it")
        return cls(_check_sweep(data.get("sweep", {}), path),
                   _check_tolerances(data.get("tolerances", DEFAULT_TOLERANCES), path))  # fmt: skip

    def to_json(self, produced: dict[str, Any]) -> str:
        """Sidecar text: sweep, tolerances and what produced the snapshot."""
        doc = {
            "about": "fsas-bench regression snapshot: the sweep that produced the CSV (rerun by 'fsas-bench "
                     "regress') and absolute tolerances per metric ('*' = default) for cpu and cuda runs",
            "sweep": asdict(self.sweep),
            "tolerances": self.tolerances,
            "produced": produced,
        }  # fmt: skip
        return json.dumps(doc, indent=2, sort_keys=False) + "\n"

    def tolerance(self, metric: str, cuda: bool, atol: float | None = None) -> float:
        """The absolute tolerance of ``metric`` (``atol`` overrides every sidecar entry)."""
        if atol is not None:
            return atol
        table = self.tolerances["cuda" if cuda else "cpu"]
        return float(table.get(metric, table["*"]))


def _check_sweep(data: dict[str, Any], path: Path) -> SnapshotSweep:
    """The sidecar's sweep section, each key of the same JSON type as its default (lists for tuples)."""
    defaults = SnapshotSweep()
    for key, value in data.items():
        if key not in {f.name for f in fields(SnapshotSweep)}:
            names = ", ".join(f.name for f in fields(SnapshotSweep))
            raise UserError(f"snapshot sidecar '{path}': unknown sweep key '{key}': use {names}")
        default = getattr(defaults, key)
        expected = list if isinstance(default, tuple) else str if key == "pretrained" else type(default)
        if not (isinstance(value, expected) or (key == "pretrained" and value is None)):
            raise UserError(
                f"snapshot sidecar '{path}': sweep.{key} = {value!r} should be a JSON {expected.__name__}: fix it"
            )
    return SnapshotSweep(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _check_tolerances(data: object, path: Path) -> dict[str, dict[str, float]]:
    if not isinstance(data, dict) or set(data) != {"cpu", "cuda"}:
        raise UserError(f"snapshot sidecar '{path}': 'tolerances' needs exactly the keys 'cpu' and 'cuda'")
    for device, table in data.items():
        if not isinstance(table, dict) or "*" not in table:
            raise UserError(f"snapshot sidecar '{path}': tolerances.{device} needs a default entry '*'")
        for metric, atol in table.items():
            if metric != "*" and metric not in METRICS:
                raise UserError(
                    f"snapshot sidecar '{path}': unknown metric '{metric}' in tolerances.{device}: "
                    f"use '*' or one of {', '.join(METRICS)}"
                )
            if isinstance(atol, bool) or not isinstance(atol, int | float) or not 0 <= atol < math.inf:
                raise UserError(
                    f"snapshot sidecar '{path}': tolerances.{device}.{metric} = {atol!r} is not a tolerance: "
                    "use a non-negative number"
                )
    return data


def sidecar_path(snapshot: Path) -> Path:
    """``embedded.csv`` → ``embedded.json``."""
    return snapshot.with_suffix(".json")


def read_tidy(path: Path, what: str, required: Sequence[str]) -> pd.DataFrame:
    """A tidy CSV as text columns plus float ``value``; UserError when unreadable, incomplete or ambiguous."""
    if path.is_dir():
        path = path / "results.csv"
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        hint = "create it with --update" if what == "snapshot" else "pass the results.csv of a run"
        raise UserError(f"{what} '{path}' not found: {hint}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{what} '{path}' is not a readable CSV ({str(err).strip()}): fix or regenerate it") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UserError(
            f"{what} '{path}' lacks column(s) {', '.join(missing)}: pass a tidy results.csv written by fsas-bench"
        )
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = values.isna() & (frame["value"].str.lower() != "nan")
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise UserError(
            f"{what} '{path}' row {row + 2}: value '{frame['value'].iloc[row]}' is not a number: "
            "write a float or NaN"
        )
    frame["value"] = values
    duplicated = frame.duplicated(list(KEY))
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        raise UserError(
            f"{what} '{path}' has two rows for {_key_text(row)}: compare one run at a time "
            "(split faithful and benchmark runs)"
        )
    return frame


@dataclass
class Comparison:
    """What differs between a snapshot and a run (each frame is empty when nothing differs)."""

    n_compared: int
    moved: pd.DataFrame  # KEY + snapshot, now, delta, tol
    missing: pd.DataFrame  # KEY of snapshot rows the run lacks
    extra: pd.DataFrame  # KEY of run rows the snapshot lacks
    changed: pd.DataFrame  # KEY + column, snapshot, now (protocol columns that differ)

    @property
    def holds(self) -> bool:
        """True when nothing moved, nothing is missing or extra, and the protocol is unchanged."""
        return self.moved.empty and self.missing.empty and self.extra.empty and self.changed.empty


def compare(snapshot: pd.DataFrame, current: pd.DataFrame, tolerance: dict[str, float]) -> Comparison:
    """Compare ``value`` per key within ``tolerance[metric]`` (NaN equals NaN) and protocol columns exactly."""
    snap, now = snapshot.set_index(list(KEY)), current.set_index(list(KEY))
    common = snap.index.intersection(now.index, sort=False)
    before, after = snap.loc[common, "value"], now.loc[common, "value"]
    tol = pd.Series([tolerance[m] for m in common.get_level_values("metric")], index=common, dtype=float)
    delta = after - before
    holds = (before.isna() & after.isna()) | (delta.abs() <= tol)
    moved = pd.DataFrame({"snapshot": before, "now": after, "delta": delta, "tol": tol})[~holds].reset_index()
    changed = [
        pd.DataFrame({"column": column, "snapshot": snap.loc[common, column], "now": now.loc[common, column]})[
            snap.loc[common, column] != now.loc[common, column]
        ].reset_index()
        for column in PROTOCOL
    ]
    return Comparison(
        n_compared=len(common),
        moved=moved,
        missing=snap.index.difference(now.index, sort=False).to_frame(index=False),
        extra=now.index.difference(snap.index, sort=False).to_frame(index=False),
        changed=pd.concat(changed, ignore_index=True),
    )


def tolerances_for(config: SnapshotConfig, current: pd.DataFrame, atol: float | None) -> dict[str, float]:
    """Per-metric tolerance for a run: the CUDA table when any row ran on a GPU (``device`` not ``cpu``)."""
    cuda = bool((current["device"] != "cpu").any())
    return {m: config.tolerance(m, cuda, atol) for m in set(current["metric"])}


def render(comparison: Comparison, console: Console) -> None:
    """Rich tables of what moved, what is missing or extra and which protocol columns changed, then a summary."""
    if not comparison.moved.empty:
        table = _table("moved beyond tolerance", "key", "snapshot", "now", "delta", "tol")
        for row in comparison.moved.head(_SHOWN).itertuples(index=False):
            table.add_row(_key_text(row), _num(row.snapshot), _num(row.now), f"{row.delta:+.3g}", f"{row.tol:.3g}")
        console.print(table, *_more(comparison.moved))
    for title, frame in (("missing (in the snapshot, not in the run)", comparison.missing),
                         ("extra (in the run, not in the snapshot)", comparison.extra)):  # fmt: skip
        if not frame.empty:
            table = _table(title, "key")
            for row in frame.head(_SHOWN).itertuples(index=False):
                table.add_row(_key_text(row))
            console.print(table, *_more(frame))
    if not comparison.changed.empty:
        table = _table("protocol changed", "key", "column", "snapshot", "now")
        for row in comparison.changed.head(_SHOWN).itertuples(index=False):
            table.add_row(_key_text(row), row.column, row.snapshot, row.now)
        console.print(table, *_more(comparison.changed))
    counts = (f"{comparison.n_compared} values compared: {len(comparison.moved)} moved, {len(comparison.missing)} "
              f"missing, {len(comparison.extra)} extra, {len(comparison.changed)} protocol changes")  # fmt: skip
    if comparison.holds:
        console.print(f"regression holds ({counts})")
    else:
        console.print(f"regression FAILED ({counts}); if the change is intended, rerun with --update")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _more(frame: pd.DataFrame) -> list[str]:
    return [f"... and {len(frame) - _SHOWN} more"] if len(frame) > _SHOWN else []


def _num(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(float(value))


def _key_text(row: Any) -> str:
    """``method dataset/category k=K seed=S metric``."""
    return f"{row.method} {row.dataset}/{row.category} k={row.shot} seed={row.seed} {row.metric}"


def snapshot_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The snapshot form of tidy results: the volatile columns dropped, ``value`` at full precision."""
    rows = results[list(SNAPSHOT_COLUMNS)].copy()
    rows["value"] = [_num(v) for v in rows["value"]]
    return rows


def write_snapshot(snapshot: Path, config: SnapshotConfig, results: pd.DataFrame) -> None:
    """Rewrite snapshot CSV and sidecar (each atomically) from ``results``."""
    produced = {
        column: ", ".join(sorted(set(results[column])))
        for column in ("fsas_version", "git_sha", "torch", "open_clip", "device")
        if column in results.columns
    }
    produced["rows"] = len(results)
    produced["methods"] = ", ".join(sorted(set(results["method"])))
    atomic_write_text(snapshot, snapshot_rows(results).to_csv(index=False, lineterminator="\n"))
    atomic_write_text(sidecar_path(snapshot), config.to_json(produced))


def source_digest() -> str:
    """SHA-256 of the fsas-bench package sources: a resumable regression run is reused only by identical code."""
    root = Path(fsas_bench.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".json") and p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def check_matches(sweep: SnapshotSweep, results: pd.DataFrame) -> None:
    """``--update --results``: the results must be the sweep the sidecar records (else the sidecar would lie)."""
    recorded = {
        "dataset": sweep.datasets, "shot": sweep.shots, "seed": sweep.seeds, "backbone": (sweep.backbone,),
        "method": sweep.methods, "category": sweep.categories,
    }  # fmt: skip
    for column, expected in recorded.items():
        found, wanted = set(results[column]), set(map(str, expected))
        if expected and found != wanted:
            raise UserError(
                f"results have {column} {', '.join(sorted(found))} but the sidecar's sweep records "
                f"{', '.join(sorted(wanted))}: edit the sidecar's sweep or pass matching results"
            )
    modes = set(results["mode"])
    if not modes <= {sweep.mode, "benchmark"}:  # methods without a faithful preset run in benchmark mode
        raise UserError(
            f"results have mode {', '.join(sorted(modes))} but the sidecar's sweep records mode {sweep.mode}: "
            "edit the sidecar's sweep or pass matching results"
        )


def sweep_spec(config: SnapshotConfig, selection: Selection, device: str) -> SweepSpec:
    """The recorded sweep restricted to ``selection``, resuming in a cache directory keyed by the full sweep,
    the device and the code and package versions (so a code change never reuses stale cells)."""
    sweep = config.sweep
    identity = {**provenance(device), "device_option": device, "sweep": asdict(sweep), "code": source_digest()}
    identity.pop("git_sha")  # covered by the source digest, which also sees uncommitted edits
    return SweepSpec(
        out=cache_dir() / "regress" / sha256_json(identity)[:16],
        methods=selection.methods or sweep.methods,
        datasets=selection.datasets or sweep.datasets,
        categories=selection.categories or sweep.categories,
        shots=selection.shots or sweep.shots,
        seeds=selection.seeds or sweep.seeds,
        backbone=sweep.backbone,
        pretrained=sweep.pretrained or default_pretrained(sweep.backbone),
        device=device,
        frame=EvalFrame.parse(sweep.eval_size, sweep.mask_resize),
        overrides=sweep.overrides,
        mode=sweep.mode,
    )
