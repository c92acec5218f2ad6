"""The project's own regression: a slice of the embedded benchmark, rerun now (trained parts from the committed
reference fits), against the committed snapshot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from fsas_bench.cli import main
from fsas_bench.data.registry import load_dataset
from fsas_bench.methods import get_method, list_methods
from fsas_bench.methods.base import MethodOutput
from fsas_bench.runner.regress import SNAPSHOT_COLUMNS, SnapshotConfig, fits_dir, sidecar_path
from fsas_bench.runner.training import ReferenceFits

SNAPSHOT = Path(__file__).resolve().parents[1] / "baselines" / "regression" / "embedded.csv"
SLICE = ["--categories", "hex_nut", "--shots", "1", "--seeds", "0"]


def test_committed_snapshot_is_the_whole_embedded_benchmark():
    frame = pd.read_csv(SNAPSHOT, dtype=str, keep_default_na=False)
    config = SnapshotConfig.load(sidecar_path(SNAPSHOT))
    assert tuple(frame.columns) == SNAPSHOT_COLUMNS
    assert set(frame["method"]) == set(list_methods()), "a method was (un)registered: regenerate with --update"
    assert set(frame["category"]) == set(load_dataset("synthetic", None).categories)
    assert set(frame["shot"]) == {"1", "2", "4"} == set(map(str, config.sweep.shots))
    assert set(frame["seed"]) == {"0", "1", "2"} and (frame["status"] == "ok").all()
    assert config.tolerances["cpu"]["*"] == 1e-6
    fits = ReferenceFits(fits_dir(SNAPSHOT, config))  # every pin checked
    trained = frame[frame["fit_scope"] != "none"]
    assert set(trained["checkpoint_sha"]) == set(fits.pins.values()), "every trained cell evaluates a pinned fit"
    assert set(config.environment["bands"]) <= set(list_methods())


@pytest.mark.slow
def test_embedded_slice_matches_the_committed_snapshot(capsys):
    """The two untrained methods on one cell: the regress path end to end (CI's .ci/run checks every value)."""
    assert main(["regress", "--against", str(SNAPSHOT), "--methods", "patchknn,winclip", *SLICE]) == 0
    out = capsys.readouterr().out
    assert "(2 cells" in out and "regression holds (14 values compared" in out


@pytest.mark.slow
def test_a_small_change_to_one_methods_maps_fails_and_names_the_values(monkeypatch, tmp_path, capsys):
    """A 1e-3 ramp added to patchknn's maps (values ~0.1) is a code change, far outside the environment band."""
    monkeypatch.setenv("FSAS_CACHE_DIR", str(tmp_path))  # never resume cells of the unchanged code
    monkeypatch.setenv("COLUMNS", "200")
    method = get_method("patchknn")
    original = method.predict_step

    def changed(self, batch, batch_idx):
        out = original(self, batch, batch_idx)
        ramp = torch.linspace(0.0, 1e-3, out.anomaly_maps.shape[-1]).expand_as(out.anomaly_maps)
        return MethodOutput(out.anomaly_maps + ramp, out.image_scores)

    monkeypatch.setattr(method, "predict_step", changed)
    assert main(["regress", "--against", str(SNAPSHOT), "--methods", "patchknn", *SLICE]) == 1
    out = capsys.readouterr().out
    assert "patchknn synthetic/hex_nut k=1 seed=0 P-AUROC" in out and "beyond band: code change" in out
