"""The project's own regression: a slice of the embedded benchmark, rerun now, against the committed snapshot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsas_bench.cli import main
from fsas_bench.data.registry import load_dataset
from fsas_bench.methods import list_methods
from fsas_bench.runner.regress import SNAPSHOT_COLUMNS, SnapshotConfig, sidecar_path

SNAPSHOT = Path(__file__).resolve().parents[1] / "baselines" / "regression" / "embedded.csv"
SLICE = ["--categories", "hex_nut", "--shots", "1", "--seeds", "0"]  # every method; CI budget


def test_committed_snapshot_is_the_whole_embedded_benchmark():
    frame = pd.read_csv(SNAPSHOT, dtype=str, keep_default_na=False)
    config = SnapshotConfig.load(sidecar_path(SNAPSHOT))
    assert tuple(frame.columns) == SNAPSHOT_COLUMNS
    assert set(frame["method"]) == set(list_methods()), "a method was (un)registered: regenerate with --update"
    assert set(frame["category"]) == set(load_dataset("synthetic", None).categories)
    assert set(frame["shot"]) == {"1", "2", "4"} == set(map(str, config.sweep.shots))
    assert set(frame["seed"]) == {"0", "1", "2"} and (frame["status"] == "ok").all()
    assert config.tolerances["cpu"]["*"] == 1e-6


def test_embedded_slice_matches_the_committed_snapshot(capsys):
    methods = SnapshotConfig.load(sidecar_path(SNAPSHOT)).sweep.methods or list_methods()
    assert main(["regress", "--against", str(SNAPSHOT), *SLICE]) == 0
    out = capsys.readouterr().out
    assert f"({len(methods)} cells" in out and f"regression holds ({7 * len(methods)} values compared" in out
