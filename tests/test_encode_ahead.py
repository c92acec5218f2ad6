"""Encode ahead (decode workers, fixed-size encode batches), precision, and the memory-bounded feature cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from fsas_bench.backbones import DEFAULT_PREPROCESS, FeatureCache, Preprocess, load_backbone
from fsas_bench.backbones.pipeline import EncodeSettings, pad_batch
from fsas_bench.cli import main
from fsas_bench.data.datamodule import image_sha
from fsas_bench.data.manifests import support_samples
from fsas_bench.data.registry import load_dataset
from fsas_bench.data.formats import read_image_rgb
from fsas_bench.errors import UserError
from fsas_bench.methods import get_method
from fsas_bench.methods.inctrl.config import InCTRLConfig
from fsas_bench.runner import tasks
from fsas_bench.runner.tasks import encode_unit_ahead
from fsas_bench.runner.results import LEGACY_RESULT_COLUMNS, RESULT_COLUMNS, ResultStore
from fsas_bench.runner.sweep import Sweep, SweepSpec

EVERY_KIND = ["block1", "block4", "released_tap2", "embedding", "final_tokens", "vv_tokens", "window2"]
"""One feature name of every kind the backbone computes."""


def test_pad_batch_repeats_the_last_image():
    images = torch.arange(2 * 3).float().view(2, 3)
    padded = pad_batch(images, 4)
    assert padded.shape == (4, 3)
    assert torch.equal(padded[:2], images) and torch.equal(padded[2], images[1]) and torch.equal(padded[3], images[1])
    assert pad_batch(images, 2) is images


@pytest.mark.parametrize("settings", [EncodeSettings(16, 2), EncodeSettings(3, 0)])
def test_encoded_ahead_features_are_bitwise_those_of_each_image_alone(tiny_backbone, image_files, settings):
    batch = image_files(20)
    paths = [Path(p) for p in batch["path"]]
    ahead = FeatureCache(tiny_backbone, settings=settings)
    ahead.prefetch.update(EVERY_KIND)
    assert ahead.encode_ahead(batch["sha"], paths, read_image_rgb) == 20
    assert ahead.stats.forwards == 20
    assert ahead.encode_ahead(batch["sha"], paths, read_image_rgb) == 0  # all cached now
    cached = ahead.features(batch["sha"], EVERY_KIND, lambda i: pytest.fail("a cached image was decoded"))
    assert ahead.stats.forwards == 20 and ahead.stats.hits == 20
    for i, path in enumerate(paths):  # the reference: each image encoded alone, straight through the backbone
        alone = tiny_backbone.encode(tiny_backbone.preprocess(read_image_rgb(path)).unsqueeze(0), EVERY_KIND)
        for name in EVERY_KIND:
            assert torch.equal(cached[i][name], alone[name][0]), (i, name)


def test_encode_settings_are_checked():
    with pytest.raises(UserError, match="--encode-batch 0 is invalid"):
        EncodeSettings(0, 0)
    with pytest.raises(UserError, match="--workers -1 is invalid"):
        EncodeSettings(1, -1)


def test_memory_budget_keeps_the_most_recent_entries_and_reads_the_rest_back(tiny_backbone, image_files, tmp_path):
    batch = image_files(6)
    load = lambda i: tiny_backbone.preprocess(read_image_rgb(Path(batch["path"][i])))  # noqa: E731
    unbounded = FeatureCache(tiny_backbone).features(batch["sha"], ["block2", "embedding"], load)
    entry_bytes = sum(t.numel() * t.element_size() for t in unbounded[0].values())
    cache = FeatureCache(tiny_backbone, memory_budget=2 * entry_bytes, spill_root=tmp_path / "spill")
    cache.features(batch["sha"][:2], ["block2", "embedding"], load)
    assert not (tmp_path / "spill").exists()  # within the budget nothing is written anywhere
    first = cache.features(batch["sha"], ["block2", "embedding"], load)
    assert cache.stats.evictions == 4 and cache.stats.peak_memory_bytes == 2 * entry_bytes
    (spill,) = (tmp_path / "spill").iterdir()  # the cache's own folder under the root
    assert len(list(spill.glob("*.safetensors"))) == 4  # exactly the evicted entries, written once
    again = cache.features(batch["sha"], ["block2", "embedding"], lambda i: pytest.fail("spilled entry re-encoded"))
    assert cache.stats.forwards == 6 and cache.stats.peak_memory_bytes == 2 * entry_bytes
    for a, b, c in zip(unbounded, first, again, strict=True):
        assert all(torch.equal(a[n], b[n]) and torch.equal(a[n], c[n]) for n in a)
    cache.clear_memory()
    assert not list(spill.iterdir())  # spilled entries go with the memory they stand in for
    cache.features(batch["sha"], ["block2", "embedding"], load)  # encoded again, spilled again, same folder
    assert cache.stats.forwards == 12 and len(list(spill.glob("*"))) == 4
    other = FeatureCache(tiny_backbone, memory_budget=2 * entry_bytes, spill_root=tmp_path / "spill")
    other.features(batch["sha"], ["block2"], load)
    assert len(list((tmp_path / "spill").iterdir())) == 2  # each cache spills into a folder of its own
    del cache
    assert not spill.exists()  # the spill folder goes with its cache


def test_an_entry_completed_after_it_was_spilled_is_spilled_again_whole(tiny_backbone, image_files):
    batch = image_files(3)
    load = lambda i: tiny_backbone.preprocess(read_image_rgb(Path(batch["path"][i])))  # noqa: E731
    cache = FeatureCache(tiny_backbone, memory_budget=1)  # one entry in memory at a time
    cache.features(batch["sha"], ["block2"], load)  # a and b spilled with block2 only
    cache.features(batch["sha"][:1], ["block2", "embedding"], load)  # a read back, completed: c spilled
    cache.features(batch["sha"][1:2], ["block2"], load)  # b read back: the completed a is spilled again, whole
    forwards = cache.stats.forwards
    cache.features(batch["sha"][:1], ["block2", "embedding"], lambda i: pytest.fail("completed entry re-encoded"))
    assert cache.stats.forwards == forwards == 4


def test_auxiliary_training_under_a_small_memory_budget_gives_identical_results(tmp_path, monkeypatch):
    """InCTRL trains on synthetic-aux with at most ~3 images' features in memory: same checkpoint, same CSV."""
    monkeypatch.setattr(InCTRLConfig, "for_dataset", classmethod(lambda cls, dataset: cls(epochs=1, steps_per_epoch=3)))
    common = dict(methods=("inctrl",), categories=("tile",), shots=(1,), seeds=(0,), workers=0)
    tasks._WORKER = None  # a fresh cache (and counters) for each run
    Sweep(SweepSpec(out=tmp_path / "unbounded", **common)).run()
    full = tasks._WORKER.cache.stats
    budget = 1_500_000
    Sweep(SweepSpec(out=tmp_path / "bounded", cache_memory=budget, **common)).run()
    bounded = tasks._WORKER.cache.stats
    assert tasks._WORKER.cache.memory_budget == budget
    spilled = list((tmp_path / "bounded" / ".spill").rglob("*"))  # spilled under --out, emptied after the task
    assert tasks._WORKER.cache.spill_root == tmp_path / "bounded" / ".spill"
    assert spilled and all(p.is_dir() for p in spilled)
    assert full.peak_memory_bytes > 10 * budget  # without a budget every auxiliary image stays in memory
    assert bounded.evictions > 0 and bounded.peak_memory_bytes <= budget
    assert bounded.forwards == full.forwards  # spilled entries are read back from disk, never re-encoded
    results = [(tmp_path / name / "results.csv").read_text() for name in ("unbounded", "bounded")]
    assert results[0] == results[1]


def test_the_first_cell_of_a_unit_reports_the_encoding_ahead(tmp_path):
    cells = ["--methods", "patchknn", "--categories", "hex_nut", "--shots", "1,2", "--seeds", "0,1"]
    assert main(["run", *cells, "--save-examples", "0", "--out", str(tmp_path)]) == 0
    timings = pd.read_csv(tmp_path / "timings.csv")
    references = {line.split("\t")[1] for manifest in (tmp_path / "manifests").rglob("k*_seed*.txt")
                  for line in manifest.read_text().splitlines() if line.startswith("hex_nut\t")}  # fmt: skip
    images = len(load_dataset("synthetic", None).split("hex_nut", "test")) + len(references)
    encoding = timings[timings["backbone_forwards"] > 0]
    assert len(encoding) == 1 and len(timings) == 4  # the first cell, in the name of the whole unit
    assert encoding.iloc[0]["backbone_forwards"] == encoding.iloc[0]["cache_misses"] == images
    assert encoding.iloc[0]["time_encode_s"] > 0 and timings["cache_misses"].sum() == images
    (marker,) = (tmp_path / "runs").glob("*.json")  # how the features were computed is on record
    record = json.loads(marker.read_text())
    assert {k: record[k] for k in ("device", "precision", "encode_batch")} == {"device": "cpu", "precision": "fp32",
                                                                             "encode_batch": 1}  # fmt: skip
    assert record["workers"] is None  # not given: each machine resolves its own default


def test_each_preprocessing_variant_is_encoded_ahead_for_the_images_that_read_it(tmp_path, tiny_backbone):
    """Faithful InCTRL reads centre-cropped features of queries and prompts, faithful FineGrainedAD reads
    channel-swapped queries and plain pre-resized references: each is encoded ahead for exactly those images, and
    nothing any method does not read (no default-variant pass for them)."""
    spec = SweepSpec(out=tmp_path, methods=("patchknn", "inctrl", "finegrainedad"), categories=("tile",), shots=(1,),
                     seeds=(0,), mode="faithful")  # fmt: skip
    plan = Sweep(spec).plan
    (unit,) = plan.units
    by_variant = {a.variant: a for a in plan.ahead}
    fgad = plan.configs[("finegrainedad", "synthetic")]
    crop, swapped, pre = (Preprocess(resize="resize_centercrop"), Preprocess(pre_resize=fgad.pre_resize, bgr=True),
                          Preprocess(pre_resize=fgad.pre_resize))  # fmt: skip
    assert set(by_variant) == {DEFAULT_PREPROCESS, crop, swapped, pre}
    assert {v: set(a.roles) for v, a in by_variant.items()} == {
        DEFAULT_PREPROCESS: {"query", "support"}, crop: {"query", "support"}, swapped: {"query"}, pre: {"support"}}
    names = {m: set(get_method(m).feature_names(plan.configs[(m, "synthetic")], tiny_backbone.depth))
             for m in ("patchknn", "inctrl", "finegrainedad")}  # fmt: skip
    assert by_variant[DEFAULT_PREPROCESS].names == names["patchknn"] and by_variant[crop].names == names["inctrl"]
    assert by_variant[swapped].names == by_variant[pre].names == names["finegrainedad"]
    cache = FeatureCache(tiny_backbone)
    encode_unit_ahead(plan, unit, cache)
    index = plan.indexes["synthetic"]
    queries = index.split("tile", "test")
    references = support_samples(plan.manifests[("synthetic", 1, 0)], index, "tile")
    encoded = cache.stats.forwards
    assert encoded == 2 * len(queries + references) + len(queries) + len(references)
    for name in ("inctrl", "finegrainedad"):  # every read of their cells hits: nothing is encoded again
        method = get_method(name)(plan.configs[(name, "synthetic")], cache)
        variants = method.input_variants(method.config)
        for role, samples in (("query", queries), ("support", references)):
            batch = {"path": [str(x.image_path) for x in samples], "sha": [image_sha(x.image_path) for x in samples]}
            method.features(batch, method.names, variant=variants[role])
    assert cache.stats.forwards == cache.stats.misses == encoded and cache.stats.hits == 2 * len(queries + references)


@pytest.mark.parametrize(("activation", "ahead"), [("native", True), ("gelu", True), ("quickgelu", False)])
def test_dictas_on_a_swapped_backbone_copy_is_not_encoded_ahead_on_the_shared_one(tmp_path, activation, ahead):
    spec = SweepSpec(out=tmp_path, methods=("dictas",), categories=("tile",), shots=(1,), seeds=(0,),
                     overrides={"dictas": {"activation": activation}})  # fmt: skip
    plan = Sweep(spec).plan  # fsas-tiny computes GELU: only QuickGELU needs the swapped copy
    assert bool(plan.ahead) == ahead and plan.prefetch == (plan.ahead[0].names if ahead else frozenset())


def test_encode_batch_and_workers_never_change_results(tmp_path):
    cells = ["--methods", "patchknn", "--categories", "hex_nut", "--shots", "1,2", "--seeds", "0"]
    outs = []
    for name, batch, workers in (("one", "1", "0"), ("sixteen", "16", "2")):
        out = tmp_path / name
        assert main(["run", *cells, "--encode-batch", batch, "--workers", workers, "--out", str(out)]) == 0
        outs.append((out / "results.csv").read_bytes())
    assert outs[0] == outs[1]


def test_precision_is_in_rows_and_in_the_backbone_identity(tmp_path):
    fp32 = load_backbone("fsas-tiny", None)
    bf16 = load_backbone("fsas-tiny", None, precision="bf16")
    assert fp32.identity != bf16.identity and "precision=bf16" in bf16.identity
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    low, high = bf16.encode(x, ["block3", "embedding"]), fp32.encode(x, ["block3", "embedding"])
    for name in ("block3", "embedding"):
        assert low[name].dtype == torch.float32 and not torch.equal(low[name], high[name])
        torch.testing.assert_close(low[name], high[name], rtol=0.1, atol=0.1)
    cell = ["--methods", "patchknn", "--categories", "tile", "--shots", "1", "--seeds", "0", "--save-examples", "0"]
    assert main(["run", *cell, "--precision", "bf16", "--out", str(tmp_path / "bf16")]) == 0
    rows = pd.read_csv(tmp_path / "bf16" / "results.csv", dtype=str, keep_default_na=False)
    assert set(rows["precision"]) == {"bf16"} and set(rows["status"]) == {"ok"}
    with pytest.raises(UserError, match="--precision 'fp8' is unknown"):
        load_backbone("fsas-tiny", None, precision="fp8")


def test_cells_written_before_the_precision_column_read_as_fp32(tmp_path):
    store = ResultStore(tmp_path)
    row = dict.fromkeys(RESULT_COLUMNS, "x") | {"job_id": "j1", "status": "ok", "value": "0.5", "metric": "I-AUROC"}
    legacy = ",".join(LEGACY_RESULT_COLUMNS) + "\n" + ",".join(row[c] for c in LEGACY_RESULT_COLUMNS) + "\n"
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "j1.csv").write_text(legacy)
    assert store.read_cell("j1") == [row | {"precision": "fp32"}]
    assert store.merge() == 1
    merged = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert list(merged.columns) == list(RESULT_COLUMNS) and list(merged["precision"]) == ["fp32"]
    shutil.rmtree(tmp_path / "cells")


@pytest.mark.parametrize(("text", "expected"), [("1024", 1024), ("2K", 2048), ("512M", 512 * 2**20), ("2g", 2 * 2**30)])
def test_cache_memory_sizes(text, expected):
    from fsas_bench.options import parse_bytes

    assert parse_bytes(text, "--cache-memory") == expected


@pytest.mark.parametrize("text", ["0", "-5", "2X", "M", "1.5G", ""])
def test_bad_cache_memory_is_one_line(text, capsys):
    assert main(["run", "--cache-memory", text, "--out", "/tmp/never-written-fsas"]) == 2
    err = capsys.readouterr().err
    assert "--cache-memory" in err and "invalid" in err and err.count("\n") == 1
