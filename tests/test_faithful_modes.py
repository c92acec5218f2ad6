"""``--mode faithful`` end to end: every method's faithful preset runs through the runner on one embedded
category (status ok, finite metrics, ``mode=faithful`` in the rows), and the uniform config entry point."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest

from fsas_bench.cli import main
from fsas_bench.errors import UserError
from fsas_bench.methods import get_method, list_methods
from fsas_bench.methods.base import with_overrides
from fsas_bench.methods.dictas import validation as dictas_validation
from fsas_bench.runner.regress import Selection, SnapshotConfig, SnapshotSweep, check_matches, sweep_spec
from fsas_bench.runner.sweep import Sweep, SweepSpec
from fsas_bench.runner.training import ReferenceFits

FAITHFUL = [name for name in list_methods() if get_method(name).config_cls.faithful_preset("synthetic") is not None]
FAST = {
    "dictas": {"epochs": "1", "steps_per_epoch": "1", "batch_size": "2", "work_size": "64", "paste_size": "64",
               "output_size": "64", "data_workers": "0"},
    "finegrainedad": {"epochs": "1", "hires_factor": "1", "output_size": "64"},
    "promptad": {"epochs": "1", "hires_factor": "1", "output_size": "64"},
}  # fmt: skip
"""The shortest schedules, through ``--set`` (fields no faithful preset sets)."""


pytestmark = pytest.mark.usefixtures("single_thread")


def test_faithful_presets_exist_where_expected():
    assert set(FAITHFUL) >= {"dictas", "finegrainedad", "promptad"}
    assert "patchknn" not in FAITHFUL and "winclip" not in FAITHFUL


@pytest.mark.parametrize("method", FAITHFUL)
def test_faithful_mode_runs_every_preset_through_the_runner(method, tmp_path, monkeypatch):
    # DictAS's target-set freeze trigger validates on every target category: one keeps it to seconds
    monkeypatch.setitem(dictas_validation.VALIDATION_CATEGORIES, "synthetic", ("hex_nut",))
    spec = SweepSpec(out=tmp_path, methods=(method,), categories=("hex_nut",), shots=(1,), seeds=(0,),
                     pretrained="none", mode="faithful", overrides={method: FAST.get(method, {})})  # fmt: skip
    sweep = Sweep(spec)
    config = sweep.configs[(method, "synthetic")]
    preset = type(config).faithful_preset("synthetic")
    assert config.mode == "faithful" and not sweep.benchmark_only
    for name, value in preset.to_dict().items():  # every preset field the defaults lack survives
        if value != type(config)().to_dict()[name] and name not in FAST.get(method, {}):
            assert config.to_dict()[name] == value, name
    sweep.run()
    rows = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert len(rows) == 7 and set(rows["status"]) == {"ok"} and set(rows["mode"]) == {"faithful"}
    assert all(math.isfinite(float(v)) for v in rows["value"])
    assert set(rows["flags"]) == {config.flags()} and "mode=faithful" in config.flags()
    assert set(rows["transductive"]) == {"true" if getattr(config, "transductive", False) else "false"}
    # the trained state (auxiliary head or per-category prompts) as reference fits: same values, no training
    ReferenceFits.export(tmp_path, tmp_path / "fits")
    Sweep(dataclasses.replace(spec, out=tmp_path / "again", reference_fits=tmp_path / "fits")).run()
    again = pd.read_csv(tmp_path / "again" / "results.csv", dtype=str, keep_default_na=False)
    assert list(again["value"]) == list(rows["value"]) and list(again["checkpoint_sha"]) == list(rows["checkpoint_sha"])


def test_for_run_keeps_the_embedded_schedule_and_reports_methods_without_a_preset(tmp_path):
    dictas = get_method("dictas").config_cls
    faithful, benchmark = dictas.for_run("synthetic", "faithful"), dictas.for_run("synthetic")
    assert benchmark == dictas.for_dataset("synthetic") and benchmark.mode == "benchmark"
    assert (faithful.epochs, faithful.steps_per_epoch) == (benchmark.epochs, benchmark.steps_per_epoch) == (2, 6)
    assert faithful.vgen_freeze == "val_trigger" and faithful.official_dataset == "other"
    assert dictas.for_run("btad", "faithful") == dictas.faithful("BTAD")
    fgad = get_method("finegrainedad").config_cls.for_run("mvtec", "faithful")
    assert fgad.captions == "mvtec" and fgad.mode == "faithful" and fgad.seed == 111
    patchknn = get_method("patchknn").config_cls
    assert patchknn.for_run("synthetic", "faithful") == patchknn.for_run("synthetic")
    with pytest.raises(UserError, match="--mode 'exact'"):
        patchknn.for_run("synthetic", "exact")
    with pytest.raises(UserError, match="--mode"):
        with_overrides(benchmark, {"mode": "faithful"})
    spec = SweepSpec(out=tmp_path, methods=("patchknn", "dictas"), categories=("hex_nut",), shots=(1,), seeds=(0,),
                     pretrained="none", mode="faithful")  # fmt: skip
    assert Sweep(spec).benchmark_only == ["patchknn"]


def test_cli_mode_option_list_column_and_the_up_front_notice(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    listed = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 4}
    assert "faithful preset" in text and "no (runs benchmark)" in listed["patchknn"]
    assert listed["dictas"].rstrip(" │").endswith("yes")
    out = tmp_path / "run"
    assert main(["run", "--mode", "faithful", "--methods", "patchknn", "--categories", "hex_nut", "--shots", "1",
                 "--seeds", "0", "--pretrained", "none", "--out", str(out)]) == 0  # fmt: skip
    assert "no faithful preset for patchknn" in capsys.readouterr().out
    assert set(pd.read_csv(out / "results.csv", dtype=str)["mode"]) == {"benchmark"}


def test_regress_sidecars_carry_the_mode_and_old_ones_mean_benchmark(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"sweep": {"methods": ["dictas"], "shots": [1]}}))
    assert SnapshotConfig.load(old).sweep.mode == "benchmark"
    new = tmp_path / "new.json"
    new.write_text(SnapshotConfig(SnapshotSweep(methods=("dictas",), mode="faithful")).to_json({}))
    config = SnapshotConfig.load(new)
    assert config.sweep.mode == "faithful" and sweep_spec(config, Selection(), "cpu", None).mode == "faithful"
    sweep = SnapshotSweep(shots=(1,), seeds=(0,))
    rows = pd.DataFrame({"dataset": ["synthetic"], "shot": ["1"], "seed": ["0"], "backbone": ["fsas-tiny"],
                         "method": ["dictas"], "category": ["tile"]})  # fmt: skip
    faithful = dataclasses.replace(sweep, mode="faithful")
    check_matches(faithful, rows.assign(mode="faithful"))
    check_matches(faithful, rows.assign(mode="benchmark"))  # methods without a preset
    with pytest.raises(UserError, match="mode faithful"):
        check_matches(sweep, rows.assign(mode="faithful"))
