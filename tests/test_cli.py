"""End to end through the ``fsas-bench`` CLI on the embedded synthetic benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsas_bench.cli import main
from fsas_bench.metrics import IMAGE_METRICS, PIXEL_METRICS, REGION_METRICS
from fsas_bench.runner.results import RESULT_COLUMNS, ResultStore

ALL_METRICS = IMAGE_METRICS + PIXEL_METRICS + REGION_METRICS

SUBSET = ["--categories", "hex_nut,tile", "--shots", "1,2", "--seeds", "0,1"]  # 8 cells
SMALL = ["--categories", "hex_nut", "--shots", "1", "--seeds", "0,1"]  # 2 cells


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fsas_bench.cli", *args]


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default sweep (patchknn, all synthetic categories, shots 1,2,4, seeds 0,1,2, default weights)."""
    out = tmp_path_factory.mktemp("embedded")
    assert main(["run", "--methods", "patchknn", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_results_schema_and_values(embedded_run):
    frame = pd.read_csv(embedded_run / "results.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == list(RESULT_COLUMNS)
    assert set(frame["shot"]) == {"1", "2", "4"} and set(frame["seed"]) == {"0", "1", "2"}
    assert set(frame["metric"]) == {"I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO"}
    assert (frame["status"] == "ok").all()
    assert set(frame["pretrained"]) == {"fsas-synthetic"} and set(frame["backbone"]) == {"fsas-tiny"}
    assert set(frame["eval_size"]) == {"native"} and set(frame["metric_impl"]) == {"exact"}
    assert frame["shot_manifest_sha"].str.fullmatch("[0-9a-f]{64}").all()
    values = frame["value"].astype(float)
    assert values.between(0, 1).all()
    pixel_auroc = values[frame["metric"] == "P-AUROC"].mean()
    assert pixel_auroc >= 0.9, f"patchknn P-AUROC {pixel_auroc:.3f}: maps are not aligned with masks"


@pytest.mark.slow
def test_leaderboards(embedded_run):
    text = (embedded_run / "leaderboard.md").read_text()
    assert "## synthetic" in text
    for shot in (1, 2, 4):
        assert f"| patchknn ({shot}-shot) |" in text
    assert "fsas-synthetic" in text and "Eval size: native" in text
    board = pd.read_csv(embedded_run / "leaderboard.csv")
    assert set(board["n_seeds"]) == {3} and len(board) == 3 * 7


@pytest.mark.slow
def test_pretrained_none_runs_seeded_random_weights(tmp_path, embedded_run):
    out = tmp_path / "random"
    cell = ["--categories", "tile", "--shots", "1", "--seeds", "0"]
    assert main(["run", "--methods", "patchknn", *cell, "--pretrained", "none", "--out", str(out)]) == 0
    random = pd.read_csv(out / "results.csv")
    trained = pd.read_csv(embedded_run / "results.csv").query("category == 'tile' and shot == 1 and seed == 0")
    assert set(random["pretrained"]) == {"none (random weights)"}
    assert not np.allclose(random.sort_values("metric")["value"], trained.sort_values("metric")["value"])


@pytest.mark.slow
def test_identical_reruns_and_batch_size_invariance(tmp_path):
    outs = []
    for name, batch in (("a", "8"), ("b", "8"), ("c", "1")):  # the split's 20 queries in 3 batches, then in 20
        out = tmp_path / name
        assert main(["run", "--methods", "patchknn", *SMALL, "--batch-size", batch, "--out", str(out)]) == 0
        outs.append((out / "results.csv").read_bytes())
    assert outs[0] == outs[1] == outs[2]


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_csv(tmp_path):
    reference = tmp_path / "reference"
    assert main(["run", "--methods", "patchknn", *SUBSET, "--out", str(reference)]) == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli("run", "--methods", "patchknn", *SUBSET, "--out", str(out)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    total = len(pd.read_csv(reference / "results.csv")["job_id"].unique())
    deadline = time.monotonic() + 240
    while not [p for p in (out / "cells").glob("*.csv") if ".timing" not in p.name]:  # killed after its first cell
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len([p for p in (out / "cells").glob("*.csv") if ".timing" not in p.name])
    assert total == 8 and 0 < done_before < total and not (out / "results.csv").exists(), "the kill left no work"
    store = ResultStore(out)
    finished = [p.name.removesuffix(".csv") for p in (out / "cells").glob("*.csv") if ".timing" not in p.name]
    assert all(store.is_done(jid, ALL_METRICS) for jid in finished)  # whole cells only, no torn rows
    assert main(["run", "--methods", "patchknn", *SUBSET, "--out", str(out)]) == 0
    assert (out / "results.csv").read_bytes() == (reference / "results.csv").read_bytes()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--datasets", "nope"], "unknown dataset 'nope'"),
        (["--datasets", "mvtec"], "dataset 'mvtec' is not available"),
        (["--categories", "nope"], "category 'nope' is not in dataset"),
        (["--backbone", "ViT-Nope"], "unknown backbone"),
        (["--backbone", "ViT-B-16"], "has no weights"),
        (["--pretrained", "/no/such/ckpt.pt"], "checkpoint file does not exist"),
        (["--shots", "1,x"], "--shots '1,x' is malformed"),
        (["--seeds", "-1"], "--seeds '-1' is malformed"),
        (["--shots", "999"], "normal training images; use --shots up to"),
        (["--eval-size", "big"], "--eval-size 'big' is invalid"),
        (["--batch-size", "0"], "--batch-size 0 is invalid"),
        (["--save-examples", "-1"], "--save-examples -1 is invalid"),
        (["--save-examples", "x"], "argument --save-examples: 'x' is not an integer"),
        (["--device", "tpu"], "--device 'tpu' is unknown"),
        (["--data-root", "/no/such/dir"], "is not a directory"),
        (["--bogus"], "unrecognized arguments"),
        (["--mode", "exact"], "invalid choice: 'exact'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    assert main(["run", *args, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("fsas-bench: error:"), lines
    assert not out.exists()


def test_console_script_exits_2_without_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run(_cli("run", "--methods", "patchknn", "--out", str(blocker / "sub")),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"fsas-bench: error: --out '{blocker / 'sub'}' is not writable "
                                                f"(no write permission in '{blocker}'): choose another --out"]  # fmt: skip


def test_corrupt_image_and_mask_mismatch_in_a_data_root(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "data" / "mpdd" / "part"
    for rel in ("train/good/000.png", "train/good/001.png", "test/good/000.png", "test/dent/000.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24)).save(root / rel)
    (root / "ground_truth/dent").mkdir(parents=True)
    Image.new("L", (24, 32)).save(root / "ground_truth/dent/000_mask.png")  # transposed
    base = ["run", "--methods", "patchknn", "--data-root", str(tmp_path / "data"), "--shots", "1", "--seeds", "0"]
    assert main([*base, "--out", str(tmp_path / "o1")]) == 2
    assert "size mismatch" in capsys.readouterr().err and not (tmp_path / "o1").exists()
    Image.new("L", (32, 24)).save(root / "ground_truth/dent/000_mask.png")
    (root / "test/good/000.png").write_bytes(b"not a png")
    assert main([*base, "--out", str(tmp_path / "o2")]) == 2
    assert "unreadable image" in capsys.readouterr().err and not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_report_and_list(embedded_run, capsys):
    (embedded_run / "leaderboard.md").unlink()
    assert main(["report", str(embedded_run)]) == 0 and (embedded_run / "leaderboard.md").is_file()
    assert main(["list"]) == 0
    shown = capsys.readouterr().out
    assert "patchknn" in shown and "synthetic" in shown and "fsas-tiny" in shown and "elpv" in shown
    assert main(["report", str(embedded_run / "missing")]) == 2


@pytest.mark.slow
def test_zero_shot_runs_for_methods_that_support_it_and_is_skipped_for_others(tmp_path):
    out = tmp_path / "zs"
    assert main(["run", "--methods", "patchknn,winclip", "--categories", "capsule", "--shots", "0,1",
                 "--seeds", "0", "--out", str(out)]) == 0  # fmt: skip
    rows = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    status = rows.groupby(["method", "shot"])["status"].agg(set).to_dict()
    assert status == {("patchknn", "0"): {"skipped"}, ("patchknn", "1"): {"ok"},
                      ("winclip", "0"): {"ok"}, ("winclip", "1"): {"ok"}}  # fmt: skip
    skipped = rows[rows["status"] == "skipped"]
    assert set(skipped["reason"]) == {"patchknn does not support zero-shot (k=0); cell skipped"}
    text = (out / "leaderboard.md").read_text()
    assert "| winclip (0-shot) |" in text and "| patchknn (0-shot) |" not in text
    assert "Cells not run: patchknn k=0: patchknn does not support zero-shot" in text


@pytest.mark.slow
def test_fixed_shot_lists_replace_seeded_draws(tmp_path, embedded_run):
    from fsas_bench.data.registry import load_dataset

    index = load_dataset("synthetic", None)
    seeds_dir = tmp_path / "seeds"
    for category in index.categories:
        (seeds_dir / category).mkdir(parents=True)
        (seeds_dir / category / "selected_samples_per_run.txt").write_text("#1: 3\n#2: 3 7\n")
    dictas = tmp_path / "fix_1-shot.txt"
    dictas.write_text("".join(f"synthetic/{c}/train/good/syn_005_{i:06d}.bmp\n" for i, c in enumerate(index.categories)))
    base = ["run", "--methods", "patchknn", "--datasets", "synthetic", "--categories", "tile"]
    out = tmp_path / "promptad"
    assert main([*base, "--shots", "1,2", "--shot-list", str(seeds_dir), "--out", str(out)]) == 0
    rows = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    assert set(rows["seed"]) == {"official"} and set(rows["shot_manifest"]) == {"promptad_seedfile@v1"}
    manifest = (out / "manifests" / "synthetic" / "k2_seedofficial.txt").read_text()
    assert "tile\ttile/train/good/003.png\ntile\ttile/train/good/007.png" in manifest
    out = tmp_path / "dictas"
    assert main([*base, "--shots", "1", "--shot-list", str(dictas), "--out", str(out)]) == 0
    assert "tile\ttile/train/good/005.png" in (out / "manifests" / "synthetic" / "k1_seedofficial.txt").read_text()
    reused = embedded_run / "manifests" / "synthetic" / "k1_seed2.txt"
    out = tmp_path / "reused"
    assert main([*base, "--shots", "1", "--shot-list", str(reused), "--out", str(out)]) == 0
    seeded = pd.read_csv(embedded_run / "results.csv", dtype=str)
    again = pd.read_csv(out / "results.csv", dtype=str)
    key = ["category", "metric", "value"]
    expected = seeded[(seeded["shot"] == "1") & (seeded["seed"] == "2") & (seeded["category"] == "tile")][key]
    assert again[key].reset_index(drop=True).equals(expected.reset_index(drop=True))
    assert main([*base, "--shots", "1,4", "--shot-list", str(dictas), "--out", str(tmp_path / "x")]) == 2
    assert main([*base, "--seeds", "0", "--shot-list", str(dictas), "--out", str(tmp_path / "y")]) == 2


def test_method_settings_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["run", "--methods", "patchknn", "--categories", "tile", "--shots", "1", "--seeds", "0",
                 "--set", "patchknn.sigma=0", "--set", "patchknn.blocks=0,2", "--out", str(out)]) == 0  # fmt: skip
    rows = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    assert set(rows["flags"]) == {"blocks=(0, 2);sigma=0.0"}
    for bad, needle in ((["--set", "patchknn.sigma"], "is malformed"), (["--set", "patchknn.nope=1"], "is not a setting"),
                        (["--set", "patchknn.sigma=big"], "cannot read 'big' as float"),
                        (["--set", "nope.x=1"], "unknown method 'nope'"),
                        (["--set", "patchknn.mode=faithful"], "choose the preset with --mode")):  # fmt: skip
        assert main(["run", "--methods", "patchknn", *bad, "--out", str(tmp_path / "bad")]) == 2
        assert needle in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_builtin_method_names_match_what_their_modules_register():
    """The lazy registry's name → module table agrees with the classes the modules register."""
    import importlib

    from fsas_bench.methods import registry

    for module in set(registry.BUILTIN_METHODS.values()):
        importlib.import_module(module)
    registered = {name: cls.__module__ for name, cls in registry._REGISTRY.items()}
    assert set(registered) == set(registry.BUILTIN_METHODS)
    for name, module in registry.BUILTIN_METHODS.items():
        assert registered[name] == module, name  # the class lives in the module the registry imports


def _interrupt_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    return stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_ctrl_c_exits_130_in_one_line_and_keeps_finished_cells(tmp_path):
    """A real SIGINT while cells run: exit 130, one line saying how far it got, finished cells kept."""
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(_cli("run", "--methods", "patchknn", *SUBSET, "--out", str(out)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while len([p for p in (out / "cells").glob("*.csv") if ".timing" not in p.name]) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    line = _interrupt_line(stderr)
    done = int(line.split("after ")[1].split(" of")[0])
    assert line == f"fsas-bench: interrupted after {done} of 8 cells; rerun the same command to resume"
    kept = [p for p in (out / "cells").glob("*.csv") if ".timing" not in p.name]
    assert 3 <= done <= len(kept) < 8


@pytest.mark.slow
@pytest.mark.parametrize(("method", "hook"), [("patchknn", "predict_step"), ("inctrl", "training_step")])
def test_ctrl_c_inside_lightning_is_not_exit_1(tmp_path, capsys, monkeypatch, method, hook):
    """Lightning catches KeyboardInterrupt in predict/fit and calls sys.exit(1): the CLI still says what happened
    and exits 130 (here the interrupt is raised from inside the Lightning loop, on the second cell for predict)."""
    from fsas_bench.methods import get_method

    cls = get_method(method)
    original, starts = getattr(cls, hook), []

    def interrupted(self, batch, batch_idx):
        starts.extend([batch_idx] if batch_idx == 0 else [])
        if hook == "training_step" or len(starts) == 2:  # training: at once; predict: first batch of cell 2
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(cls, hook, interrupted)
    out = tmp_path / "out"
    status = main(["run", "--methods", method, "--categories", "tile", "--shots", "1", "--seeds", "0,1",
                   "--out", str(out)])  # fmt: skip
    assert status == 130
    line = _interrupt_line(capsys.readouterr().err)
    done = 1 if hook == "predict_step" else 0
    assert line == f"fsas-bench: interrupted after {done} of 2 cells; rerun the same command to resume"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
