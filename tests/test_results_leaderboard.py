"""Result storage (atomic, canonical order, resumable) and leaderboard aggregation."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pandas as pd

from fsas_bench.runner.leaderboard import aggregate, load_results, write_leaderboards
from fsas_bench.runner.results import RESULT_COLUMNS, ResultStore, format_value


def _rows(method: str, category: str, shot: int, seed: int, values: dict[str, float], status: str = "ok") -> list[dict]:
    base = {c: "" for c in RESULT_COLUMNS}
    base.update(method=method, mode="benchmark", method_cfg_hash="h", backbone="fsas-tiny", pretrained="none",
                eval_size="native", metric_impl="exact", dataset="toy", category=category, shot=shot, seed=seed,
                shot_manifest="seeded@v1", shot_manifest_sha="ab" * 32, fsas_version="0", git_sha="g",
                torch="t", open_clip="o", device="cpu", transductive=False, fit_scope="none", mask_resize="none",
                connectivity=8, image_size=224)  # fmt: skip
    return [{**base, "metric": m, "level": "image", "value": v, "status": status} for m, v in values.items()]


def _write(store: ResultStore, job_id: str, rows: list[dict], timing: dict | None = None) -> None:
    """Write one cell as a task does (its rows carry its job id)."""
    store.write_cell(job_id, [{**row, "job_id": job_id} for row in rows], timing or {"job_id": job_id})


def test_format_value_round_trips_floats():
    for x in (0.1, 1 / 3, 0.9999999999999999, 1e-17):
        assert float(format_value(x)) == x
    assert format_value(math.nan) == "NaN" and format_value(True) == "true" and format_value(None) == ""


def test_store_orders_rows_canonically_and_resumes(tmp_path):
    store = ResultStore(tmp_path)
    for seed, category in [(10, "b"), (2, "a"), (2, "b")]:
        _write(store, f"job{seed}{category}", _rows("m", category, 1, seed, {"I-AUROC": 0.5}))
    assert not (tmp_path / "results.csv").exists()  # cells only: results.csv is the merge's
    assert store.merge() == 3
    frame = pd.read_csv(tmp_path / "results.csv", dtype=str)
    assert list(zip(frame["category"], frame["seed"], strict=True)) == [("a", "2"), ("b", "2"), ("b", "10")]
    assert list(frame.columns) == list(RESULT_COLUMNS)
    assert store.is_done("job2a") and not store.is_done("missing")
    _write(store, "jobf", _rows("m", "c", 1, 0, {"I-AUROC": math.nan}, status="failed"))
    assert not store.is_done("jobf")  # failed cells are retried
    assert not list(tmp_path.rglob("*.tmp"))


def test_aggregate_is_mean_over_categories_then_mean_std_over_seeds(tmp_path):
    rng = np.random.default_rng(0)
    store = ResultStore(tmp_path)
    truth = {}
    for method, shot, seed, category in product(["a", "b"], [1, 2], [0, 1, 2], ["x", "y", "z"]):
        value = float(rng.random())
        if (method, shot, seed, category) == ("a", 1, 0, "z"):
            value = math.nan  # an undefined category is skipped in that seed's mean
        truth[(method, shot, seed, category)] = value
        status = "undefined" if math.isnan(value) else "ok"
        jid = f"{method}{shot}{seed}{category}"
        _write(store, jid, _rows(method, category, shot, seed, {"I-AUROC": value}, status), {"job_id": jid, "ms_per_image": 2.0})
    store.merge()
    table = aggregate(load_results(tmp_path / "results.csv")).set_index(["method", "shot"])
    for method, shot in product(["a", "b"], [1, 2]):
        per_seed = [np.nanmean([truth[(method, shot, s, c)] for c in "xyz"]) for s in range(3)]
        row = table.loc[(method, shot)]
        assert row["mean"] == np.float64(np.mean(per_seed)) or math.isclose(row["mean"], np.mean(per_seed), abs_tol=1e-15)
        assert math.isclose(row["std"], np.std(per_seed, ddof=1), abs_tol=1e-15)
        assert row["n_seeds"] == 3
    assert table.loc[("a", 1), "n_categories"] == 2 and table.loc[("b", 1), "n_categories"] == 3
    md_path, csv_path = write_leaderboards(tmp_path)
    text = md_path.read_text()
    assert "## toy" in text and "| a (1-shot) |" in text and "| b (2-shot) |" in text
    assert text.count("**") >= 2  # a best value per shot is bold
    assert "| — |" in text or " — |" in text  # no pixel metrics on this toy set
    assert "Undefined (NaN, skipped in means): 1 rows" in text
    assert pd.read_csv(csv_path).shape[0] == 4


def test_main_table_marks_fewer_categories_counts_seeds_and_explains_ms(tmp_path):
    """A NaN category marks the cell with † and names what was skipped; seeds are counted; ms/img is defined."""
    store = ResultStore(tmp_path)
    for method, seed, category in product(["a", "b"], [0, 1], ["x", "y"]):
        value = math.nan if (method, seed, category) == ("a", 1, "y") else 0.5 + 0.1 * seed
        status = "undefined" if math.isnan(value) else "ok"
        jid = f"{method}{seed}{category}"
        _write(store, jid, _rows(method, category, 1, seed, {"I-AUROC": value}, status), {"job_id": jid, "ms_per_image": 3.0})
    store.merge()
    text = write_leaderboards(tmp_path)[0].read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Method (k-shot)"))
    assert header.split(" | ")[-2:] == ["seeds", "ms/img |"]
    row_a = next(line for line in text.splitlines() if line.startswith("| a (1-shot)"))
    row_b = next(line for line in text.splitlines() if line.startswith("| b (1-shot)"))
    cells_a, cells_b = row_a.strip("|").split(" | "), row_b.strip("|").split(" | ")
    assert cells_a[1].endswith("†") and not cells_b[1].endswith("†")
    assert cells_a[-2].strip() == cells_b[-2].strip() == "2" and cells_a[-1].strip() == "3.0"
    assert "a 1-shot I-AUROC: 1 of 2 categories (no value for y (seed 1))" in text
    assert "backbone encoding" in text and "excluded" in text
    assert "b 1-shot" not in text.split("†", 2)[-1].split("\n\n")[0]


def test_footnote_names_the_precision_unless_fp32(tmp_path):
    store = ResultStore(tmp_path)
    for method, precision in (("a", "fp32"), ("b", "bf16"), ("c", "fp16")):
        rows = [{**row, "precision": precision} for row in _rows(method, "x", 1, 0, {"I-AUROC": 0.5})]
        _write(store, method, rows)
    store.merge()
    lines = write_leaderboards(tmp_path)[0].read_text().splitlines()
    footnote = {line[2:].split(":")[0]: line for line in lines if line.startswith("- ") and "@ 224px" in line}
    assert footnote["a"] == "- a: fsas-tiny @ 224px, weights none, fit none"
    assert footnote["b"] == "- b: fsas-tiny @ 224px, bf16 autocast, weights none, fit none"
    assert footnote["c"] == "- c: fsas-tiny @ 224px, fp16 autocast, weights none, fit none"
