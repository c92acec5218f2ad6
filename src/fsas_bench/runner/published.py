"""Published ("paper") numbers with provenance: ``baselines/published/*.csv``, their validator, and the match
of a measured run against them.

One row per (paper, method, dataset, shot, metric). ``value`` is the number as printed in the source, in %
(0–100). ``method`` and ``dataset`` use fsas-bench registry names where fsas-bench implements the method or
loads the dataset (``winclip``, ``patchknn``, ``inctrl``, ``dictas``, ``finegrainedad``, ``promptad``; ``mvtec``,
``visa``, ``elpv``), else the paper's name in lower case (``patchcore``, ``april-gan``, ...; ``aitex``).
``backbone`` is the open_clip architecture name (or the paper's extractor), ``pretrained`` the open_clip tag.
``evidence`` is ``verified`` (checked against the cited public source) or ``needs-check`` (from memory or a
second-hand transcription: check the PDF before relying on it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fsas_bench.errors import UserError
from fsas_bench.metrics import IMAGE_METRICS, PIXEL_METRICS, REGION_METRICS
from fsas_bench.numbers import strict_int

PUBLISHED_COLUMNS = (
    "paper", "arxiv", "table", "method", "dataset", "shot", "metric", "value", "backbone", "pretrained",
    "resolution", "shot_draw", "metric_impl", "evidence", "note",
)  # fmt: skip
PUBLISHED_KEY = ("paper", "method", "dataset", "shot", "metric")
EVIDENCE = ("verified", "needs-check")
PUBLISHED_DIR = Path(__file__).resolve().parents[3] / "baselines" / "published"  # in a source checkout
# Checkpoint file names recorded as ``pretrained`` when weights are passed as a file → their open_clip tag.
WEIGHT_FILES = {
    "vit_b_16_plus_240-laion400m_e32-699c4b84.pt": "laion400m_e32",
    "ViT-L-14-336px.pt": "openai",
}
_METRICS = IMAGE_METRICS + PIXEL_METRICS + REGION_METRICS
_NAME = re.compile(r"[a-z0-9][a-z0-9+_.-]*")
_ARXIV = re.compile(r"\d{4}\.\d{4,5}")


def _check_row(row: pd.Series) -> tuple[str, str, str] | None:
    """The first problem of a row as (column, what is wrong, how to fix), or None."""
    required = [c for c in PUBLISHED_COLUMNS if c not in ("arxiv", "note")]
    for column in required:
        if not row[column].strip():
            return column, "is empty", "fill it ('n/r' where the source does not report it)"
    checks = [
        ("arxiv", row["arxiv"] == "" or _ARXIV.fullmatch(row["arxiv"]), "use an id like 2303.14814 or leave it empty"),
        ("method", _NAME.fullmatch(row["method"]), "use the lower-case registry name, e.g. winclip"),
        ("dataset", _NAME.fullmatch(row["dataset"]), "use the lower-case dataset name, e.g. mvtec"),
        ("shot", _non_negative(row["shot"]), "use the number of reference images k (0 for zero-shot)"),
        ("metric", row["metric"] in _METRICS, f"use one of {', '.join(_METRICS)}"),
        ("value", _percent(row["value"]), "write the number as printed, in % between 0 and 100"),
        ("backbone", not row["backbone"].startswith("fsas-"), "name the paper's backbone, not an fsas-bench one"),
        ("pretrained", row["pretrained"].lower() != "none" and "random" not in row["pretrained"].lower(),
         "name the paper's weights (random weights are never compared with papers)"),
        ("resolution", row["resolution"] == "n/r" or _non_negative(row["resolution"]),
         "use input pixels, e.g. 240, or n/r"),
        ("evidence", row["evidence"] in EVIDENCE, "use verified or needs-check"),
        ("evidence", row["evidence"] != "verified" or "from memory" not in row["table"],
         "a from-memory number stays needs-check until it is checked against the source"),
    ]  # fmt: skip
    for column, ok, fix in checks:
        if not ok:
            return column, f"'{row[column]}' is invalid", fix
    return None


def _non_negative(text: str) -> bool:
    value = strict_int(text)
    return value is not None and value >= 0


def _percent(text: str) -> bool:
    try:
        return 0.0 <= float(text) <= 100.0
    except ValueError:
        return False


def read_published(path: Path) -> pd.DataFrame:
    """One published CSV, validated (UserError naming file, row, column, problem and fix)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV ({str(err).strip()}): fix the quoting or the encoding") from None
    columns = tuple(frame.columns)
    if columns != PUBLISHED_COLUMNS:
        missing = [c for c in PUBLISHED_COLUMNS if c not in columns]
        problem = f"lacks column '{missing[0]}'" if missing else f"has columns {', '.join(columns)}"
        raise UserError(f"{path}: header {problem}: use exactly {','.join(PUBLISHED_COLUMNS)}")
    for index, row in frame.iterrows():
        if (problem := _check_row(row)) is not None:
            column, what, fix = problem
            raise UserError(f"{path} row {int(index) + 2} column '{column}': {what}: {fix}")
    return frame.assign(file=path.name, line=frame.index + 2)


def load_published(directory: Path) -> pd.DataFrame:
    """Every ``*.csv`` in ``directory``, validated, with ``shot`` as int and ``value`` as float (in %).

    Raises:
        UserError: a file is malformed, or two rows share (paper, method, dataset, shot, metric).
    """
    files = sorted(directory.glob("*.csv"))
    if not files:
        raise UserError(f"no published CSV in '{directory}': add baselines/published/*.csv or pass another folder")
    frame = pd.concat([read_published(path) for path in files], ignore_index=True)
    repeated = frame[frame.duplicated(list(PUBLISHED_KEY))]
    if not repeated.empty:
        second = repeated.iloc[0]
        first = frame[(frame[list(PUBLISHED_KEY)] == second[list(PUBLISHED_KEY)]).all(axis=1)].iloc[0]
        raise UserError(
            f"{first['file']} row {first['line']} and {second['file']} row {second['line']} both give "
            f"{first['paper']} / {first['method']} / {first['dataset']} / {first['shot']}-shot / {first['metric']}: "
            "keep one row per (paper, method, dataset, shot, metric)"
        )
    return frame.astype({"shot": int, "value": float})


def weights_tag(pretrained: str) -> str:
    """The open_clip tag of a run's ``pretrained`` column (checkpoint file names mapped to their tag)."""
    return WEIGHT_FILES.get(pretrained, pretrained)


def match_published(table: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Aggregated leaderboard rows joined with every published row of the same protocol.

    A match needs equal method, dataset, shot, metric, backbone and weights (so random-weight and fsas-tiny
    runs never match). Returns the table's columns plus ``paper_value`` (%), ``delta`` (ours − paper, in
    points) and the published provenance columns.
    """
    ours = table.assign(weights=table["pretrained"].map(weights_tag))
    theirs = published.rename(columns={"value": "paper_value", "pretrained": "weights"})
    keys = ["method", "dataset", "shot", "metric", "backbone", "weights"]
    merged = ours.merge(theirs, on=keys, how="inner", suffixes=("", "_paper"))
    return merged.assign(delta=100 * merged["mean"] - merged["paper_value"])
