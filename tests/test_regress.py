"""``fsas-bench regress``: value drift, missing/extra rows and protocol changes fail; bad input exits 2."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from fsas_bench.cli import main
from fsas_bench.runner import regress
from fsas_bench.runner.regress import (
    KEY, PROTOCOL, Selection, SnapshotConfig, SnapshotSweep, compare, sidecar_path, sweep_spec,
)  # fmt: skip

SLICE = {"methods": ["patchknn"], "categories": ["hex_nut"], "shots": [1], "seeds": [0]}
KEY_TEXT = "patchknn synthetic/hex_nut k=1 seed=0 P-AUROC"


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results.csv of the cheapest real sweep: patchknn on one category, 1-shot, seed 0."""
    out = tmp_path_factory.mktemp("tiny-run")
    assert main(["run", "--methods", "patchknn", "--categories", "hex_nut", "--shots", "1", "--seeds", "0",
                 "--out", str(out)]) == 0  # fmt: skip
    return out / "results.csv"


@pytest.fixture
def snapshot(tmp_path: Path, tiny_results: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A snapshot of ``tiny_results`` made by ``regress --update --results`` from a hand-written sidecar."""
    monkeypatch.setenv("COLUMNS", "200")  # keep rich tables unwrapped in captured output
    path = tmp_path / "snap" / "tiny.csv"
    path.parent.mkdir()
    sidecar_path(path).write_text(json.dumps({"sweep": SLICE}))
    assert main(["regress", "--against", str(path), "--results", str(tiny_results), "--update"]) == 0
    return path


def _edit(path: Path, dest: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    """Write ``edit(frame)`` of a tidy CSV to ``dest`` (text columns, untouched values kept verbatim)."""
    edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(dest, index=False, lineterminator="\n")
    return dest


def _bump(delta: float, metric: str = "P-AUROC") -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        row = frame.index[frame["metric"] == metric][0]
        frame.loc[row, "value"] = repr(float(frame.loc[row, "value"]) + delta)
        return frame

    return edit


def _without(metric: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame[frame["metric"] != metric]


def _with(**columns: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame.assign(**columns)


def _regress(snapshot: Path, results: Path, *extra: str) -> int:
    return main(["regress", "--against", str(snapshot), "--results", str(results), *extra])


def test_update_writes_snapshot_without_volatile_columns_and_a_sidecar(snapshot, tiny_results):
    frame = pd.read_csv(snapshot, dtype=str, keep_default_na=False)
    results = pd.read_csv(tiny_results, dtype=str, keep_default_na=False)
    assert not {"run_id", "job_id", "git_sha", "device", "torch"} & set(frame.columns)
    assert list(frame["value"]) == list(results["value"])  # full precision, verbatim
    sidecar = json.loads(sidecar_path(snapshot).read_text())
    assert sidecar["sweep"]["methods"] == ["patchknn"] and sidecar["tolerances"]["cpu"]["*"] == 1e-6
    assert sidecar["produced"]["rows"] == 7 and sidecar["produced"]["device"] == "cpu"
    assert SnapshotConfig.load(sidecar_path(snapshot)).sweep.shots == (1,)


def test_identical_results_hold(snapshot, tiny_results, capsys):
    assert _regress(snapshot, tiny_results) == 0
    assert "regression holds (7 values compared" in capsys.readouterr().out


def test_one_value_perturbed_beyond_tolerance_fails_and_names_the_key(snapshot, tiny_results, tmp_path, capsys):
    _edit(snapshot, snapshot, _bump(1e-5))
    assert _regress(snapshot, tiny_results) == 1
    out = capsys.readouterr().out
    assert "moved beyond the exact tolerance" in out and KEY_TEXT in out and "-1e-05" in out
    assert "1 moved beyond their band" in out and "code change" in out
    assert _regress(snapshot, tiny_results, "--atol", "1e-4") == 0  # a looser global tolerance absorbs it
    config = json.loads(sidecar_path(snapshot).read_text())
    config["tolerances"]["cpu"]["P-AUROC"] = 2e-5  # ... and so does a per-metric one in the sidecar
    sidecar_path(snapshot).write_text(json.dumps(config))
    assert _regress(snapshot, tiny_results) == 0


def test_perturbation_within_tolerance_holds(snapshot, tiny_results):
    _edit(snapshot, snapshot, _bump(5e-7))
    assert _regress(snapshot, tiny_results) == 0


def test_nan_equals_nan_but_not_a_number():
    row = {**dict.fromkeys(PROTOCOL, "x"), **dict(zip(KEY, ("m", "d", "c", "1", "0", "AUPRO"), strict=True))}
    snap = pd.DataFrame([{**row, "value": math.nan}])
    assert compare(snap, snap.copy(), {("m", "AUPRO"): (0.0, 0.0)}).holds
    moved = compare(snap, snap.assign(value=0.5), {("m", "AUPRO"): (1.0, 1.0)}).moved
    assert len(moved) == 1 and math.isnan(moved["snapshot"].iloc[0]) and moved["now"].iloc[0] == 0.5


def test_gpu_results_use_the_looser_cuda_tolerance(snapshot, tiny_results, tmp_path):
    def on_gpu(delta: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
        return lambda frame: _bump(delta)(frame).assign(device="NVIDIA H100 80GB HBM3")

    assert _regress(snapshot, _edit(tiny_results, tmp_path / "a.csv", on_gpu(1e-3))) == 0
    assert _regress(snapshot, _edit(tiny_results, tmp_path / "b.csv", on_gpu(1e-2))) == 1


def test_missing_and_extra_rows_fail(snapshot, tiny_results, tmp_path, capsys):
    assert _regress(snapshot, _edit(tiny_results, tmp_path / "fewer.csv", _without("AUPRO"))) == 1
    out = capsys.readouterr().out
    assert "missing (in the snapshot, not in the run)" in out and "1 missing" in out
    _edit(snapshot, snapshot, _without("I-AP"))
    assert _regress(snapshot, tiny_results) == 1
    out = capsys.readouterr().out
    assert "extra (in the run, not in the snapshot)" in out and "patchknn synthetic/hex_nut k=1 seed=0 I-AP" in out


def test_protocol_changes_fail(snapshot, tiny_results, tmp_path, capsys):
    assert _regress(snapshot, _edit(tiny_results, tmp_path / "r.csv", _with(pretrained="laion400m_e32"))) == 1
    out = capsys.readouterr().out
    assert "protocol changed" in out and "laion400m_e32" in out and "7 protocol changes" in out


def test_selection_restricts_both_sides(snapshot, tiny_results, tmp_path):
    def add_seed(delta: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
        def edit(frame: pd.DataFrame) -> pd.DataFrame:
            more = frame.assign(seed="1", value=[repr(float(v) + delta) for v in frame["value"]])
            return pd.concat([frame, more], ignore_index=True)

        return edit

    _edit(snapshot, snapshot, add_seed(0.0))
    drifted = _edit(tiny_results, tmp_path / "r.csv", add_seed(0.1))  # seed 1 drifted
    assert _regress(snapshot, drifted) == 1
    assert _regress(snapshot, drifted, "--seeds", "0") == 0
    assert _regress(snapshot, drifted, "--seeds", "1", "--methods", "patchknn") == 1


def test_rerun_of_the_recorded_sweep_matches_and_resumes(snapshot, capsys):
    assert main(["regress", "--against", str(snapshot)]) == 0
    first = capsys.readouterr().out
    assert "1 cells" in first and "regression holds" in first
    assert main(["regress", "--against", str(snapshot)]) == 0  # resumed from the cache directory


def test_rerun_directory_is_keyed_by_sweep_device_and_code(monkeypatch):
    config = SnapshotConfig(SnapshotSweep(methods=("patchknn",)))
    spec = sweep_spec(config, Selection(shots=(1,), categories=("tile",)), "cpu", None)
    assert spec.shots == (1,) and spec.categories == ("tile",) and spec.methods == ("patchknn",) and spec.resume
    assert spec.out == sweep_spec(config, Selection(), "cpu", None).out  # slices resume into the full sweep's directory
    assert spec.out != sweep_spec(config, Selection(), "cuda", None).out
    assert spec.out != sweep_spec(SnapshotConfig(SnapshotSweep(methods=("winclip",))), Selection(), "cpu", None).out
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # an emulated CPU kernel never reuses native cells
    assert spec.out != sweep_spec(config, Selection(), "cpu", None).out
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.setattr(regress, "source_digest", lambda: "edited sources")
    assert spec.out != sweep_spec(config, Selection(), "cpu", None).out


@pytest.mark.parametrize(
    ("break_it", "extra", "needle"),
    [
        (lambda s, r: s.unlink(), (), "not found: create it with --update"),
        (lambda s, r: s.write_bytes(b'a,"b\n1,2\n'), (), "is not a readable CSV"),
        (lambda s, r: _edit(r, r, lambda f: f.drop(columns=["value", "status"])), (), "lacks column(s) value, status"),
        (lambda s, r: _edit(s, s, _with(value="abc")), (), "value 'abc' is not a number"),
        (lambda s, r: _edit(s, s, _with(metric="I-AUROC")), (), "has two rows for"),
        (lambda s, r: sidecar_path(s).write_text("{nope"), (), "is not valid JSON"),
        (lambda s, r: sidecar_path(s).unlink(), (), "sidecar"),
        (lambda s, r: sidecar_path(s).write_text(json.dumps({"tolerances": {"cpu": {"*": 1e-6, "AUROC": 1},
                                                                            "cuda": {"*": 1}}})), (),
         "unknown metric 'AUROC'"),
        (lambda s, r: sidecar_path(s).write_text(json.dumps({"sweep": {"shots": "1"}})), (), "sweep.shots"),
        (lambda s, r: sidecar_path(s).write_text(json.dumps({"sweep": {"epochs": 1}})), (), "unknown sweep key"),
        (lambda s, r: None, ("--categories", "tile"), "category 'tile' is not in the snapshot"),
        (lambda s, r: None, ("--update", "--seeds", "0"), "--update rewrites the whole snapshot"),
        (lambda s, r: None, ("--atol", "-1"), "--atol -1.0 is invalid"),
        (lambda s, r: None, ("--atol", "x"), "invalid float value"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2(snapshot, tiny_results, tmp_path, capsys, break_it, extra, needle):
    results = Path(shutil.copy(tiny_results, tmp_path / "results.csv"))
    break_it(snapshot, results)
    assert _regress(snapshot, results, *extra) == 2
    captured = capsys.readouterr()
    assert needle in captured.err and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("fsas-bench: error: ") and ": " in captured.err.split("error: ", 1)[1]


def test_update_refuses_results_of_another_sweep(snapshot, tiny_results, capsys):
    config = json.loads(sidecar_path(snapshot).read_text())
    config["sweep"]["shots"] = [1, 2]
    sidecar_path(snapshot).write_text(json.dumps(config))
    assert _regress(snapshot, tiny_results, "--update") == 2
    assert "results have shot 1 but the sidecar's sweep records 1, 2" in capsys.readouterr().err


def _set_band(snapshot: Path, method: str, metric: str, band: float) -> None:
    config = json.loads(sidecar_path(snapshot).read_text())
    config["environment"] = {"bands": {method: {metric: band}}}
    sidecar_path(snapshot).write_text(json.dumps(config))


def test_a_move_inside_the_environment_band_is_reported_but_holds(snapshot, tiny_results, capsys):
    _edit(snapshot, snapshot, _bump(1e-5))
    _set_band(snapshot, "patchknn", "P-AUROC", 2e-5)
    assert _regress(snapshot, tiny_results) == 0
    out = capsys.readouterr().out
    assert KEY_TEXT in out and "environment (within band)" in out and "1 within the environment band" in out
    _set_band(snapshot, "patchknn", "P-AUROC", 5e-6)  # the band is per method and metric: narrower fails
    assert _regress(snapshot, tiny_results) == 1
    assert "beyond band: code change" in capsys.readouterr().out
    _set_band(snapshot, "winclip", "P-AUROC", 1.0)  # another method's band never applies
    assert _regress(snapshot, tiny_results) == 1


def test_a_second_machine_widens_the_band_and_never_narrows_it():
    first = {"measured": {"dictas": {"P-F1max": 0.0, "P-AP": 2e-7}, "winclip": {"I-AP": 0.01}}}
    measured = pd.Series({("dictas", "P-F1max"): 3e-6, ("dictas", "P-AP"): 1e-8, ("patchknn", "AUPRO"): 0.0})
    env = regress.merged_environment(first, measured, 10.0, "CPU B (avx512 kernels)")
    assert env["measured"] == {"dictas": {"P-AP": 2e-7, "P-F1max": 3e-6}, "patchknn": {"AUPRO": 0.0},
                               "winclip": {"I-AP": 0.01}}
    assert env["bands"] == {"dictas": {"P-AP": pytest.approx(2e-6), "P-F1max": pytest.approx(3e-5)},
                            "winclip": {"I-AP": pytest.approx(0.1)}}
    assert env["machines"] == ["CPU B (avx512 kernels)", regress.UNRECORDED_MACHINE]
    again = regress.merged_environment(env, pd.Series({("dictas", "P-F1max"): 1e-6}), 10.0, "CPU B (avx512 kernels)")
    assert again["bands"] == env["bands"] and again["machines"] == env["machines"]


def test_environment_band_must_be_numbers(snapshot, tiny_results, capsys):
    _set_band(snapshot, "patchknn", "P-AUROC", -1.0)
    assert _regress(snapshot, tiny_results) == 2
    assert "'environment.bands' must map method" in capsys.readouterr().err


def test_training_check_band_follows_the_seed_spread():
    rows = [
        {"method": "m", "dataset": "d", "shot": "1", "metric": "I-AUROC", "fit_scope": "auxiliary", "seed": str(s),
         "category": c, "value": v}
        for s, values in enumerate([(0.6, 0.8), (0.7, 0.9), (0.5, 0.7)]) for c, v in zip("ab", values, strict=True)
    ]  # fmt: skip
    snap = pd.DataFrame(rows)  # seed means 0.7, 0.8, 0.6: std 0.1, band 3 · 0.1 · sqrt(2/3) = 0.245
    assert regress.training_check(snap, snap.assign(value=snap["value"] + 0.24)).empty
    failed = regress.training_check(snap, snap.assign(value=snap["value"] + 0.25))
    assert len(failed) == 1 and failed["band"].iloc[0] == pytest.approx(0.3 * math.sqrt(2 / 3))
    flat = snap.assign(value=0.5)  # no spread: the band is the one-point floor
    assert regress.training_check(flat, flat.assign(value=0.509)).empty
    assert len(regress.training_check(flat, flat.assign(value=0.52))) == 1
    assert regress.training_check(flat.assign(fit_scope="none"), flat.assign(value=0.9, fit_scope="none")).empty


def test_relative_loss_decrease():
    assert regress._relative_decrease([4.0, 3.0, 2.0, 1.0]) == pytest.approx(0.75)
    assert regress._relative_decrease([1.0]) is None and regress._relative_decrease([-1.0, -2.0]) is None


PROMPTAD_SWEEP = {"methods": ["promptad"], "categories": ["hex_nut"], "shots": [1], "seeds": [0],
                  "overrides": {"promptad": {"epochs": "3"}}}  # fmt: skip


@pytest.fixture(scope="session")
def promptad_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot (with reference fits) of a 3-epoch promptad run on one category, made by ``--update``."""
    path = tmp_path_factory.mktemp("promptad-snap") / "tiny.csv"
    sidecar_path(path).write_text(json.dumps({"sweep": PROMPTAD_SWEEP}))
    assert main(["regress", "--against", str(path), "--update"]) == 0
    return path


def test_update_exports_pinned_reference_fits_with_their_losses(promptad_snapshot):
    from fsas_bench.runner.training import ReferenceFits, recorded_losses

    config = SnapshotConfig.load(sidecar_path(promptad_snapshot))
    assert config.reference_fits == "tiny-fits"
    fits = ReferenceFits(promptad_snapshot.parent / "tiny-fits")
    (relative, digest), = fits.pins.items()
    assert relative.startswith("promptad/synthetic/") and relative.endswith("_hex_nut_k1_seed0.safetensors")
    frame = pd.read_csv(promptad_snapshot, dtype=str, keep_default_na=False)
    assert set(frame["checkpoint_sha"]) == {digest}
    losses = recorded_losses(fits.root / "checkpoints" / relative)
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_inference_rerun_evaluates_the_reference_fits_without_training(promptad_snapshot, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    from fsas_bench.methods.finegrainedad.lightning_module import FineGrainedAD

    def no_training(self):
        raise AssertionError("a reference-fit regression must not train")

    monkeypatch.setattr(FineGrainedAD, "_fit", no_training)
    assert main(["regress", "--against", str(promptad_snapshot)]) == 0
    out = capsys.readouterr().out
    assert "evaluating the reference fits" in out and "regression holds (7 values compared: 0 moved" in out


def test_reference_fits_are_pinned(promptad_snapshot, tmp_path, capsys):
    copy = tmp_path / "snap"
    shutil.copytree(promptad_snapshot.parent, copy)
    fit = next((copy / "tiny-fits" / "checkpoints").rglob("*.safetensors"))
    fit.write_bytes(fit.read_bytes()[:-1] + b"\0")
    assert main(["regress", "--against", str(copy / "tiny.csv")]) == 2
    assert "does not match its pinned SHA-256" in capsys.readouterr().err


def test_training_regression_retrains_and_checks_statistically(promptad_snapshot, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["regress", "--against", str(promptad_snapshot), "--training"]) == 0
    out = capsys.readouterr().out
    assert "training every method" in out and "0 failed training checks" in out and "regression holds" in out
