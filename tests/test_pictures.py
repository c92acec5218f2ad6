"""Pictures kept by the runner for the HTML report: a fixed stratified example choice, the documented layout,
skipped on resume, and never a change to results.csv."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsas_bench.data.registry import load_dataset
from fsas_bench.runner.pictures import MAX_SIDE, select_examples, thumbnail_size
from fsas_bench.runner.sweep import Sweep, SweepSpec


def test_examples_are_stratified_by_defect_type_and_fixed():
    query = load_dataset("synthetic", None).split("hex_nut", "test")
    chosen = select_examples(query, 4)
    kinds = [query[i].defect_type for i in chosen]
    assert sorted(kinds[:3]) == sorted({s.defect_type for s in query} - {"good"}) and kinds[3] == "good"
    assert select_examples(query, 4) == chosen and select_examples(list(query), 4, seed=0) == chosen
    assert select_examples(query, 4, seed=1) != chosen  # the seed orders each stratum
    eight = select_examples(query, 8)
    assert eight[:4] == chosen and Counter(query[i].defect_type for i in eight)["good"] == 2
    assert sorted(select_examples(query, 100)) == list(range(len(query)))
    assert select_examples(query, 0) == []


def test_thumbnail_size_never_upscales_and_keeps_the_aspect():
    assert thumbnail_size(1024, 700) == (256, 175)
    assert thumbnail_size(192, 256) == (192, 256)
    assert thumbnail_size(64, 64) == (64, 64)


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.slow
def test_layout_resume_and_results_unchanged(tmp_path):
    spec = SweepSpec(out=tmp_path / "run", methods=("patchknn",), categories=("capsule",), shots=(1,), seeds=(0, 1))
    sweep = Sweep(spec)
    sweep.run()
    results = pd.read_csv(spec.out / "results.csv", dtype=str, keep_default_na=False)
    jobs = results.drop_duplicates("job_id").set_index("seed")["job_id"]
    folder = spec.out / "pictures" / "synthetic" / "capsule"
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*.npz")} == {
        "examples.npz", f"maps/{jobs['0']}.npz", f"curves/{jobs['0']}.npz", f"curves/{jobs['1']}.npz"
    }  # maps of seed 0 only, curves of every cell

    examples = np.load(folder / "examples.npz")
    query = load_dataset("synthetic", None).split("capsule", "test")
    assert list(examples["rel_path"]) == [query[i].rel_path for i in select_examples(query, 4)]
    assert examples["image"].shape == (4, 192, 256, 3) and examples["image"].dtype == np.uint8  # 256 × 192 images
    assert examples["mask"].dtype == bool and examples["mask"][examples["label"] == 1].any(axis=(1, 2)).all()
    maps = np.load(folder / "maps" / f"{jobs['0']}.npz")
    assert maps["map"].shape == (4, 192, 256) and maps["map"].dtype == np.float16 and max(maps["map"].shape) <= MAX_SIDE
    assert 0 <= maps["map"].min() and maps["map"].max() <= 1 and maps["lo"] < maps["hi"]
    assert list(maps["rel_path"]) == list(examples["rel_path"])
    for job in jobs:
        curves = np.load(folder / "curves" / f"{job}.npz")
        assert set(curves.files) == {f"{c}/{a}" for c in ("I-ROC", "P-ROC", "PRO") for a in "xy"}
        assert all(2 <= len(curves[k]) <= 300 for k in curves.files)

    before = _files(spec.out / "pictures")
    Sweep(spec).run()  # resumed: every cell skipped, no picture rewritten
    assert _files(spec.out / "pictures") == before

    plain = SweepSpec(**{**spec.__dict__, "out": tmp_path / "plain", "save_examples": 0})
    Sweep(plain).run()
    assert not (plain.out / "pictures").exists()
    assert (plain.out / "results.csv").read_bytes() == (spec.out / "results.csv").read_bytes()
