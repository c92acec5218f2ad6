"""Leaderboards from the tidy results: dataset value = mean over categories, cell = mean ± std over seeds.

``leaderboard.csv`` holds the aggregates; ``leaderboard.md`` shows, per dataset, one row per
method × shot with the seven metrics (×100, one decimal, best per column and shot in bold), a "paper"
comparison with published numbers of the same protocol (only when one matches, ``runner/published.py``),
then per-category tables and a footnote with the protocol and provenance.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fsas_bench.errors import UserError
from fsas_bench.files import atomic_write_text
from fsas_bench.metrics import IMAGE_METRICS, PIXEL_METRICS, REGION_METRICS
from fsas_bench.runner.published import PUBLISHED_DIR, load_published, match_published
from fsas_bench.runner.results import LEGACY_DEFAULTS, LEGACY_RESULT_COLUMNS, with_legacy_defaults

METRICS = IMAGE_METRICS + PIXEL_METRICS + REGION_METRICS
RUN_KEYS = ["dataset", "method", "mode", "method_cfg_hash", "flags", "backbone", "pretrained", "eval_size",
            "metric_impl"]


def load_results(results_csv: Path) -> pd.DataFrame:
    """The tidy results with ``value`` as float and everything else as text.

    Raises:
        UserError: the file is empty, truncated, lacks result columns, or holds non-numeric values or shots.
    """
    frame = with_legacy_defaults(_read_table(results_csv, LEGACY_RESULT_COLUMNS, dtype=str, keep_default_na=False))
    frame["value"] = _numbers(frame, "value", float, results_csv)
    frame["shot"] = _numbers(frame, "shot", int, results_csv)
    return frame


def load_timings(timings_csv: Path) -> pd.DataFrame:
    """The per-cell timings (``job_id`` as text, ``ms_per_image`` as float); UserError when unreadable."""
    frame = _read_table(timings_csv, ("job_id", "ms_per_image"), dtype={"job_id": str})
    frame["ms_per_image"] = _numbers(frame, "ms_per_image", float, timings_csv)
    return frame


def _read_table(path: Path, columns: Sequence[str], **read: Any) -> pd.DataFrame:
    """``path`` read by ``pd.read_csv(**read)``; UserError unless it is a complete table (a header, every row as
    wide as it) with every one of ``columns``."""
    fix = "rerun the sweep (`fsas-bench run` with the same --out) to rewrite it"
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header:
                raise UserError(f"'{path}' is empty (no header line): {fix}")
            for row in reader:
                if row and len(row) != len(header):
                    raise UserError(f"'{path}' line {reader.line_num} has {len(row)} fields where the header has "
                                    f"{len(header)}: the file is truncated or corrupt; {fix}")  # fmt: skip
        frame = pd.read_csv(path, **read)
    except (pd.errors.ParserError, csv.Error, UnicodeDecodeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"'{path}' is not a readable CSV table ({reason}): {fix}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"'{path}' lacks the column(s) {', '.join(missing)}: it is not a fsas-bench table; {fix}")
    return frame


def _numbers(frame: pd.DataFrame, column: str, kind: type, path: Path) -> pd.Series:
    """``frame[column]`` converted to ``kind``; UserError naming the first bad data row (counting from 1)."""
    try:
        return frame[column].astype(kind)
    except (TypeError, ValueError) as exc:
        bad = next(i for i, v in enumerate(frame[column]) if not _converts(v, kind))
        raise UserError(f"'{path}' row {bad + 1} has {column} = {frame[column].iloc[bad]!r}, not a number: the file "
                        "is corrupt; rerun the sweep (`fsas-bench run` with the same --out) to rewrite it") from exc


def _converts(value: object, kind: type) -> bool:
    try:
        kind(value)
    except (TypeError, ValueError):
        return False
    return True


def aggregate(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (ddof=1) over seeds of the category-averaged value, per run config, shot and metric."""
    scored = results[results["status"].isin(["ok", "undefined"])]
    per_seed = (
        scored.groupby(RUN_KEYS + ["shot", "seed", "metric"], sort=True)["value"]
        .agg(value="mean", n_categories="count")
        .reset_index()
    )
    table = (
        per_seed.groupby(RUN_KEYS + ["shot", "metric"], sort=True)
        .agg(mean=("value", "mean"), std=("value", "std"), n_seeds=("seed", "nunique"),
             n_categories=("n_categories", "min"))  # fmt: skip
        .reset_index()
    )
    return table


def write_leaderboards(out: Path, published_dir: Path | None = PUBLISHED_DIR) -> tuple[Path, Path]:
    """Regenerate ``<out>/leaderboard.md`` and ``<out>/leaderboard.csv`` from ``<out>/results.csv``.

    ``published_dir``: folder of published CSVs for the paper comparison (default: the checkout's
    ``baselines/published``; none when it does not exist, e.g. in an installed wheel).
    """
    results = load_results(out / "results.csv")
    timings_path = out / "timings.csv"
    timings = load_timings(timings_path) if timings_path.is_file() else None
    table = aggregate(results)
    published = load_published(published_dir) if published_dir is not None and published_dir.is_dir() else None
    md_path, csv_path = out / "leaderboard.md", out / "leaderboard.csv"
    atomic_write_text(csv_path, table.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(md_path, render_markdown(results, table, timings, published))
    return md_path, csv_path


def render_markdown(
    results: pd.DataFrame, table: pd.DataFrame, timings: pd.DataFrame | None, published: pd.DataFrame | None = None
) -> str:
    """The Markdown leaderboard document (with a paper comparison where ``published`` has a matching row)."""
    lines = ["# fsas-bench leaderboard", ""]
    results, table = with_variants(results, results), with_variants(table, results)
    speed = _ms_per_image(results, timings)
    matches = match_published(table, published) if published is not None else table.iloc[:0]
    for dataset, rows in table.groupby("dataset", sort=True):
        has_pixels = rows["metric"].isin(PIXEL_METRICS).any()
        categories = sorted(results.loc[results["dataset"] == dataset, "category"].unique())
        lines += [f"## {dataset}", "", *_main_table(rows, speed, has_pixels, len(categories)), ""]
        lines += _main_table_notes(rows, results[results["dataset"] == dataset], categories)
        lines += _paper_table(matches[matches["dataset"] == dataset])
        lines += _category_tables(results[results["dataset"] == dataset], has_pixels)
        lines += _footnote(results[results["dataset"] == dataset]) + [""]
    return "\n".join(lines)


def with_variants(frame: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the columns naming its leaderboard rows: ``ablation`` is `` {flags}`` where ``results``
    hold several configs of one method and mode (``--set`` ablations), else empty; ``variant`` is the method,
    ``[mode]`` unless benchmark, and the ablation."""
    counts = results.groupby(["dataset", "method", "mode"])["flags"].nunique()
    ablated = {key for key, n in counts.items() if n > 1}
    ablation = [f" {{{r.flags or 'defaults'}}}" if (r.dataset, r.method, r.mode) in ablated else ""
                for r in frame.itertuples()]  # fmt: skip
    names = frame["method"].where(frame["mode"] == "benchmark", frame["method"] + " [" + frame["mode"] + "]")
    return frame.assign(ablation=ablation, variant=names + pd.Series(ablation, index=frame.index, dtype=str))


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "NaN"
    spread = "—" if math.isnan(std) else f"{100 * std:.1f}"
    return f"{100 * mean:.1f} ± {spread}"


FEWER_CATEGORIES = "†"
"""Marks a leaderboard value averaged over fewer categories than the dataset has (a NaN category skipped)."""

MS_PER_IMAGE_NOTE = (
    "ms/img: the method's prediction time per test image from cached backbone features (backbone encoding, "
    "fitting on the references and metrics excluded), mean over the row's cells."
)


def _main_table(rows: pd.DataFrame, speed: dict, has_pixels: bool, n_categories: int) -> list[str]:
    """One row per method × shot: the metrics (mean ± std over seeds, ``†`` when fewer than ``n_categories``
    categories are averaged), the number of seeds, and ms/img."""
    header = ["Method (k-shot)", *METRICS, "seeds", "ms/img"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for shot, shot_rows in rows.groupby("shot", sort=True):
        cells = shot_rows.set_index(["variant", "metric"])
        best = {
            m: cells.xs(m, level="metric")["mean"].round(3).max()
            for m in METRICS
            if m in cells.index.get_level_values("metric")
        }
        modes = dict(zip(shot_rows["variant"], shot_rows["mode"], strict=True))
        for variant in sorted(modes):
            mode = modes[variant]
            values = []
            for metric in METRICS:
                if metric not in IMAGE_METRICS and not has_pixels:
                    values.append("—")
                    continue
                if (variant, metric) not in cells.index:
                    values.append("")
                    continue
                row = cells.loc[(variant, metric)]
                text = _fmt(row["mean"], row["std"])
                is_best = mode == "benchmark" and round(row["mean"], 3) == best.get(metric)
                text = f"**{text}**" if is_best else text
                values.append(text + (FEWER_CATEGORIES if row["n_categories"] < n_categories else ""))
            seeds = cells.loc[variant, "n_seeds"].max()
            ms = speed.get((rows["dataset"].iloc[0], variant, shot))
            out.append(f"| {variant} ({shot}-shot) | " + " | ".join(values)
                       + f" | {seeds} | {'' if ms is None else f'{ms:.1f}'} |")  # fmt: skip
    return out


def _main_table_notes(table: pd.DataFrame, results: pd.DataFrame, categories: list[str]) -> list[str]:
    """What the ``†`` marks of the main table leave out (per method, shot and metric), and what ms/img means."""
    fewer = table[table["n_categories"] < len(categories)]
    scored = results[results["status"].isin(["ok", "undefined"])]
    finite = scored[scored["value"].notna()]
    notes = []
    for r in fewer.sort_values(["shot", "variant", "metric"]).itertuples():
        cells = finite[(finite["variant"] == r.variant) & (finite["shot"] == r.shot) & (finite["metric"] == r.metric)]
        seeds = sorted(set(scored["seed"]))
        missing = []
        for category in categories:
            absent = [s for s in seeds if cells[(cells["category"] == category) & (cells["seed"] == s)].empty]
            if absent:
                missing.append(category if absent == seeds else f"{category} (seed {', '.join(absent)})")
        notes.append(f"{r.variant} {r.shot}-shot {r.metric}: {r.n_categories} of {len(categories)} categories "
                     f"(no value for {', '.join(missing)})")  # fmt: skip
    lines = [MS_PER_IMAGE_NOTE, ""]
    if notes:
        lines = [f"{FEWER_CATEGORIES} averaged over fewer categories than the dataset has (a category whose metric "
                 "is undefined or missing is skipped in that seed's mean): " + "; ".join(notes) + ".", "", *lines]
    return lines


def _paper_table(matches: pd.DataFrame) -> list[str]:
    """Ours vs published numbers of the same protocol; nothing when no published row matches."""
    if matches.empty:
        return []
    out = [
        "### Published numbers (paper comparison)",
        "",
        "Only runs whose method, dataset, shot, metric, backbone and weights match a published row. Paper values "
        "are as printed (%), never bolded against measured rows; Δ = ours − paper in points. Shot draws, "
        "resolution, model selection and metric implementations may still differ (see each source).",
        "",
        "| Method (k-shot) | metric | ours | paper | Δ | source | protocol | evidence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = matches.assign(order=matches["metric"].map(METRICS.index))
    for r in rows.sort_values(["shot", "variant", "order", "paper"]).itertuples():
        source = ", ".join(filter(None, [r.paper, f"arXiv {r.arxiv}" if r.arxiv else "", r.table]))
        protocol = f"{r.resolution}{' px' if r.resolution.isdigit() else ''}; {r.shot_draw}"
        out.append(f"| {r.variant} ({r.shot}-shot) | {r.metric} | {_fmt(r.mean, r.std)} | {r.paper_value:g} | "
                   f"{r.delta:+.1f} | {source} | {protocol} | {r.evidence} |")  # fmt: skip
    return [*out, ""]


def _category_tables(results: pd.DataFrame, has_pixels: bool) -> list[str]:
    metrics = METRICS if has_pixels else IMAGE_METRICS
    out = []
    scored = results[results["status"].isin(["ok", "undefined"])]
    for (method, mode, ablation), rows in scored.groupby(["method", "mode", "ablation"], sort=True):
        categories = sorted(rows["category"].unique())
        stats = rows.groupby(["shot", "metric", "category"])["value"].agg(["mean", "std"])
        out += [f"### {method} [{mode}]{ablation} per category", ""]
        out += ["| k-shot | metric | " + " | ".join(categories) + " |", "|" + "---|" * (len(categories) + 2)]
        for shot in sorted(rows["shot"].unique()):
            for metric in metrics:
                cells = [
                    _fmt(*stats.loc[(shot, metric, c)]) if (shot, metric, c) in stats.index else ""
                    for c in categories
                ]
                out.append(f"| {shot} | {metric} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _footnote(results: pd.DataFrame) -> list[str]:
    def values(column: str) -> str:
        return ", ".join(sorted({str(v) for v in results[column] if str(v) != ""})) or "—"

    def precision(value: str) -> str:  # named only when not fp32 (rows before the column hold fp32)
        return "" if value in ("", LEGACY_DEFAULTS["precision"]) else f", {value} autocast"

    backbones = sorted(
        {f"{r.method}: {r.backbone} @ {r.image_size}px{precision(r.precision)}, weights {r.pretrained}, "
         f"fit {r.fit_scope}" + (", transductive" if r.transductive == "true" else "")
         for r in results.itertuples()}  # fmt: skip
    )
    manifests = sorted({f"{r.shot_manifest} k={r.shot} seed={r.seed} ({r.shot_manifest_sha[:12]})"
                        for r in results.itertuples() if r.shot_manifest})  # fmt: skip
    undefined = results[results["status"] == "undefined"]
    not_run = sorted({f"{r.method} k={r.shot}: {r.reason}" for r in results[results["status"] == "skipped"].itertuples()})
    return [
        "**Protocol.** Cells: mean ± sample std over manifest seeds of the unweighted mean over categories, ×100.",
        f"Seeds: {values('seed')}. Eval size: {values('eval_size')}; mask resize: {values('mask_resize')}; "
        f"metric implementation: {values('metric_impl')}; AUPRO FPR limit {values('fpr_limit')}; "
        f"connectivity {values('connectivity')}.",
        "",
        *(f"- {b}" for b in backbones),
        "",
        "Shot manifests: " + "; ".join(manifests) + ".",
        "",
        f"Undefined (NaN, skipped in means): {len(undefined)} rows"
        + ("" if undefined.empty else " — " + "; ".join(sorted({f"{r.category} {r.metric}: {r.reason}"
                                                                for r in undefined.itertuples()})))  # fmt: skip
        + ".",
        *([f"Cells not run: {'; '.join(not_run)}."] if not_run else []),
        f"Versions: fsas-bench {values('fsas_version')} (git {_short_shas(results['git_sha'])}), "
        f"torch {values('torch')}, open_clip {values('open_clip')}; device {values('device')}.",
    ]


def _short_shas(shas: pd.Series) -> str:
    """The distinct commits, abbreviated to 12 hex digits, keeping a ``-dirty`` mark."""
    short = {f"{s[:12]}-dirty" if s.endswith("-dirty") else s[:12] for s in shas.astype(str) if s}
    return ", ".join(sorted(short)) or "—"


def _ms_per_image(results: pd.DataFrame, timings: pd.DataFrame | None) -> dict:
    if timings is None or timings.empty:
        return {}
    jobs = results[["job_id", "dataset", "variant", "shot"]].drop_duplicates()
    merged = jobs.merge(timings[["job_id", "ms_per_image"]], on="job_id")
    grouped = merged.groupby(["dataset", "variant", "shot"])["ms_per_image"].mean()
    return {key: value for key, value in grouped.items() if not math.isnan(value)}
