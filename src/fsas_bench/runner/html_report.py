"""``fsas-bench report DIR --html``: one self-contained ``report.html`` plus ``report_assets/`` (PNG/JPEG only).

The page holds the leaderboards of ``leaderboard.md`` as HTML tables (same text, footnotes included), per
dataset the shot-scaling plots (each metric vs k per method, mean ± std over seeds), and per category the ROC
and PRO curves of every method at each k and a qualitative grid of the example images (see
:mod:`fsas_bench.runner.pictures`). Plots are drawn with matplotlib (Agg), overlays with pillow; no script.
A dataset without masks gets image-level plots only; a run saved without pictures gets the tables and plots.
"""

from __future__ import annotations

import html
import math
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from markdown_it import MarkdownIt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage  # noqa: E402

from fsas_bench.files import atomic_write, atomic_write_text  # noqa: E402
from fsas_bench.metrics import AUPRO_FPR_LIMIT  # noqa: E402
from fsas_bench.runner.leaderboard import METRICS, aggregate, load_results  # noqa: E402
from fsas_bench.runner.pictures import category_dir  # noqa: E402

ASSETS = "report_assets"
COLORMAP = "jet"
OVERLAY_ALPHA = 0.5
TILE_SIDE = 160
CONTOUR = (0, 255, 0)
CURVE_NAMES = {"I-ROC": ("image ROC", "FPR", "TPR"), "P-ROC": ("pixel ROC", "FPR", "TPR"),
               "PRO": ("PRO (AUPRO's range)", "FPR", "per-region overlap")}  # fmt: skip
COLOUR_SCALE_NOTE = (
    "Colour scale, shared by every map of every grid: the colour bar below, from 0 (blue) to 1 (red), blended at "
    f"{OVERLAY_ALPHA:.0%} over the image. A method's raw scores are placed on it by one linear rule per method and "
    "k: 0 = its lowest and 1 = its highest pixel score over the whole test split of the category (seed 0), never "
    "rescaled per image, so a false alarm on a normal image is as hot as a found defect of the same score. "
    "Green line: ground-truth defect contour."
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f3f3f3; }
table.grid td, table.grid th { text-align: center; padding: 2px; }
img { max-width: 100%; }
.note { font-size: 0.85em; color: #555; max-width: 70em; }
"""


def write_html_report(out: Path) -> Path:
    """Write ``<out>/report.html`` and ``<out>/report_assets/`` from ``<out>``'s results, leaderboards and pictures.

    ``leaderboard.md`` must exist (``fsas-bench report`` writes it first). Returns the page's path.
    """
    results = load_results(out / "results.csv")
    assets = out / ASSETS
    if assets.is_dir():  # only what this page links; the folder belongs to the report
        shutil.rmtree(assets)
    page = Page(out, assets)
    body = [_markdown((out / "leaderboard.md").read_text(encoding="utf-8"))]  # its title is the page's
    table = aggregate(results)
    for dataset, rows in results.groupby("dataset", sort=True):
        body.append(f"<h2>{html.escape(dataset)}: shot scaling</h2>")
        body.append(page.image(_scaling_figure(table[table["dataset"] == dataset]), f"scaling_{dataset}.png",
                               f"{dataset}: metrics vs k, mean ± std over seeds"))  # fmt: skip
        body.append("<p class='note'>Each point: mean over categories, then mean ± sample std (bar) over manifest "
                    "seeds, ×100.</p>")  # fmt: skip
        grids = False
        for category, cat_rows in rows.groupby("category", sort=True):
            body.append(f"<h3>{html.escape(dataset)} / {html.escape(category)}</h3>")
            body += page.curves(dataset, category, cat_rows)
            section = page.grids(dataset, category, cat_rows)
            grids = grids or bool(section)
            body += section
        if grids:
            body.append(page.image(_colour_bar(), "colour_scale.png", "colour scale 0 to 1"))
            body.append(f"<p class='note'>{html.escape(COLOUR_SCALE_NOTE)}</p>")
    body.append(_provenance(results))
    document = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<title>fsas-bench report: {html.escape(out.name)}</title><style>{STYLE}</style></head>"
                "<body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip
    path = out / "report.html"
    atomic_write_text(path, document)
    return path


class Page:
    """The assets of one report: figures and grid tiles written under ``assets``, linked relative to ``out``."""

    def __init__(self, out: Path, assets: Path) -> None:
        self.out, self.assets = out, assets

    def image(self, picture: Figure | Image.Image, name: str, alt: str) -> str:
        """Save ``picture`` as ``assets/name`` (a figure is closed) and return its ``<img>`` tag."""
        path = self.assets / name

        def write(tmp: str) -> None:
            if isinstance(picture, Figure):
                picture.savefig(tmp, format="png", dpi=80, bbox_inches="tight")
            else:
                picture.save(tmp, format="JPEG" if name.endswith(".jpg") else "PNG", quality=85)

        atomic_write(path, write, "report asset")
        if isinstance(picture, Figure):
            plt.close(picture)
        return f"<img src='{ASSETS}/{html.escape(name)}' alt='{html.escape(alt)}'>"

    def curves(self, dataset: str, category: str, rows: pd.DataFrame) -> list[str]:
        """The category's curves figure (rows = k, columns = curve kinds, one line per method at its lowest
        seed), or nothing when the run kept no curves."""
        folder = category_dir(self.out, dataset, category) / "curves"
        found: dict[tuple[int, str], dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        seeds = {}
        for job in _jobs(rows).itertuples():
            path = folder / f"{job.job_id}.npz"
            if path.is_file() and seeds.setdefault((job.label, job.shot), job.seed) == job.seed:
                with np.load(path) as npz:
                    for key in npz.files:
                        name, axis = key.split("/")
                        found.setdefault((job.shot, name), {}).setdefault(job.label, [None, None])
                        found[(job.shot, name)][job.label][0 if axis == "x" else 1] = npz[key]
        if not found:
            return []
        shots = sorted({shot for shot, _ in found})
        kinds = [k for k in CURVE_NAMES if any((s, k) in found for s in shots)]
        fig, axes = plt.subplots(len(shots), len(kinds), figsize=(3.2 * len(kinds), 2.8 * len(shots)), squeeze=False)
        limit = _fpr_limit(rows)
        for r, shot in enumerate(shots):
            for c, kind in enumerate(kinds):
                ax = axes[r][c]
                title, xlabel, ylabel = CURVE_NAMES[kind]
                for label, (x, y) in sorted(found.get((shot, kind), {}).items()):
                    ax.plot(x, y, label=label, linewidth=1.2)
                if kind == "PRO":
                    ax.set_xlim(0, limit)
                else:
                    ax.plot([0, 1], [0, 1], color="#bbb", linewidth=0.8, linestyle=":")
                ax.set(title=f"{title}, k={shot}", xlabel=xlabel, ylabel=ylabel, ylim=(0, 1.02))
        axes[0][-1].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        seed_text = ", ".join(sorted({str(s) for s in seeds.values()}))
        return [self.image(fig, f"curves_{dataset}_{category}.png", f"{dataset}/{category} ROC and PRO curves"),
                f"<p class='note'>Curves of manifest seed {html.escape(seed_text)}, drawn through at most 300 of their "
                f"exact vertices (values in the tables are computed exactly). PRO up to FPR {limit:g}, the range "
                "AUPRO integrates.</p>"]  # fmt: skip

    def grids(self, dataset: str, category: str, rows: pd.DataFrame) -> list[str]:
        """One grid per k: rows = example images, columns = image with the ground-truth contour, then each
        method's map over it; nothing without kept examples (a dataset without masks has none drawn)."""
        folder = category_dir(self.out, dataset, category)
        if not (folder / "examples.npz").is_file() or not (rows["level"] == "pixel").any():
            return []
        with np.load(folder / "examples.npz") as npz:
            examples = {k: npz[k] for k in npz.files}
        rel_paths = list(examples["rel_path"])
        maps: dict[int, dict[str, np.ndarray]] = {}
        for job in _jobs(rows).itertuples():
            path = folder / "maps" / f"{job.job_id}.npz"
            if path.is_file():
                with np.load(path) as npz:
                    index = {p: i for i, p in enumerate(npz["rel_path"])}
                    if all(p in index for p in rel_paths):
                        maps.setdefault(job.shot, {})[job.label] = npz["map"][[index[p] for p in rel_paths]]
        out = []
        for shot, by_method in sorted(maps.items()):
            labels = sorted(by_method)
            head = "".join(f"<th>{html.escape(h)}</th>" for h in ["example", "image + ground truth", *labels])
            lines = [f"<h4>{html.escape(category)}, k={shot}: example maps (seed 0)</h4>",
                     f"<table class='grid'><tr>{head}</tr>"]  # fmt: skip
            for e, rel_path in enumerate(rel_paths):
                image, mask = examples["image"][e], examples["mask"][e]
                kind = str(examples["defect_type"][e]) or ("good" if examples["label"][e] == 0 else "anomalous")
                stem = f"grid_{dataset}_{category}_k{shot}_{e}"
                cells = [self.image(_tile(image, mask, None), f"{stem}_image.jpg", f"{rel_path} with ground truth")]
                cells += [self.image(_tile(image, mask, by_method[m][e]), f"{stem}_{i}.jpg", f"{m} map of {rel_path}")
                          for i, m in enumerate(labels)]  # fmt: skip
                lines.append(f"<tr><th>{html.escape(kind)}<br><small>{html.escape(rel_path)}</small></th>"
                             + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")  # fmt: skip
            out += [*lines, "</table>"]
        return out


def _jobs(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluated job: job_id, method label (``method [mode]`` outside benchmark mode), shot, seed;
    ordered by seed (numbers first) so the lowest seed comes first."""
    jobs = rows[rows["status"].isin(["ok", "undefined"])][["job_id", "method", "mode", "shot", "seed"]]
    jobs = jobs.drop_duplicates("job_id").copy()
    jobs["label"] = [m if mode == "benchmark" else f"{m} [{mode}]" for m, mode in zip(jobs["method"], jobs["mode"])]
    order = [(0, int(s)) if s.isdigit() else (1, 0) for s in jobs["seed"]]
    return jobs.assign(order=order).sort_values(["order", "label", "shot"])


def _fpr_limit(rows: pd.DataFrame) -> float:
    limits = [float(v) for v in rows["fpr_limit"] if str(v) not in ("", "nan")]
    return limits[0] if limits else AUPRO_FPR_LIMIT


def _tile(image: np.ndarray, mask: np.ndarray, heat: np.ndarray | None) -> Image.Image:
    """An (h, w, 3) image, optionally blended with the colour-mapped [0, 1] ``heat``, with the mask's contour,
    scaled to at most :data:`TILE_SIDE` a side."""
    rgb = image.astype(np.float32)
    if heat is not None:
        colours = matplotlib.colormaps[COLORMAP](np.clip(heat.astype(np.float32), 0, 1))[..., :3] * 255
        rgb = (1 - OVERLAY_ALPHA) * rgb + OVERLAY_ALPHA * colours
    tile = rgb.round().astype(np.uint8)
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    tile[edge] = CONTOUR
    picture = Image.fromarray(tile)
    scale = min(1.0, TILE_SIDE / max(picture.size))
    return picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                          Image.Resampling.LANCZOS)  # fmt: skip


def _colour_bar() -> Figure:
    fig, ax = plt.subplots(figsize=(5, 0.6))
    fig.colorbar(plt.cm.ScalarMappable(cmap=COLORMAP), cax=ax, orientation="horizontal",
                 label="0 = a method's lowest pixel score in the category, 1 = its highest")  # fmt: skip
    return fig


def _scaling_figure(table: pd.DataFrame) -> Figure:
    """One panel per metric: mean ± std over seeds vs k, one line per method (modes apart)."""
    metrics = [m for m in METRICS if m in set(table["metric"])]
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        part = table[table["metric"] == metric]
        for (method, mode), line in part.groupby(["method", "mode"], sort=True):
            line = line.sort_values("shot")
            label = method if mode == "benchmark" else f"{method} [{mode}]"
            ax.errorbar(line["shot"], 100 * line["mean"], yerr=100 * line["std"].fillna(0), label=label,
                        marker="o", markersize=3, capsize=3, linewidth=1.2)  # fmt: skip
        ax.set(title=metric, xlabel="k (shots)", ylabel="×100")
        ax.set_xticks(sorted(set(table["shot"])))
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _markdown(text: str) -> str:
    """The leaderboard Markdown as HTML (CommonMark + tables, raw HTML escaped)."""
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _provenance(results: pd.DataFrame) -> str:
    """The closing protocol note: what the page was drawn from, methods' flags (precision and other settings)."""
    flags = sorted({f"{r.method}: {r.flags or 'defaults'}" for r in results.itertuples()})
    return ("<h2>Protocol</h2><p class='note'>Every number above comes from results.csv (exact metrics); the "
            "per-dataset protocol notes under each leaderboard give backbone, weights, image size, evaluation frame, "
            "shot manifests, versions and git commit. Pictures (maps, curves) are drawing aids kept by the runner "
            "at ≤ 256 px in float16 and never enter a metric. Method settings other than the defaults (precision "
            "included): " + html.escape("; ".join(flags)) + ".</p>")  # fmt: skip
