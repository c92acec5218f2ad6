"""Regression snapshots: compare a run's tidy results with a committed snapshot.

A snapshot is ``<name>.csv`` (the tidy results minus the volatile columns), a sidecar ``<name>.json`` (the sweep
that produced it, tolerances, the measured environment band) and ``<name>-fits/`` (the checkpoints its trained
methods evaluated, SHA-256 pinned). Two checks:

- **inference** (default): the sweep reruns with every trained part loaded from ``<name>-fits/``, so only
  inference arithmetic can move a value. Each (method, dataset, category, shot, seed, metric) value must stay
  within the exact tolerance (same CPU and stack: 1e-6), or else within the *environment band* measured for
  its method and metric across emulated CPU kernels and thread counts (``benchmarks/regress_tolerance.py``,
  times a safety factor): such a move is reported as "environment" and does not fail. Beyond the band it is a
  code change and fails. Protocol columns (config hash, backbone, weights, manifest, frame, status, ...) must
  match exactly.
- **training** (``--training``): the sweep retrains everything; a trained method's mean over categories and
  seeds (per metric and shot) must lie within ``3 · σ_seed · √(2/n_seeds)`` (at least 1 point) of the
  snapshot's, σ_seed being the snapshot's seed-to-seed standard deviation of the category mean; and every
  training run's loss must fall, by at least half the relative decrease recorded in the snapshot's fit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

import fsas_bench
from fsas_bench.backbones.registry import default_pretrained
from fsas_bench.data.registry import cache_dir
from fsas_bench.errors import UserError
from fsas_bench.files import atomic_write_text
from fsas_bench.hashing import sha256_file, sha256_json
from fsas_bench.metrics.frame import EvalFrame
from fsas_bench.runner.leaderboard import METRICS
from fsas_bench.runner.provenance import provenance
from fsas_bench.runner.results import RESULT_COLUMNS, with_legacy_defaults
from fsas_bench.runner.sweep import SweepSpec
from fsas_bench.runner.training import CHECKPOINTS, FITS_MANIFEST, ReferenceFits, recorded_losses

KEY = ("method", "dataset", "category", "shot", "seed", "metric")
VOLATILE = ("run_id", "job_id", "git_sha", "fsas_version", "torch", "open_clip", "device")
SNAPSHOT_COLUMNS = tuple(c for c in RESULT_COLUMNS if c not in VOLATILE)
PROTOCOL = (
    "mode", "method_cfg_hash", "backbone", "pretrained", "image_size", "precision", "fit_scope", "train_dataset", "train_seed",
    "transductive", "shot_manifest_sha", "level", "metric_impl", "fpr_limit", "eval_size", "mask_resize",
    "connectivity", "n_test", "n_anomalous", "status",
)  # fmt: skip
DEFAULT_TOLERANCES = {"cpu": {"*": 1e-6}, "cuda": {"*": 5e-3}}
TRAINING_Z = 3.0
TRAINING_FLOOR = 0.01  # one point: the least band of the statistical training check
LOSS_DECREASE_SHARE = 0.5
EMULATED_ENVIRONMENTS: dict[str, dict[str, str]] = {
    "native": {},
    "isa-default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "isa-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "threads-1": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}
"""Other CPUs emulated on one machine: generic vs vectorised ATen/oneDNN kernels (what differs between CPU
families; ``isa-avx2`` matters on AVX-512 machines) and one thread instead of several."""
EMULATION_VARIABLES = tuple(sorted({name for env in EMULATED_ENVIRONMENTS.values() for name in env}))


def emulated_environment(name: str) -> dict[str, str]:
    """This process's environment with the emulation variables of ``name`` (and no others) set."""
    env = {k: v for k, v in os.environ.items() if k not in EMULATION_VARIABLES}
    return {**env, **EMULATED_ENVIRONMENTS[name]}
UNRECORDED_MACHINE = "the first measurement's machine (not recorded)"


def this_machine() -> str:
    """The CPU this measurement ran on: its model name (Linux; else the platform's) and torch's native kernels."""
    import torch  # here: the CLI imports this module before any torch work (fast refusal of bad arguments)

    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []  # fmt: skip
    model = names[0] if names else platform.processor() or platform.machine()
    return f"{model} ({torch.backends.cpu.get_cpu_capability().lower()} kernels)"


def merged_environment(previous: dict[str, Any], measured: pd.Series, factor: float, machine: str) -> dict[str, Any]:
    """The sidecar's environment section after this machine's measurement: per method and metric the largest move
    measured on ANY machine so far (one machine's emulations do not show every other CPU's last-bit differences,
    so a band only grows), times ``factor``; ``measured`` is indexed by (method, metric); ``machine`` (see
    :func:`this_machine`) joins the machines listed."""
    largest = {m: dict(v) for m, v in previous.get("measured", {}).items()}
    for (method, metric), move in measured.items():
        largest.setdefault(method, {})[metric] = max(float(move), largest.get(method, {}).get(metric, 0.0))
    return {
        "about": "largest move of each method and metric over emulated CPU environments on every machine listed "
                 "(benchmarks/regress_tolerance.py --write), times the safety factor; moves inside it are "
                 "reported, not failed",
        "safety_factor": factor,
        "settings": EMULATED_ENVIRONMENTS,
        "machines": sorted({*previous.get("machines", [UNRECORDED_MACHINE] if "measured" in previous else []),
                            machine}),
        "measured": {m: dict(sorted(v.items())) for m, v in sorted(largest.items())},
        "bands": {m: {x: factor * v for x, v in sorted(metrics.items()) if v > 0}
                  for m, metrics in sorted(largest.items()) if any(v > 0 for v in metrics.values())},
    }  # fmt: skip


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
    """A snapshot's sidecar: the recorded sweep, the exact tolerances (``{"cpu"|"cuda": {metric|"*": atol}}``),
    the measured CPU environment band (``{"bands": {method: {metric: atol}}, ...}``, see
    ``benchmarks/regress_tolerance.py``) and the folder of reference fits (relative to the sidecar)."""

    sweep: SnapshotSweep = field(default_factory=SnapshotSweep)
    tolerances: dict[str, dict[str, float]] = field(default_factory=lambda: DEFAULT_TOLERANCES)
    environment: dict[str, Any] = field(default_factory=dict)
    reference_fits: str | None = None

    @classmethod
    def load(cls, path: Path) -> SnapshotConfig:
        """Parse and validate a sidecar (UserError naming the file and the fix)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(
                f"snapshot sidecar '{path}' not found: restore it, or create snapshot and sidecar with --update"
            ) from None
        except (json.JSONDecodeError, RecursionError) as err:
            raise UserError(f"snapshot sidecar '{path}' is not valid JSON ({err}): fix or regenerate it") from None
        if not isinstance(data, dict) or not isinstance(data.get("sweep", {}), dict):
            raise UserError(f"snapshot sidecar '{path}' must be a JSON object with a 'sweep' object: fix it")
        fits = data.get("reference_fits")
        if fits is not None and (not isinstance(fits, str) or Path(fits).name != fits or fits in ("", ".", "..")):
            raise UserError(f"snapshot sidecar '{path}': reference_fits must name a folder beside the sidecar")
        return cls(_check_sweep(data.get("sweep", {}), path),
                   _check_tolerances(data.get("tolerances", DEFAULT_TOLERANCES), path),
                   _check_environment(data.get("environment", {}), path), fits)  # fmt: skip

    def to_json(self, produced: dict[str, Any]) -> str:
        """Sidecar text: sweep, tolerances, environment band, reference fits and what produced the snapshot."""
        doc = {
            "about": "fsas-bench regression snapshot: the sweep that produced the CSV (rerun by 'fsas-bench "
                     "regress'), exact absolute tolerances per metric ('*' = default) for cpu and cuda runs, the "
                     "CPU environment band per method and metric (benchmarks/regress_tolerance.py) and the folder "
                     "of the checkpoints the snapshot evaluated",
            "sweep": asdict(self.sweep),
            "tolerances": self.tolerances,
            "environment": self.environment,
            "reference_fits": self.reference_fits,
            "produced": produced,
        }  # fmt: skip
        return json.dumps(doc, indent=2, sort_keys=False) + "\n"

    def tolerance(self, metric: str, cuda: bool, atol: float | None = None) -> float:
        """The exact absolute tolerance of ``metric`` (``atol`` overrides every sidecar entry)."""
        if atol is not None:
            return atol
        table = self.tolerances["cuda" if cuda else "cpu"]
        return float(table.get(metric, table["*"]))

    def band(self, method: str, metric: str, cuda: bool, atol: float | None = None) -> float:
        """The environment band of ``method``'s ``metric``: how far a value may move on another CPU (never less
        than the exact tolerance; on CUDA the CUDA tolerance)."""
        exact = self.tolerance(metric, cuda, atol)
        if cuda or atol is not None:
            return exact
        return max(exact, float(self.environment.get("bands", {}).get(method, {}).get(metric, 0.0)))


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
        item = int if key in ("shots", "seeds") else str
        if not all(isinstance(v, item) and not isinstance(v, bool) for v in _leaves(key, value)):
            raise UserError(f"snapshot sidecar '{path}': sweep.{key} = {value!r} should hold JSON "
                            f"{'integers' if item is int else 'strings'} only: fix it")  # fmt: skip
    return SnapshotSweep(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _leaves(key: str, value: object) -> list[object]:
    """The items of a sweep list, or the method names, field names and values of ``overrides``."""
    if key == "overrides" and isinstance(value, dict):
        return [leaf for method, fields_ in value.items()
                for leaf in ([method, *fields_, *fields_.values()] if isinstance(fields_, dict) else [fields_])]
    return list(value) if isinstance(value, list) else []


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


def _check_environment(data: object, path: Path) -> dict[str, Any]:
    bands = data.get("bands", {}) if isinstance(data, dict) else None
    if not isinstance(bands, dict) or not all(
        isinstance(table, dict) and all(
            metric in METRICS and isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < math.inf
            for metric, v in table.items()
        )
        for table in bands.values()
    ):  # fmt: skip
        raise UserError(
            f"snapshot sidecar '{path}': 'environment.bands' must map method → metric → non-negative number: "
            "regenerate it with benchmarks/regress_tolerance.py --write"
        )
    return data  # type: ignore[return-value]


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
    frame = with_legacy_defaults(frame)
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
    moved: pd.DataFrame  # KEY + snapshot, now, delta, tol, band: moves beyond the environment band (code changes)
    environment: pd.DataFrame  # the same columns: beyond the exact tolerance, within the environment band
    missing: pd.DataFrame  # KEY of snapshot rows the run lacks
    extra: pd.DataFrame  # KEY of run rows the snapshot lacks
    changed: pd.DataFrame  # KEY + column, snapshot, now (protocol columns that differ)
    training: pd.DataFrame = field(default_factory=pd.DataFrame)  # failed mean checks (``--training``)
    losses: pd.DataFrame = field(default_factory=pd.DataFrame)  # failed loss-decrease checks (``--training``)

    @property
    def holds(self) -> bool:
        """True when nothing moved beyond its band, nothing is missing or extra, the protocol is unchanged and
        every statistical training check passed (moves inside the environment band do not count)."""
        return all(f.empty for f in (self.moved, self.missing, self.extra, self.changed, self.training, self.losses))


Bounds = dict[tuple[str, str], tuple[float, float]]
"""(method, metric) → (exact tolerance, environment band)."""


def compare(snapshot: pd.DataFrame, current: pd.DataFrame, bounds: Bounds) -> Comparison:
    """Compare ``value`` per key (NaN equals NaN) within the exact tolerance, else the environment band of its
    (method, metric), and protocol columns exactly."""
    snap, now = snapshot.set_index(list(KEY)), current.set_index(list(KEY))
    common = snap.index.intersection(now.index, sort=False)
    before, after = snap.loc[common, "value"], now.loc[common, "value"]
    pairs = zip(common.get_level_values("method"), common.get_level_values("metric"), strict=True)
    limits = [bounds[pair] for pair in pairs]
    tol = pd.Series([t for t, _ in limits], index=common, dtype=float)
    band = pd.Series([b for _, b in limits], index=common, dtype=float)
    delta = after - before
    both_nan = before.isna() & after.isna()
    table = pd.DataFrame({"snapshot": before, "now": after, "delta": delta, "tol": tol, "band": band})
    changed = [
        pd.DataFrame({"column": column, "snapshot": snap.loc[common, column], "now": now.loc[common, column]})[
            snap.loc[common, column] != now.loc[common, column]
        ].reset_index()
        for column in PROTOCOL
    ]
    return Comparison(
        n_compared=len(common),
        moved=table[~(both_nan | (delta.abs() <= band))].reset_index(),
        environment=table[(delta.abs() > tol) & (delta.abs() <= band)].reset_index(),
        missing=snap.index.difference(now.index, sort=False).to_frame(index=False),
        extra=now.index.difference(snap.index, sort=False).to_frame(index=False),
        changed=pd.concat(changed, ignore_index=True),
    )


def bounds_for(config: SnapshotConfig, current: pd.DataFrame, atol: float | None) -> Bounds:
    """(exact tolerance, environment band) per (method, metric) of a run: the CUDA table when any row ran on a
    GPU (``device`` not ``cpu``)."""
    cuda = bool((current["device"] != "cpu").any())
    pairs = set(zip(current["method"], current["metric"], strict=True))
    return {(m, x): (config.tolerance(x, cuda, atol), config.band(m, x, cuda, atol)) for m, x in pairs}


def compare_training(
    snapshot: pd.DataFrame, current: pd.DataFrame, config: SnapshotConfig, atol: float | None, fits: Path, run_dir: Path
) -> Comparison:
    """``--training``: untrained methods value by value (:func:`compare`), trained ones statistically
    (:func:`training_check`) and by their loss curves against the reference ``fits`` (:func:`loss_check`)."""
    untrained = snapshot["fit_scope"] == "none"
    now_untrained = current["fit_scope"] == "none"
    comparison = compare(snapshot[untrained], current[now_untrained], bounds_for(config, current, atol))
    comparison.training = training_check(snapshot[~untrained], current[~now_untrained])
    comparison.losses = loss_check(fits, run_dir)
    return comparison


def training_check(snapshot: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Statistical check of trained methods (``fit_scope`` not ``none``): per (method, dataset, shot, metric)
    the mean over seeds of the category mean must lie within ``max(3 · σ · √(2/n), 1 point)`` of the
    snapshot's (σ: the snapshot's seed-to-seed std, n seeds). Returns the failures (empty when all hold)."""
    group = ["method", "dataset", "shot", "metric"]

    def seed_means(frame: pd.DataFrame) -> pd.DataFrame:
        trained = frame[frame["fit_scope"] != "none"]
        return trained.groupby([*group, "seed"])["value"].mean().reset_index()

    before, after = seed_means(snapshot), seed_means(current)
    stats = before.groupby(group)["value"].agg(["mean", "std", "count"]).join(
        after.groupby(group)["value"].mean().rename("now"), how="inner"
    )
    stats["band"] = np.maximum(TRAINING_Z * stats["std"].fillna(0) * np.sqrt(2 / stats["count"]), TRAINING_FLOOR)
    stats["delta"] = stats["now"] - stats["mean"]
    bad = ~(stats["delta"].abs() <= stats["band"]) & ~(stats["now"].isna() & stats["mean"].isna())
    return stats[bad].reset_index()


def loss_check(reference: Path, run_out: Path) -> pd.DataFrame:
    """Every retrained checkpoint's loss must fall (mean of its last quarter below its first quarter's) by at
    least half the relative decrease recorded with the same checkpoint in ``reference``. Returns failures."""
    rows = []
    for old in sorted((reference / CHECKPOINTS).rglob("*.safetensors")):
        relative = old.relative_to(reference / CHECKPOINTS)
        new = run_out / CHECKPOINTS / relative
        recorded = _relative_decrease(recorded_losses(old))
        if recorded is None:
            continue
        now = _relative_decrease(recorded_losses(new)) if new.is_file() else None
        if now is None or now <= 0 or now < LOSS_DECREASE_SHARE * recorded:
            rows.append({"checkpoint": relative.as_posix(), "recorded": recorded, "now": now})
    return pd.DataFrame(rows)


def _relative_decrease(losses: list[float]) -> float | None:
    """1 − mean(last quarter) / mean(first quarter) of a loss curve (None for fewer than 2 steps)."""
    if len(losses) < 2:
        return None
    quarter = max(len(losses) // 4, 1)
    first, last = float(np.mean(losses[:quarter])), float(np.mean(losses[-quarter:]))
    return 1.0 - last / first if first > 0 else None


def render(comparison: Comparison, console: Console) -> None:
    """Rich tables of what moved (each with its verdict: inside the environment band, or beyond it = a code
    change), what is missing or extra, which protocol columns changed and which training checks failed."""
    moved = pd.concat([comparison.moved.assign(verdict="beyond band: code change"),
                       comparison.environment.assign(verdict="environment (within band)")], ignore_index=True)  # fmt: skip
    if not moved.empty:
        table = _table("moved beyond the exact tolerance", "key", "snapshot", "now", "delta", "tol", "band", "verdict")
        for row in moved.head(_SHOWN).itertuples(index=False):
            table.add_row(_key_text(row), _num(row.snapshot), _num(row.now), f"{row.delta:+.3g}", f"{row.tol:.3g}",
                          f"{row.band:.3g}", row.verdict)  # fmt: skip
        console.print(table, *_more(moved))
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
    for title, frame in (("trained method's mean outside its seed band", comparison.training),
                         ("training loss no longer falls as recorded", comparison.losses)):  # fmt: skip
        if not frame.empty:
            table = _table(title, *map(str, frame.columns))
            for row in frame.head(_SHOWN).itertuples(index=False):
                table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
            console.print(table, *_more(frame))
    counts = (f"{comparison.n_compared} values compared: {len(comparison.moved)} moved beyond their band, "
              f"{len(comparison.environment)} within the environment band, {len(comparison.missing)} missing, "
              f"{len(comparison.extra)} extra, {len(comparison.changed)} protocol changes, "
              f"{len(comparison.training) + len(comparison.losses)} failed training checks")  # fmt: skip
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


def write_snapshot(snapshot: Path, config: SnapshotConfig, results: pd.DataFrame, run_out: Path) -> int:
    """Rewrite snapshot CSV, sidecar and reference fits (the checkpoints of the run in ``run_out``), each
    atomically; the number of reference checkpoints."""
    produced = {
        column: ", ".join(sorted(set(results[column])))
        for column in ("fsas_version", "git_sha", "torch", "open_clip", "device")
        if column in results.columns
    }
    produced["rows"] = len(results)
    produced["methods"] = ", ".join(sorted(set(results["method"])))
    config = replace(config, reference_fits=f"{snapshot.stem}-fits")
    n_fits = ReferenceFits.export(run_out, snapshot.parent / config.reference_fits)
    atomic_write_text(snapshot, snapshot_rows(results).to_csv(index=False, lineterminator="\n"))
    atomic_write_text(sidecar_path(snapshot), config.to_json(produced))
    return n_fits


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


def sweep_spec(config: SnapshotConfig, selection: Selection, device: str, fits: Path | None) -> SweepSpec:
    """The recorded sweep restricted to ``selection``, evaluating the reference ``fits`` (None: training),
    resuming in a cache directory keyed by the full sweep, the fits, the device, the CPU-kernel environment
    and the code and package versions (so a change of any of them never reuses stale cells)."""
    sweep = config.sweep
    identity = {
        **provenance(device), "device_option": device, "sweep": asdict(sweep), "code": source_digest(),
        "fits": None if fits is None else sha256_file(fits / FITS_MANIFEST),
        "environment": {name: os.environ.get(name) for name in EMULATION_VARIABLES},
    }  # fmt: skip
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
        reference_fits=fits,
        save_examples=0,  # numbers only: no pictures for the report
    )


def fits_dir(snapshot: Path, config: SnapshotConfig) -> Path | None:
    """The snapshot's reference-fits folder (None when the sidecar names none)."""
    return None if config.reference_fits is None else snapshot.parent / config.reference_fits
